"""`coach eval compare RUN_A RUN_B`: per-rule differences between two eval runs, with a gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from coach.errors import InputError
from coach.evals.compare import MIN_CASES, MIN_DISCORDANT, Comparison, compare_runs

__all__ = ["EXIT_GATE", "EXIT_HARNESS", "compare"]

EXIT_HARNESS = 1
EXIT_GATE = 3


class HarnessError(click.ClickException):
    """A run cannot be read or the report cannot be written: exit 1."""

    exit_code = EXIT_HARNESS


def _print_table(console: Console, comparison: Comparison) -> None:
    table = Table(
        title=f"A: {comparison.run_a.path}  vs  B: {comparison.run_b.path} "
        f"({comparison.paired} paired cases)",
        box=box.SIMPLE_HEAD,
    )
    for name in ("rule", "n", "F1 A", "F1 B", "ΔF1 [95% CI]", "b:c", "p", "p Holm", ""):
        table.add_column(name, justify="left" if name in ("rule", "") else "right", no_wrap=True)
    for r in comparison.rules:
        boot = r.bootstrap
        mark = ("[red]✗ margin[/red] " if r.below_margin else "") + ("?" if r.warning else "")
        table.add_row(
            r.rule_id,
            str(r.n),
            f"{boot.f1_a:.3f}",
            f"{boot.f1_b:.3f}",
            f"{boot.delta:+.3f} [{boot.low:+.3f}, {boot.high:+.3f}]",
            f"{r.b}:{r.c}",
            f"{r.p:.3g}",
            f"{r.p_holm:.3g}",
            mark,
        )
    console.print(table)
    few = [r.rule_id for r in comparison.rules if r.warning]
    if few:
        console.print(
            f"? too few to tell (n < {MIN_CASES} or b+c < {MIN_DISCORDANT}): {', '.join(few)}",
            markup=False,
        )
    for warning in comparison.warnings:
        console.print(f"warning: {warning}", markup=False)
    for r in comparison.rules:
        if r.regressions:
            ids = ", ".join(f.case_id for f in r.regressions[:10])
            more = f" … and {len(r.regressions) - 10} more" if len(r.regressions) > 10 else ""
            console.print(f"{r.rule_id}: regressed on {ids}{more}", markup=False)
    if comparison.margin is None:
        console.print("gate: none (no --margin)")
    elif comparison.passed:
        console.print(f"gate: pass (margin {comparison.margin:g})")
    else:
        console.print(
            f"gate: FAIL (margin {comparison.margin:g}): {', '.join(comparison.gate_failures)}",
            markup=False,
        )


@click.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option(
    "--margin",
    type=click.FloatRange(min=0),
    help="Non-inferiority margin on ΔF1 (e.g. 0.02): fail when any rule's 95% lower bound "
    "is below −margin. Without it no gate is applied.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Directory to write compare.json, compare.md and compare.html (offline) into.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--resamples", type=click.IntRange(min=1), default=2000, show_default=True, hidden=True
)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def compare(
    run_a: str,
    run_b: str,
    margin: float | None,
    out: str | None,
    fmt: str,
    resamples: int,
    seed: int,
) -> None:
    """Compare eval run RUN_B against the baseline RUN_A, rule by rule.

    Cases are paired by id. Per rule: F1 of the `fail` class in each run, ΔF1 = B − A with a
    paired bootstrap 95% interval (cases resampled, repeats kept together), the exact McNemar
    p-value on majority verdicts with Holm's correction across rules, and the cases that
    flipped, regressions first.

    \b
    Exit codes:
      0  compared; the margin gate passed (or no --margin was given)
      1  harness error: a run directory cannot be read, or --out cannot be written
      3  the gate failed: some rule's ΔF1 lower bound is below −margin
    """
    try:
        comparison = compare_runs(run_a, run_b, margin=margin, resamples=resamples, seed=seed)
    except InputError as exc:
        raise HarnessError(str(exc)) from None
    if out:
        directory = Path(out)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "compare.json").write_text(
                json.dumps(comparison.as_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8"
            )
            (directory / "compare.md").write_text(comparison.to_markdown(), "utf-8")
            (directory / "compare.html").write_text(comparison.to_html(), "utf-8")
        except OSError as exc:
            raise HarnessError(f"{out}: cannot write the report ({exc.strerror})") from None
    if fmt == "json":
        click.echo(json.dumps(comparison.as_dict(), indent=2, ensure_ascii=False))
    elif fmt == "markdown":
        click.echo(comparison.to_markdown(), nl=False)
    else:
        console = Console(highlight=False)
        console.width = max(console.width, 100)
        _print_table(console, comparison)
    if not comparison.passed:
        click.echo(
            f"coach: gate failed: ΔF1 lower bound below −{margin:g} for "
            f"{', '.join(comparison.gate_failures)}",
            err=True,
        )
        sys.exit(EXIT_GATE)  # click.exceptions.Exit is swallowed when not standalone
