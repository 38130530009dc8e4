"""Per-rule metrics of predicted verdicts against labels.

The positive class is `fail` (the coach's job is to catch failures). A prediction of `pass` or
`not_applicable` counts as "not fail". Accuracy is reported beside F1 because on a balanced set
an engine that fails everything already scores F1 ≈ 0.67.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAIN_RULES", "Confusion", "Scored", "macro", "per_rule"]

#: The rules whose mean accuracy and macro-F1 are the headline numbers.
MAIN_RULES = ("no-cold-pitch", "give-first", "interest-in-them", "quality-over-quantity")


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, expected_fail: bool, predicted_fail: bool) -> None:
        if expected_fail and predicted_fail:
            self.tp += 1
        elif predicted_fail:
            self.fp += 1
        elif expected_fail:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "accuracy": round(self.accuracy, 4),
        }


@dataclass(frozen=True)
class Scored:
    """One case's labels and predictions: rule id -> "pass" | "fail" | "not_applicable"."""

    case_id: str
    expected: dict[str, str]
    predicted: dict[str, str]
    slices: tuple[str, ...] = ()


def per_rule(rows: Iterable[Scored]) -> dict[str, Confusion]:
    table: dict[str, Confusion] = {}
    for row in rows:
        for rule_id, label in row.expected.items():
            table.setdefault(rule_id, Confusion()).add(
                label == "fail", row.predicted.get(rule_id) == "fail"
            )
    return dict(sorted(table.items()))


def macro(table: dict[str, Confusion], rules: Iterable[str] | None = None) -> dict[str, float]:
    chosen = [table[r] for r in (rules or table) if r in table and table[r].n]
    if not chosen:
        return {"f1": 0.0, "accuracy": 0.0}
    return {
        "f1": round(sum(c.f1 for c in chosen) / len(chosen), 4),
        "accuracy": round(sum(c.accuracy for c in chosen) / len(chosen), 4),
    }
