"""`coach eval run`: review every case of a dataset with one engine and score it per rule."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coach.evals.dataset import Case
from coach.evals.metrics import MAIN_RULES, Confusion, Scored, macro, per_rule
from coach.service import ReviewService

__all__ = ["EvalResult", "run_eval", "write_report"]


@dataclass
class EvalResult:
    engine: str
    rulebook_version: str
    datasets: list[str]
    rows: list[Scored]
    table: dict[str, Confusion]
    slices: dict[str, dict[str, Confusion]]
    seconds: float

    @property
    def headline(self) -> dict[str, float]:
        return macro(self.table, MAIN_RULES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "rulebook_version": self.rulebook_version,
            "datasets": self.datasets,
            "cases": len(self.rows),
            "seconds": round(self.seconds, 3),
            "main_rules": list(MAIN_RULES),
            "macro_main": self.headline,
            "macro_all": macro(self.table),
            "rules": {rule: c.as_dict() for rule, c in self.table.items()},
            "slices": {
                name: {rule: c.as_dict() for rule, c in table.items()}
                for name, table in sorted(self.slices.items())
            },
        }


def run_eval(
    cases: list[Case], service: ReviewService, *, engine: str, datasets: list[str]
) -> EvalResult:
    started = time.perf_counter()
    rows: list[Scored] = []
    for case in cases:
        review = service.review_sync(case.request(), engine=engine, rewrite=False)
        predicted = {r.rule_id: r.verdict.value for r in review.rules}
        tags = (
            f"language={review.language.value}",
            f"kind={case.kind.value}",
            *(f"tag={t}" for t in case.tags),
        )
        rows.append(Scored(case.id, dict(case.expected), predicted, tags))
    seconds = time.perf_counter() - started
    names = sorted({s for row in rows for s in row.slices if not s.startswith("tag=")})
    by_slice = {name: per_rule(r for r in rows if name in r.slices) for name in names}
    return EvalResult(
        engine, service.rulebook.version, datasets, rows, per_rule(rows), by_slice, seconds
    )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def write_report(result: EvalResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = result.as_dict() | {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
    }
    (out / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8"
    )
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row in result.rows:
            wrong = sorted(
                r
                for r, label in row.expected.items()
                if (row.predicted.get(r) == "fail") != (label == "fail")
            )
            handle.write(
                json.dumps(
                    {
                        "id": row.case_id,
                        "expected": row.expected,
                        "predicted": row.predicted,
                        "wrong": wrong,
                    }
                )
                + "\n"
            )
    return out / "report.json"
