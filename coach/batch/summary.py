"""The end-of-run summary of a batch: counts, per-rule tallies, the worst items, failures.

`SummaryBuilder.add` keeps counters and two bounded collections (a heap of the worst items and
the first failures), so memory does not grow with the number of rows. Nothing here holds or
shows draft text: items are named by their keys, failures by their one-line errors.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from coach.models import Review, Severity, Verdict

if TYPE_CHECKING:
    from coach.batch.outputs import OutputRow

__all__ = [
    "RuleCount",
    "Summary",
    "SummaryBuilder",
    "WorstItem",
    "escape_markdown",
    "render_summary",
    "summary_markdown",
    "worst_severity",
]


@dataclass(frozen=True)
class RuleCount:
    rule_id: str
    failed: int = 0
    passed: int = 0
    not_applicable: int = 0


@dataclass(frozen=True)
class WorstItem:
    key: str
    score: int
    failed_rules: list[str]
    worst_severity: str | None
    engine: str


@dataclass
class Summary:
    total: int
    done: int
    failed: int
    reused: int
    rules: list[RuleCount]
    worst: list[WorstItem]
    failures: list[tuple[str, str]]
    degraded: int = 0
    mean_score: float | None = None


def worst_severity(review: Review) -> Severity | None:
    """The most severe severity among the rules the review failed."""
    failed = [r.severity for r in review.rules if r.verdict is Verdict.failed]
    return max(failed, key=lambda s: s.rank) if failed else None


class _Ranked:
    """A worst-list candidate in a heap whose top is the *least* bad kept item, so a worse
    newcomer can evict it in O(log n)."""

    __slots__ = ("item", "order")

    def __init__(self, order: tuple[int, int, str], item: WorstItem) -> None:
        self.order = order
        self.item = item

    def __lt__(self, other: _Ranked) -> bool:
        return self.order > other.order


class SummaryBuilder:
    def __init__(self, worst: int = 10, *, failures: int | None = None) -> None:
        self._worst_size = worst
        self._failure_size = worst if failures is None else failures
        self._total = self._done = self._failed = self._reused = self._degraded = 0
        self._score_sum = 0
        self._rules: dict[str, list[int]] = {}
        self._heap: list[_Ranked] = []
        self._failures: list[tuple[str, str]] = []

    def add(self, row: OutputRow) -> None:
        self._total += 1
        if row.status == "failed" or row.review is None:
            self._failed += 1
            if len(self._failures) < self._failure_size:
                self._failures.append((row.key, row.error or "failed"))
            return
        review = row.review
        self._done += 1
        self._score_sum += review.score
        if row.duplicate_of is not None:
            self._reused += 1
        if review.degraded:
            self._degraded += 1
        errors = 0
        failed_rules = []
        for result in review.rules:
            counts = self._rules.setdefault(result.rule_id, [0, 0, 0])
            if result.verdict is Verdict.failed:
                counts[0] += 1
                failed_rules.append(result.rule_id)
                errors += result.severity is Severity.error
            elif result.verdict is Verdict.passed:
                counts[1] += 1
            else:
                counts[2] += 1
        if self._worst_size <= 0:
            return
        # Lowest score first; on a tie the item failing more error-level rules, then by key.
        order = (review.score, -errors, row.key)
        if len(self._heap) >= self._worst_size and not order < self._heap[0].order:
            return
        severity = worst_severity(review)
        item = WorstItem(
            row.key, review.score, failed_rules, severity.value if severity else None, review.engine
        )
        if len(self._heap) < self._worst_size:
            heapq.heappush(self._heap, _Ranked(order, item))
        else:
            heapq.heapreplace(self._heap, _Ranked(order, item))

    def build(self) -> Summary:
        rules = [
            RuleCount(rule_id, *counts)
            for rule_id, counts in sorted(self._rules.items(), key=lambda kv: (-kv[1][0], kv[0]))
        ]
        worst = [ranked.item for ranked in sorted(self._heap, key=lambda r: r.order)]
        return Summary(
            total=self._total,
            done=self._done,
            failed=self._failed,
            reused=self._reused,
            rules=rules,
            worst=worst,
            failures=list(self._failures),
            degraded=self._degraded,
            mean_score=round(self._score_sum / self._done, 1) if self._done else None,
        )


def render_summary(summary: Summary, console: Console) -> None:
    counts = Table(title="Batch summary", show_header=False)
    counts.add_column("what")
    counts.add_column("count", justify="right")
    for label, value in _count_lines(summary):
        counts.add_row(label, value)
    console.print(counts)
    if summary.rules:
        rules = Table(title="Rules")
        rules.add_column("rule")
        for name in ("failed", "passed", "n/a"):
            rules.add_column(name, justify="right")
        for rule in summary.rules:
            rules.add_row(
                rule.rule_id, str(rule.failed), str(rule.passed), str(rule.not_applicable)
            )
        console.print(rules)
    if summary.worst:
        worst = Table(title=f"Lowest scores ({len(summary.worst)})")
        for name in ("item", "score", "worst", "failed rules", "engine"):
            worst.add_column(name, justify="right" if name == "score" else "left")
        for item in summary.worst:
            worst.add_row(
                item.key,
                str(item.score),
                item.worst_severity or "-",
                ", ".join(item.failed_rules) or "-",
                item.engine,
            )
        console.print(worst)
    if summary.failures:
        failures = Table(title=f"Failures (first {len(summary.failures)})")
        failures.add_column("item")
        failures.add_column("error")
        for key, error in summary.failures:
            failures.add_row(key, error)
        console.print(failures)


def _count_lines(summary: Summary) -> list[tuple[str, str]]:
    lines = [
        ("items", str(summary.total)),
        ("reviewed", str(summary.done)),
        ("failed", str(summary.failed)),
        ("identical drafts reused", str(summary.reused)),
        ("degraded to the rule engine", str(summary.degraded)),
    ]
    if summary.mean_score is not None:
        lines.append(("mean score", f"{summary.mean_score:.1f}"))
    return lines


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape_markdown(text: str) -> str:
    """`text` shown literally in Markdown (item names are file paths and ids chosen by users)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\n", " ").replace("\r", " "))


def summary_markdown(summary: Summary) -> str:
    out = ["## Summary", ""]
    out += [f"- {label}: {value}" for label, value in _count_lines(summary)]
    out.append("")
    if summary.rules:
        out += ["### Rules", "", "| rule | failed | passed | n/a |", "|---|---:|---:|---:|"]
        out += [
            f"| {escape_markdown(r.rule_id)} | {r.failed} | {r.passed} | {r.not_applicable} |"
            for r in summary.rules
        ]
        out.append("")
    if summary.worst:
        out += [
            "### Lowest scores",
            "",
            "| item | score | worst | failed rules | engine |",
            "|---|---:|---|---|---|",
        ]
        out += [
            f"| {escape_markdown(w.key)} | {w.score} | {w.worst_severity or '-'} | "
            f"{escape_markdown(', '.join(w.failed_rules)) or '-'} | {w.engine} |"
            for w in summary.worst
        ]
        out.append("")
    if summary.failures:
        out += ["### Failures", ""]
        out += [
            f"- {escape_markdown(key)}: {escape_markdown(error)}" for key, error in summary.failures
        ]
        out.append("")
    return "\n".join(out) + "\n"
