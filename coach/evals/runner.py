"""`coach eval run`: review every case × repeat of a dataset with one engine and score it per rule.

A run directory holds `manifest.json` (what ran: commit, dataset hashes, engine, model, prompt,
rulebook, parameters, start and end), `rows.jsonl` (one row per case × repeat: verdicts,
findings, rewrite, tokens, cost, latency, cache hit; errors recorded as errors, separate from
wrong answers), `report.json`, `report.md`, `report.html` (self-contained, offline) and
`predictions.jsonl`. `coach eval compare` reads the first two.
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
from coach.engines.rules.engine import RuleEngine
from coach.evals.cache import TRACE, Trace
from coach.evals.dataset import Case
from coach.evals.htmlreport import render_report
from coach.evals.metrics import MAIN_RULES, Confusion, Scored, macro, per_rule
from coach.evals.stats import bootstrap_f1, wilson_interval
from coach.models import Review, Verdict
from coach.rulebook import Rulebook, load_rulebook
from coach.service import ReviewService
from coach.text.merge_fields import find_merge_fields

__all__ = [
    "Budget",
    "EvalResult",
    "ReplayMissError",
    "Row",
    "build_result",
    "check_rewrite",
    "dataset_hashes",
    "evidence_spans",
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
    #: Code-point spans [start, end] of every occurrence of the case's evidence quotes.
    evidence: list[list[int]] = field(default_factory=list)
    #: With a rewrite: what `check_rewrite` found.
    rewrite_checks: dict[str, Any] | None = None

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


def evidence_spans(text: str, quotes: Iterable[str]) -> list[list[int]]:
    """[start, end] (code points) of every occurrence of each quote in `text`."""
    spans: set[tuple[int, int]] = set()
    for quote in quotes:
        if not quote:
            continue
        start = text.find(quote)
        while start >= 0:
            spans.add((start, start + len(quote)))
            start = text.find(quote, start + 1)
    return [list(s) for s in sorted(spans)]


def check_rewrite(case: Case, rewrite: str, checker: RuleEngine) -> dict[str, Any]:
    """Rewrite checks of one row: merge fields of the draft kept byte-identical, `must_keep`
    kept, `must_not_contain` absent, the rewrite passing the rulebook (the rule engine with the
    case's kind and context) and the length ratio rewrite/draft in characters."""
    fields = list(dict.fromkeys(f.raw for f in find_merge_fields(case.text)))
    request = case.request().model_copy(update={"text": rewrite})
    try:
        review = checker.review_sync(request, rewrite=False)
        failed = sorted(r.rule_id for r in review.rules if r.verdict is Verdict.failed)
        rulebook_pass: bool | None = not failed
    except Exception:  # an empty or invalid rewrite cannot be checked
        failed, rulebook_pass = [], None
    return {
        "merge_fields": len(fields),
        "merge_fields_missing": [f for f in fields if f not in rewrite],
        "must_keep": len(case.must_keep),
        "must_keep_missing": [s for s in case.must_keep if s not in rewrite],
        "must_not_contain": len(case.must_not_contain),
        "must_not_contain_present": [s for s in case.must_not_contain if s in rewrite],
        "rulebook_pass": rulebook_pass,
        "rulebook_failed": failed,
        "length_ratio": round(len(rewrite) / len(case.text), 4) if case.text else None,
    }


def _row(
    case: Case,
    repeat: int,
    engine: str,
    review: Review | None,
    error: str | None,
    latency_ms: float,
    trace: Trace,
    checker: RuleEngine | None = None,
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
        evidence=evidence_spans(case.text, case.evidence),
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
        if row.rewrite is not None and checker is not None:
            row.rewrite_checks = check_rewrite(case, row.rewrite, checker)
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
    checker: RuleEngine | None = None
    if rewrite:
        book = getattr(reviewer, "rulebook", None)
        checker = RuleEngine(book if isinstance(book, Rulebook) else load_rulebook(None))
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
                    row = _row(case, repeat, engine, review, None, ms, trace, checker)
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
    #: `--judge`: the LLM judge's agreement and rewrite scores (`coach.evals.judging`).
    judge: dict[str, Any] | None = None

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

    def f1_intervals(self, resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
        """Per rule: a case-bootstrap 95% interval of F1 (repeats clustered within a case)."""
        by_case: dict[str, dict[str, tuple[bool, list[bool]]]] = defaultdict(dict)
        for row in self.records or []:
            if row.predicted is None:
                continue
            for rule, label in row.expected.items():
                entry = by_case[rule].setdefault(row.case_id, (label == "fail", []))
                entry[1].append(row.predicted.get(rule) == "fail")
        if not self.records:  # results built from Scored rows only
            for scored in self.rows:
                for rule, label in scored.expected.items():
                    by_case[rule][scored.case_id] = (
                        label == "fail",
                        [scored.predicted.get(rule) == "fail"],
                    )
        out: dict[str, list[float]] = {}
        for rule in self.table:
            low, high = bootstrap_f1(list(by_case[rule].values()), resamples=resamples, seed=seed)
            out[rule] = [round(low, 4), round(high, 4)]
        return out

    def evidence(self) -> dict[str, Any]:
        """Among correct fails (expected and predicted `fail`) of cases that give evidence: the
        share whose findings for that rule overlap an evidence quote's span, per rule and
        overall."""
        per: dict[str, list[int]] = {}
        for row in self.records:
            if row.predicted is None or not row.evidence:
                continue
            for rule, label in row.expected.items():
                if label != "fail" or row.predicted.get(rule) != "fail":
                    continue
                counts = per.setdefault(rule, [0, 0])
                counts[0] += 1
                counts[1] += any(
                    f.get("rule_id") == rule and int(f["start"]) < end and start < int(f["end"])
                    for f in row.findings
                    for start, end in row.evidence
                )

        def entry(n: int, hits: int) -> dict[str, Any]:
            return {
                "correct_fails": n,
                "overlapping": hits,
                "share": round(hits / n, 4) if n else None,
                "wilson95": wilson(hits, n),
            }

        total_n = sum(c[0] for c in per.values())
        total_hits = sum(c[1] for c in per.values())
        return {
            "overall": entry(total_n, total_hits),
            "rules": {rule: entry(*per[rule]) for rule in sorted(per)},
        }

    def rewrites(self) -> dict[str, Any] | None:
        """Aggregated rewrite checks of the rows that have a rewrite; None without rewrites."""
        checks = [r.rewrite_checks for r in self.records if r.rewrite_checks is not None]
        if not checks:
            return None

        def share(pairs: list[bool]) -> dict[str, Any]:
            ok = sum(pairs)
            return {
                "n": len(pairs),
                "passed": ok,
                "share": round(ok / len(pairs), 4) if pairs else None,
                "wilson95": wilson(ok, len(pairs)),
            }

        with_fields = [c for c in checks if c["merge_fields"]]
        with_keep = [c for c in checks if c["must_keep"]]
        with_not = [c for c in checks if c["must_not_contain"]]
        judged = [c for c in checks if c["rulebook_pass"] is not None]
        ratios = [float(c["length_ratio"]) for c in checks if c["length_ratio"] is not None]
        failed = Counter(rule for c in judged for rule in c["rulebook_failed"])
        return {
            "rows": len(checks),
            "merge_fields_kept": share([not c["merge_fields_missing"] for c in with_fields]),
            "must_keep_kept": share([not c["must_keep_missing"] for c in with_keep]),
            "must_not_contain_absent": share([not c["must_not_contain_present"] for c in with_not]),
            "rulebook_pass": share([bool(c["rulebook_pass"]) for c in judged]),
            "rulebook_failed_by_rule": dict(sorted(failed.items())),
            "length_ratio": {
                "median": _percentile(ratios, 0.5) if ratios else None,
                "p05": _percentile(ratios, 0.05) if ratios else None,
                "p95": _percentile(ratios, 0.95) if ratios else None,
            },
        }

    def as_dict(self) -> dict[str, Any]:
        latencies = [r.latency_ms for r in self.records if r.error is None]
        costs = [r.cost_usd for r in self.records if r.cost_usd is not None]
        f1_ci = self.f1_intervals()
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
            "rules": {
                rule: _confusion_dict(c) | {"f1_bootstrap95": f1_ci[rule]}
                for rule, c in self.table.items()
            },
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
            "evidence": self.evidence(),
            "rewrites": self.rewrites(),
            "judge": self.judge,
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
    wrong_by_row: list[tuple[str, list[str]]] = []
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row in result.rows:
            wrong = sorted(
                r
                for r, label in row.expected.items()
                if (row.predicted.get(r) == "fail") != (label == "fail")
            )
            wrong_by_row.append((row.case_id, wrong))
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
    (out / "report.html").write_text(render_report(report, wrong_by_row), "utf-8")
    return out / "report.json"
