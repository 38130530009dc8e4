"""The run loop: rows, errors, budget, repeats, recordings (no network, no subprocess)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from coach.engines.llm.call import CallStats, Completion, ModelCaller
from coach.evals.cache import TRACE, RecordingCaller, Recordings, ReplayMiss, Trace
from coach.evals.dataset import Case
from coach.evals.runner import (
    ReplayMissError,
    Row,
    build_result,
    read_rows,
    run_rows,
    wilson,
    write_rows,
)
from coach.models import Review, ReviewRequest, Usage, Verdict
from coach.service import ReviewService

RULES = ReviewService().rules
GOOD = "Hi Dana, I read your post on onboarding and shared it with two founders. Happy to intro?"


def case(case_id: str, expected: dict[str, Any] | None = None) -> Case:
    return Case.model_validate(
        {
            "id": case_id,
            "kind": "message",
            "text": GOOD,
            "expected": expected or {"give-first": "pass"},
            "tags": ["t1"],
        }
    )


class Stub:
    """A reviewer: the rule engine's review, with a usage and optionally degraded / raising."""

    name = "stub"

    def __init__(self, cost: float = 0.0, degrade: str | None = None, flip: bool = False) -> None:
        self.cost, self.degrade, self.flip, self.calls = cost, degrade, flip, 0

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        self.calls += 1
        review = RULES.review_sync(request, rewrite=rewrite)
        usage = Usage(model="m", prompt_version="v1", tokens_in=100, cost_usd=self.cost)
        update: dict[str, Any] = {"usage": usage}
        if self.degrade:
            update |= {"degraded": True, "degraded_reason": f"{self.degrade}: boom; rule engine"}
        if self.flip and self.calls % 2 == 0:
            rules = [
                r.model_copy(
                    update={
                        "verdict": Verdict.failed if r.verdict is Verdict.passed else Verdict.passed
                    }
                )
                for r in review.rules
            ]
            update["rules"] = rules
        return review.model_copy(update=update)


def run(todo: list[tuple[Case, int]], reviewer: Any, **kwargs: Any) -> list[Row]:
    return asyncio.run(run_rows(todo, reviewer, engine="llm", **kwargs))


def test_rows_carry_every_field() -> None:
    [row] = run([(case("a"), 0)], Stub(cost=0.5))
    data = row.as_json()
    assert list(data) == [
        "case_id", "repeat", "engine", "language", "kind", "tags", "expected", "predicted",
        "error", "findings", "rewrite", "tokens_in", "tokens_out", "tokens_cached", "cost_usd",
        "latency_ms", "cache_hit", "evidence", "rewrite_checks",
    ]  # fmt: skip
    assert data["case_id"] == "a" and data["repeat"] == 0 and data["error"] is None
    assert data["predicted"]["give-first"] in {"pass", "fail"}
    assert data["tokens_in"] == 100 and data["cost_usd"] == 0.5 and data["cache_hit"] is False
    assert Row.from_json(json.loads(json.dumps(data))) == row


def test_a_degraded_review_is_an_error_row_not_a_wrong_answer() -> None:
    [row] = run([(case("a"), 0)], Stub(degrade="rate_limited"))
    assert row.error == "rate_limited" and row.predicted is None and row.findings == []
    result = build_result([row], engine="llm", rulebook_version="x", datasets=[], seconds=0)
    assert result.table == {} and result.errors == {"rate_limited": 1}


def test_max_cost_stops_before_the_budget_is_exceeded() -> None:
    todo = [(case(f"c{i}"), 0) for i in range(10)]
    rows = run(todo, Stub(cost=0.01), concurrency=4, max_cost=0.035)
    paid = [r for r in rows if r.error is None]
    assert len(rows) == 10
    assert len(paid) == 3
    assert sum(r.cost_usd or 0 for r in paid) <= 0.035
    assert {r.error for r in rows if r not in paid} == {"budget"}


def test_repeats_report_flip_rate_majority_and_stability() -> None:
    one = case("a", {"give-first": "pass", "no-cold-pitch": "pass"})
    rows = run([(one, k) for k in range(3)], Stub(flip=True), concurrency=1)
    result = build_result(rows, engine="llm", rulebook_version="x", datasets=[], seconds=0)
    stability = result.as_dict()["repeats"]
    assert stability["k"] == 3
    assert stability["flip_rate"] == {"a": 1.0}  # repeat 1 flipped both rules
    assert stability["stable_share"] == 0.0
    first = rows[0].predicted
    assert first is not None
    assert stability["majority"]["a"] == {r: first[r] for r in ("give-first", "no-cold-pitch")}


def test_report_has_intervals_latency_tokens_and_slices() -> None:
    rows = run([(case("a"), 0), (case("b"), 0)], Stub(cost=0.25))
    report = build_result(
        rows, engine="llm", rulebook_version="x", datasets=[], seconds=0
    ).as_dict()
    assert report["rules"]["give-first"]["wilson95"]["accuracy"][1] <= 1.0
    assert set(report["latency_ms"]) == {"p50", "p95"}
    assert report["tokens"]["in"] == 200 and report["cost_usd"] == 0.5
    assert "tag=t1" in report["slices"] and "kind=message" in report["slices"]
    assert report["errors"] == {"count": 0, "by_code": {}}


def test_wilson_matches_a_hand_computed_interval() -> None:
    # 8/10, z = 1.96: centre 0.7167, half-width 0.2071 (textbook values).
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_rows_round_trip_through_the_file(tmp_path: Path) -> None:
    rows = run([(case("a"), 0), (case("a"), 1)], Stub())
    write_rows(tmp_path, rows)
    assert read_rows(tmp_path) == rows


class Counting(ModelCaller):
    def __init__(self) -> None:
        self.calls = 0

    async def complete(
        self, request: dict[str, Any], *, deadline: float, stats: CallStats
    ) -> Completion:
        self.calls += 1
        return Completion(f"answer {self.calls}", tokens_in=10, tokens_out=5)


def test_recordings_are_keyed_by_request_and_repeat(tmp_path: Path) -> None:
    inner = Counting()
    caller = RecordingCaller(Recordings(tmp_path), inner)

    async def call(repeat: int, body: dict[str, Any]) -> tuple[str, Trace]:
        trace = Trace(repeat=repeat)
        TRACE.set(trace)
        done = await caller.complete(body, deadline=0, stats=CallStats())
        return done.content, trace

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    first, trace = asyncio.run(call(0, body))
    assert first == "answer 1" and not trace.all_hits
    again, trace = asyncio.run(call(0, body))
    assert again == "answer 1" and trace.all_hits and inner.calls == 1
    other, _ = asyncio.run(call(1, body))
    assert other == "answer 2" and inner.calls == 2
    [path, *_] = sorted(tmp_path.rglob("*.json"))
    assert set(json.loads(path.read_text("utf-8"))) == {
        "model", "content", "tokens_in", "tokens_out", "tokens_cached"
    }  # fmt: skip

    replaying = RecordingCaller(Recordings(tmp_path), None, replay=True)
    with pytest.raises(ReplayMiss):
        asyncio.run(replaying.complete(body | {"model": "n"}, deadline=0, stats=CallStats()))


def test_a_replay_miss_stops_the_run() -> None:
    class Missing(Stub):
        async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
            return (await super().review(request, rewrite=rewrite)).model_copy(
                update={"degraded": True, "degraded_reason": "replay_miss: none"}
            )

    with pytest.raises(ReplayMissError, match="case a"):
        run([(case("a"), 0)], Missing(), replay=True)
