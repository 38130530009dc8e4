"""Readable eval reports: a terminal table and Markdown."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from coach.evals.metrics import MAIN_RULES, Confusion
from coach.evals.runner import EvalResult

__all__ = ["markdown", "print_table", "write_markdown"]

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
    return "\n".join(lines) + "\n"


def write_markdown(result: EvalResult, path: Path) -> None:
    path.write_text(markdown(result), "utf-8")
