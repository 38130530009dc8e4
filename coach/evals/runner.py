"""`coach eval run`: review every case × repeat of a dataset with one engine and score it per rule.

A run directory holds `manifest.json` (what ran: commit, dataset hashes, engine, model, prompt,
rulebook, parameters, start and end), `rows.jsonl` (one row per case × repeat: verdicts,
findings, rewrite, tokens, cost, latency, cache hit; errors recorded as errors, separate from
wrong answers), `report.json`, `report.md` and `predictions.jsonl`. `coach eval compare` reads the
first two.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import platform
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coach.engines.base import Reviewer
from coach.evals.cache import TRACE, Trace
from coach.evals.dataset import Case
from coach.evals.metrics import MAIN_RULES, Confusion, Scored, macro, per_rule
from coach.evals.stats import wilson_interval
from coach.models import Review
from coach.service import ReviewService

__all__ = [
    "Budget",
    "EvalResult",
    "ReplayMissError",
    "Row",
    "build_result",
    "dataset_hashes",
    "read_rows",
    "run_eval",
    "run_rows",
    "wilson",
    "write_manifest",
    "write_report",
    "write_rows",
]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


class ReplayMissError(Exception):
    """`--replay` found no recording for a case: the harness stops (exit 1)."""

    def __init__(self, case_id: str, repeat: int) -> None:
        super().__init__(f"replay: no recording for case {case_id} (repeat {repeat})")
        self.case_id = case_id
        self.repeat = repeat


@dataclass
class Row:
    """One case × repeat, as one line of rows.jsonl."""

    case_id: str
    repeat: int
    engine: str
    language: str | None
    kind: str
    tags: list[str]
    expected: dict[str, str]
    predicted: dict[str, str] | None
    error: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    rewrite: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    cache_hit: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def scored(self) -> Scored:
        slices = (
            f"language={self.language}",
            f"kind={self.kind}",
            *(f"tag={t}" for t in self.tags),
        )
        return Scored(self.case_id, dict(self.expected), dict(self.predicted or {}), slices)


def _row(
    case: Case,
    repeat: int,
    engine: str,
    review: Review | None,
    error: str | None,
    latency_ms: float,
    trace: Trace,
) -> Row:
    row = Row(
        case_id=case.id,
        repeat=repeat,
        engine=engine,
        language=review.language.value
        if review is not None
        else (case.language.value if case.language else None),
        kind=case.kind.value,
        tags=list(case.tags),
        expected=dict(case.expected),
        predicted=None,
        error=error,
        latency_ms=round(latency_ms, 3),
    )
    if review is None:
        return row
    if review.degraded and engine != "rules":
        reason = review.degraded_reason or "degraded"
        row.error = reason.split(":", 1)[0].strip() or "degraded"
    usage = review.usage
    if usage is not None:
        row.tokens_in, row.tokens_out = usage.tokens_in, usage.tokens_out
        row.tokens_cached = usage.tokens_cached
        row.cost_usd = usage.cost_usd
    row.cache_hit = trace.all_hits or bool(usage and usage.cache_hit)
    if row.cache_hit:
        row.cost_usd = 0.0  # recorded answers cost nothing
    if row.error is None:
        row.predicted = {r.rule_id: r.verdict.value for r in review.rules}
        row.findings = [
            {"rule_id": f.rule_id, "start": f.span.start, "end": f.span.end}
            for f in review.findings
        ]
        row.rewrite = review.rewrite.text if review.rewrite else None
    return row


class Budget:
    """`--max-cost`: admits a row only while the spend so far, what is in flight and one more
    row's estimated cost stay within the budget. Until a paid row has finished (and given an
    estimate) rows run one at a time."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self._costs: list[float] = []
        self.stopped = False
        self._cond = asyncio.Condition()

    @property
    def estimate(self) -> float | None:
        return max(self._costs) if self._costs else None

    async def admit(self) -> float | None:
        """The reserved estimate, or None when the row must not run."""
        async with self._cond:
            if self.limit is None:
                self.in_flight += 1
                return 0.0
            while self.estimate is None and self.in_flight > 0 and not self.stopped:
                await self._cond.wait()
            estimate = self.estimate or 0.0
            if self.stopped or self.spent + self.reserved + estimate > self.limit:
                self.stopped = True
                return None
            self.reserved += estimate
            self.in_flight += 1
            return estimate

    async def settle(self, reserved: float, row: Row | None) -> None:
        async with self._cond:
            self.reserved -= reserved
            self.in_flight -= 1
            if row is not None and row.cost_usd is not None:
                self.spent += row.cost_usd
                if not row.cache_hit and row.tokens_in:
                    self._costs.append(row.cost_usd)
            self._cond.notify_all()


