"""Readable eval reports: a terminal table and Markdown."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from coach.evals.metrics import MAIN_RULES, Confusion
from coach.evals.runner import EvalResult

__all__ = ["markdown", "print_table", "progress", "write_markdown"]

_COLUMNS = ("rule", "n", "tp", "fp", "fn", "tn", "precision", "recall", "F1", "accuracy")


def _row(rule: str, c: Confusion) -> list[str]:
    return [
        rule,
        str(c.n),
        str(c.tp),
        str(c.fp),
        str(c.fn),
        str(c.tn),
        f"{c.precision:.3f}",
        f"{c.recall:.3f}",
        f"{c.f1:.3f}",
        f"{c.accuracy:.3f}",
    ]


def print_table(console: Console, result: EvalResult) -> None:
    table = Table(
        title=f"{result.engine} engine, {len(result.rows)} cases, "
        f"rulebook {result.rulebook_version}"
    )
    for name in _COLUMNS:
        table.add_column(name, justify="left" if name == "rule" else "right")
    for rule, confusion in result.table.items():
        table.add_row(*_row(rule, confusion))
    console.print(table)
    head = result.headline
    console.print(
        f"four main rules: macro-F1 {head['f1']:.3f}, mean accuracy {head['accuracy']:.3f} "
        f"({result.seconds * 1000 / max(1, len(result.rows)):.2f} ms per case)"
    )
    for line in _run_lines(result.as_dict()):
        console.print(line)


def _run_lines(report: dict[str, Any]) -> list[str]:
    errors, latency = report["errors"], report["latency_ms"]
    lines = [
        f"rows {report['rows']}, errors {errors['count']}"
        + (
            f" ({', '.join(f'{k}: {v}' for k, v in errors['by_code'].items())})"
            if errors["count"]
            else ""
        )
        + f", latency p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms",
    ]
    tokens = report["tokens"]
    if tokens["in"] or tokens["out"]:
        cost = report["cost_usd"]
        lines.append(
            f"tokens in {tokens['in']} (cached {tokens['cached']}), out {tokens['out']}, "
            f"cost {'unknown' if cost is None else f'${cost:.4f}'}, "
            f"cache hits {report['cache_hits']}"
        )
    if repeats := report["repeats"]:
        lines.append(
            f"repeats k={repeats['k']}: mean per-case flip rate {repeats['mean_flip_rate']:.3f}, "
            f"rules stable across all repeats {repeats['stable_share']:.3f}"
        )
    return lines


def markdown(result: EvalResult) -> str:
    lines = [
        f"# Eval: {result.engine} engine on {', '.join(result.datasets)}",
        "",
        f"{len(result.rows)} cases, rulebook {result.rulebook_version}. Positive class: `fail`.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(_row(rule, c)) + " |" for rule, c in result.table.items()]
    head = result.headline
    lines += [
        "",
        f"Four main rules ({', '.join(MAIN_RULES)}): macro-F1 **{head['f1']:.3f}**, "
        f"mean accuracy **{head['accuracy']:.3f}**.",
        "",
        "## Slices (F1 / accuracy)",
        "",
    ]
    rules = list(result.table)
    lines += ["| slice | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for name, table in sorted(result.slices.items()):
        cells = [
            f"{table[r].f1:.2f} / {table[r].accuracy:.2f}" if r in table else "–" for r in rules
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    report = result.as_dict()
    lines += ["", "## Intervals (Wilson 95%)", "", "| rule | precision | recall | accuracy |"]
    lines.append("|---|---|---|---|")
    for rule, data in report["rules"].items():
        w = data["wilson95"]
        cells = [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in (w["precision"], w["recall"], w["accuracy"])]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += _evidence_lines(report["evidence"]) + _rewrite_lines(report["rewrites"])
    lines += _judge_lines(report["judge"])
    lines += ["", "## Run", "", *(f"- {line}" for line in _run_lines(report))]
    return "\n".join(lines) + "\n"


def _share(entry: dict[str, Any]) -> str:
    if not entry["n" if "n" in entry else "correct_fails"]:
        return "–"
    lo, hi = entry["wilson95"]
    count = entry.get("passed", entry.get("overlapping"))
    total = entry.get("n", entry.get("correct_fails"))
    return f"{entry['share']:.3f} ({count}/{total}; [{lo:.2f}, {hi:.2f}])"


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Evidence",
        "",
        "Correct fails of cases that give `evidence` whose finding overlaps an evidence quote.",
        "",
        "| rule | overlap share (n; Wilson 95%) |",
        "|---|---|",
    ]
    lines += [f"| {rule} | {_share(e)} |" for rule, e in evidence["rules"].items()]
    lines.append(f"| **overall** | {_share(evidence['overall'])} |")
    return lines


def _rewrite_lines(rewrites: dict[str, Any] | None) -> list[str]:
    if not rewrites:
        return []
    ratio = rewrites["length_ratio"]
    lines = [
        "",
        "## Rewrites",
        "",
        f"{rewrites['rows']} rows with a rewrite.",
        "",
        "| check | share (n; Wilson 95%) |",
        "|---|---|",
    ]
    for key, label in (
        ("merge_fields_kept", "merge fields kept"),
        ("must_keep_kept", "`must_keep` kept"),
        ("must_not_contain_absent", "`must_not_contain` absent"),
        ("rulebook_pass", "passes the rulebook"),
    ):
        lines.append(f"| {label} | {_share(rewrites[key])} |")
    if ratio["median"] is not None:
        lines.append(
            f"| length ratio (rewrite/draft) | median {ratio['median']:.2f} "
            f"(p5 {ratio['p05']:.2f}, p95 {ratio['p95']:.2f}) |"
        )
    failed = rewrites["rulebook_failed_by_rule"]
    if failed:
        lines += [
            "",
            "Rules the rewrites still fail: " + ", ".join(f"{k} ({v})" for k, v in failed.items()),
        ]
    return lines


def _kappa(entry: dict[str, Any]) -> str:
    return "–" if entry["kappa"] is None else f"{entry['kappa']:.3f} (n {entry['n']})"


def _judge_lines(judge: dict[str, Any] | None) -> list[str]:
    if not judge:
        return []
    agreement = judge["agreement"]
    trust = "trusted" if judge["trusted"] else "**untrusted**"
    lines = [
        "",
        "## LLM judge",
        "",
        f"Prompt judge/{judge['prompt']['version']}, model `{judge['model']}`. Agreement with "
        f"the labels on {agreement['cases']} original drafts (Cohen's kappa, `fail` against "
        f"not `fail`): overall {_kappa(agreement)} — {trust} "
        f"(threshold {judge['trust_kappa']}).",
        "",
        "| rule | kappa (n) |",
        "|---|---|",
    ]
    lines += [f"| {rule} | {_kappa(e)} |" for rule, e in agreement["rules"].items()]
    if agreement["errors"]:
        lines += [
            "",
            "Judge errors: " + ", ".join(f"{k} ({v})" for k, v in agreement["errors"].items()),
        ]
    rewrites = judge["rewrites"]
    if rewrites:
        flag = (
            " **Untrusted: the judge's agreement is below the threshold.**"
            if rewrites["untrusted"]
            else ""
        )
        lines += [
            "",
            f"Rewrites judged: {rewrites['n']}.{flag}",
            "",
            "| rule | passing share (n; Wilson 95%) |",
            "|---|---|",
        ]
        lines += [f"| {rule} | {_share(e)} |" for rule, e in rewrites["rules"].items()]
        lines.append(f"| **every rule** | {_share(rewrites['all_pass'])} |")
        if rewrites["errors"]:
            lines += [
                "",
                "Judge errors on rewrites: "
                + ", ".join(f"{k} ({v})" for k, v in rewrites["errors"].items()),
            ]
    return lines


def write_markdown(result: EvalResult, path: Path) -> None:
    path.write_text(markdown(result), "utf-8")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} rows/s" if speed else "– rows/s")


@contextmanager
def progress(total: int, label: str) -> Iterator[Progress]:
    """A progress bar with rate and ETA on stderr; silent when stderr is not a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with bar:
        bar.add_task(label, total=total)
        yield bar
