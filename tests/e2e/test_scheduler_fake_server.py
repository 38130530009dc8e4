"""End to end: the request scheduler paces concurrent reviews through `LLMEngine` against the
fake OpenAI-compatible server (a real process on 127.0.0.1) with an RPM limit.

The fake's window is a sliding 60 s, so a few seconds of traffic cannot show 429s being avoided
over window edges (tests/test_scheduler.py runs that in virtual time); these tests show the
pace on a real socket: close to, and never above, the budget, without a single 429.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coach.engines.llm import LLMEngine
from coach.models import ReviewRequest
from coach.rulebook import default_rulebook
from coach.scheduler import SchedulerStats
from coach.settings import Settings
from tools.fake_openai import MODEL_ID
from tools.fake_openai.process import FakeServer, running

ROOT = Path(__file__).resolve().parents[2]
RPM = 120
LATENCY = 0.05
CONCURRENCY = 8


@dataclass
class Run:
    sent: list[float]  # when the scheduler let each request go, seconds from the start
    degraded: int
    stats: SchedulerStats


def _burst(url: str, *, reviews: int, rpm: int | None) -> Run:
    settings = Settings.model_validate(
        {
            "llm_base_url": url,
            "llm_model": MODEL_ID,
            "llm_deadline_s": 30,
            "cache_size": 0,  # every review must reach the server
            "llm_rpm": rpm,
        }
    )

    async def go() -> Run:
        engine = LLMEngine(default_rulebook(), settings)
        queue = list(range(reviews))
        sent: list[float] = []
        degraded = 0
        started = time.monotonic()
        admit = engine.scheduler.before_request

        async def spy(request: httpx.Request) -> None:
            await admit(request)
            sent.append(time.monotonic() - started)

        # The engine builds its client on first use, with the hooks it finds then.
        engine.scheduler.before_request = spy  # type: ignore[method-assign]

        async def worker() -> None:
            nonlocal degraded
            while queue:
                n = queue.pop()
                text = f"Hi Dana, I enjoyed your talk on onboarding (note {n}). Coffee next week?"
                review = await engine.review(ReviewRequest(text=text), rewrite=False)
                degraded += review.degraded

        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        finally:
            await engine.aclose()
        return Run(sorted(sent), degraded, engine.scheduler.stats())

    return asyncio.run(go())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    # One server for both tests: together they send 27 requests, well inside its 120 a minute.
    with running("--seed", "3", "--rpm", str(RPM), "--latency", str(LATENCY)) as server:
        yield server


def _steady_gap(sent: list[float]) -> float:
    """The typical gap between requests once paced (the median ignores the burst)."""
    return statistics.median(b - a for a, b in itertools.pairwise(sent))


def test_concurrent_reviews_are_paced_to_the_rpm_budget_without_429s(fake: FakeServer) -> None:
    reviews = 12
    run = _burst(fake.base_url, reviews=reviews, rpm=RPM)
    ideal = min(CONCURRENCY / LATENCY, RPM / 60)  # 2 requests a second
    # After the burst allowance (two requests at once), one request every 60 / (0.95 * RPM) s.
    sent = run.sent
    steady = 1 / _steady_gap(sent)
    overall = len(sent) / (sent[-1] + LATENCY)
    print(f"rpm {RPM}: steady {steady:.3f}/s, overall {overall:.3f}/s, ideal {ideal:.3f}/s")
    assert 0.9 * ideal <= steady <= ideal, (steady, run.stats)
    assert overall >= 0.9 * ideal, (overall, run.stats)
    assert run.degraded == 0 and run.stats.responses_429 == 0
    assert run.stats.requests == reviews == run.stats.responses
    assert run.stats.limit_rpm == RPM and run.stats.pace_rpm is not None


def test_without_a_budget_the_pace_is_learned_from_the_rate_limit_headers(
    fake: FakeServer,
) -> None:
    reviews = 15
    run = _burst(fake.base_url, reviews=reviews, rpm=None)
    # The first CONCURRENCY requests go before any answer, then the burst allowance; the rest
    # follow the learned pace.
    assert run.stats.limit_rpm == RPM and run.stats.responses_429 == 0 and run.degraded == 0
    paced = 1 / _steady_gap(run.sent[CONCURRENCY:])
    print(f"learned rpm {run.stats.limit_rpm}: paced {paced:.3f}/s, ideal {RPM / 60:.3f}/s")
    assert 0.9 * RPM / 60 <= paced <= RPM / 60, (paced, run.stats)


def test_eval_run_rpm_paces_the_harness(fake: FakeServer, tmp_path: Path) -> None:
    dataset = tmp_path / "four.jsonl"
    lines = (ROOT / "evals" / "datasets" / "dev-slice30.jsonl").read_text("utf-8").splitlines()
    dataset.write_text("\n".join(lines[:4]) + "\n", "utf-8")
    env = {
        **os.environ,
        "COACH_LLM_BASE_URL": fake.base_url,
        "COACH_LLM_MODEL": MODEL_ID,
        "COACH_DATA_DIR": str(tmp_path / "data"),
    }
    for name in ("COACH_LLM_API_KEY", "OPENAI_API_KEY", "COACH_CONFIG", "COACH_LLM_RPM"):
        env.pop(name, None)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "coach", "eval", "run", "--engine", "llm", "--dataset",
         str(dataset), "--concurrency", "4", "--rpm", "60", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["parameters"]["rpm"] == 60
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 4 and all(r["error"] is None for r in rows)
    # All four start together; at 57 a minute the last request goes about 2.9 s after the
    # first (unpaced, all four would take one round trip).
    latencies = sorted(r["latency_ms"] for r in rows)
    assert latencies[-1] >= 2500, latencies
