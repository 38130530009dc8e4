"""End to end: the LLM engine and the CLI against the fake OpenAI-compatible server, a real
process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coach.engines.llm import LLMEngine
from coach.models import Kind, Review, ReviewRequest, Verdict
from coach.rulebook import default_rulebook
from coach.settings import Settings
from tools.fake_openai import MODEL_ID
from tools.fake_openai.process import FakeServer, running

ROOT = Path(__file__).resolve().parents[2]
DRAFT = (
    "Hi Dana, I came across your profile. We help companies like yours double revenue with our "
    "platform 😀. Can we hop on a 15 minute call Tuesday? https://cal.example.com/x"
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with running("--seed", "7") as server:
        yield server


def _settings(url: str, **extra: object) -> Settings:
    return Settings.model_validate(
        {"llm_base_url": url, "llm_model": MODEL_ID, "llm_deadline_s": 10, **extra}
    )


def _review(settings: Settings, text: str = DRAFT, kind: Kind = Kind.message) -> Review:
    async def go() -> Review:
        engine = LLMEngine(default_rulebook(), settings)
        try:
            return await engine.review(ReviewRequest(text=text, kind=kind))
        finally:
            await engine.aclose()

    return asyncio.run(go())


def test_llm_review_against_the_fake_server(fake: FakeServer) -> None:
    review = _review(_settings(fake.base_url))
    assert review.engine == "llm" and not review.degraded
    verdicts = {r.rule_id: r.verdict for r in review.rules}
    assert verdicts["no-cold-pitch"] is Verdict.failed
    assert all(r.source == "llm" for r in review.rules)
    for finding in review.findings:
        assert DRAFT[finding.span.start : finding.span.end] == finding.span.quote
        assert finding.span.end_utf16 - finding.span.start_utf16 >= len(finding.span.quote)
    usage = review.usage
    assert usage is not None
    assert usage.model == MODEL_ID and usage.calls == 1 and usage.tokens_in > 1000
    assert review.rewrite is not None and review.rewrite.check is not None


def test_second_identical_call_hits_the_prompt_cache(fake: FakeServer) -> None:
    settings = _settings(fake.base_url, cache_size=0)  # our own cache off: the provider's counts
    _review(settings, "Hello there, a first draft to warm the prefix cache.")
    review = _review(settings, "Hello there, a second, different draft.")
    assert review.usage is not None and review.usage.tokens_cached >= 1024


def test_invalid_json_twice_degrades_to_the_rule_engine() -> None:
    with running("--mode", "invalid-json") as server:
        review = _review(_settings(server.base_url))
    assert review.engine == "rules" and review.degraded
    assert review.degraded_reason is not None and review.degraded_reason.startswith(
        "invalid_output"
    )
    assert review.usage is not None and review.usage.calls == 2


def test_server_errors_until_the_deadline_degrade() -> None:
    with running("--error-rate", "1") as server:
        review = _review(_settings(server.base_url, llm_deadline_s=1.5))
    assert review.degraded and review.degraded_reason is not None
    assert review.degraded_reason.startswith(("provider_error", "timeout"))


def test_cli_engine_llm_end_to_end(fake: FakeServer, tmp_path: Path) -> None:
    draft = tmp_path / "draft.txt"
    draft.write_text(DRAFT, "utf-8")
    env = {
        **os.environ,
        "COACH_LLM_BASE_URL": fake.base_url,
        "COACH_LLM_MODEL": MODEL_ID,
    }
    env.pop("COACH_LLM_API_KEY", None)
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coach",
            "review",
            str(draft),
            "--engine",
            "auto",
            "--format",
            "json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    review = json.loads(done.stdout)
    assert review["engine"] == "llm" and review["usage"]["model"] == MODEL_ID
    assert DRAFT not in done.stderr