async def run_rows(
    todo: list[tuple[Case, int]],
    reviewer: Reviewer,
    *,
    engine: str,
    concurrency: int = 4,
    max_cost: float | None = None,
    rewrite: bool = False,
    replay: bool = False,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Review each (case, repeat) of `todo`, at most `concurrency` at a time; rows in `todo`
    order. Stops on a replay miss (`ReplayMissError`)."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    budget = Budget(max_cost)
    rows: list[Row | None] = [None] * len(todo)

    async def one(index: int, case: Case, repeat: int) -> None:
        async with semaphore:
            reserved = await budget.admit()
            if reserved is None:
                skipped = _row(case, repeat, engine, None, "budget", 0.0, Trace(repeat))
                rows[index] = skipped
                if on_row:
                    on_row(skipped)
                return
            trace = Trace(repeat=repeat)
            TRACE.set(trace)
            started = time.perf_counter()
            row: Row | None = None
            try:
                try:
                    review = await reviewer.review(case.request(), rewrite=rewrite)
                except Exception as exc:  # one bad case must not stop the run
                    ms = (time.perf_counter() - started) * 1000
                    row = _row(case, repeat, engine, None, exc.__class__.__name__, ms, trace)
                else:
                    ms = (time.perf_counter() - started) * 1000
                    row = _row(case, repeat, engine, review, None, ms, trace)
            finally:
                await budget.settle(reserved, row)
            assert row is not None
            if replay and row.error == "replay_miss":
                raise ReplayMissError(case.id, repeat)
            rows[index] = row
            if on_row:
                on_row(row)

    try:
        async with asyncio.TaskGroup() as group:
            for index, (case, repeat) in enumerate(todo):
                group.create_task(one(index, case, repeat))
    except* ReplayMissError as eg:
        first = eg.exceptions[0]
        assert isinstance(first, ReplayMissError)
        raise first from None
    return [r for r in rows if r is not None]


# -- scoring ---------------------------------------------------------------------------------


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion, rounded; (0, 1) when n is 0."""
    low, high = wilson_interval(successes, n, Z95)
    return (round(low, 4), round(high, 4))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return round(value, 3)


def _confusion_dict(c: Confusion) -> dict[str, Any]:
    return c.as_dict() | {
        "wilson95": {
            "precision": wilson(c.tp, c.tp + c.fp),
            "recall": wilson(c.tp, c.tp + c.fn),
            "accuracy": wilson(c.tp + c.tn, c.n),
        }
    }


@dataclass
class EvalResult:
    engine: str
    rulebook_version: str
    datasets: list[str]
    rows: list[Scored]
    table: dict[str, Confusion]
    slices: dict[str, dict[str, Confusion]]
    seconds: float
    records: list[Row] = field(default_factory=list)

    @property
    def headline(self) -> dict[str, float]:
        return macro(self.table, MAIN_RULES)

    @property
    def errors(self) -> dict[str, int]:
        return dict(sorted(Counter(r.error for r in self.records if r.error).items()))

    @property
    def repeats(self) -> int:
        return max((r.repeat for r in self.records), default=0) + 1

    def stability(self) -> dict[str, Any] | None:
        """For K > 1 repeats: per-case flip rate, majority verdicts, share of stable rules."""
        if self.repeats <= 1:
            return None
        verdicts: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for row in self.records:
            if row.predicted is None:
                continue
            for rule in row.expected:
                verdicts[row.case_id][rule].append(row.predicted.get(rule, "missing"))
        flip: dict[str, float] = {}
        majority: dict[str, dict[str, str]] = {}
        stable = pairs = 0
        for case_id, by_rule in verdicts.items():
            unstable = sum(len(set(v)) > 1 for v in by_rule.values())
            stable += len(by_rule) - unstable
            pairs += len(by_rule)
            flip[case_id] = round(unstable / len(by_rule), 4) if by_rule else 0.0
            majority[case_id] = {r: Counter(v).most_common(1)[0][0] for r, v in by_rule.items()}
        return {
            "k": self.repeats,
            "mean_flip_rate": round(sum(flip.values()) / len(flip), 4) if flip else 0.0,
            "stable_share": round(stable / pairs, 4) if pairs else 1.0,
            "flip_rate": dict(sorted(flip.items())),
            "majority": dict(sorted(majority.items())),
        }

    def as_dict(self) -> dict[str, Any]:
        latencies = [r.latency_ms for r in self.records if r.error is None]
        costs = [r.cost_usd for r in self.records if r.cost_usd is not None]
        return {
            "engine": self.engine,
            "rulebook_version": self.rulebook_version,
            "datasets": self.datasets,
            "cases": len({r.case_id for r in self.records}) if self.records else len(self.rows),
            "rows": len(self.records) if self.records else len(self.rows),
            "seconds": round(self.seconds, 3),
            "main_rules": list(MAIN_RULES),
            "macro_main": self.headline,
            "macro_all": macro(self.table),
            "rules": {rule: _confusion_dict(c) for rule, c in self.table.items()},
            "slices": {
                name: {rule: c.as_dict() for rule, c in table.items()}
                for name, table in sorted(self.slices.items())
            },
            "errors": {"count": sum(self.errors.values()), "by_code": self.errors},
            "latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
            "tokens": {
                "in": sum(r.tokens_in for r in self.records),
                "out": sum(r.tokens_out for r in self.records),
                "cached": sum(r.tokens_cached for r in self.records),
            },
            "cost_usd": round(sum(costs), 6) if costs else None,
            "cache_hits": sum(r.cache_hit for r in self.records),
            "repeats": self.stability(),
        }


def build_result(
    records: list[Row],
    *,
    engine: str,
    rulebook_version: str,
    datasets: list[str],
    seconds: float,
) -> EvalResult:
    """Score the rows that did not error (each repeat counts as one row)."""
    scored = [r.scored for r in records if r.predicted is not None]
    names = sorted({s for row in scored for s in row.slices})
    by_slice = {name: per_rule(r for r in scored if name in r.slices) for name in names}
    return EvalResult(
        engine, rulebook_version, datasets, scored, per_rule(scored), by_slice, seconds, records
    )


def run_eval(
    cases: list[Case], service: ReviewService, *, engine: str, datasets: list[str]
) -> EvalResult:
    """The rule engine over `cases`, once each, synchronously (used by tests and scripts)."""
    started = time.perf_counter()
    records = asyncio.run(
        run_rows([(c, 0) for c in cases], service.engine(engine), engine=engine, concurrency=1)
    )
    return build_result(
        records,
        engine=engine,
        rulebook_version=service.rulebook.version,
        datasets=datasets,
        seconds=time.perf_counter() - started,
    )


# -- files -----------------------------------------------------------------------------------


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def dataset_hashes(paths: Iterable[str]) -> list[dict[str, str]]:
    return [{"path": p, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in paths]


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return path


def write_rows(out: Path, rows: Iterable[Row]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.as_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_rows(out: Path) -> list[Row]:
    path = out / "rows.jsonl"
    return [
        Row.from_json(json.loads(line))
        for line in path.read_text("utf-8").splitlines()
        if line.strip()
    ]


def write_report(result: EvalResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = result.as_dict() | {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
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
