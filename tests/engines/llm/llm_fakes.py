"""Helpers for the LLM engine tests: settings, fake OpenAI answers, a fake sleep, a runner.

Not a conftest.py on purpose: the repository's tests import the root conftest as `conftest`,
and a second conftest.py here would shadow it. Test modules of this folder import this module.
Every test mocks HTTP with respx; nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import respx
import structlog

from coach.engines.llm.call import ModelCaller
from coach.engines.llm.client import make_client
from coach.engines.llm.engine import LLMEngine
from coach.logs import configure_logging
from coach.models import Context, Kind, Language, Review, ReviewRequest
from coach.rulebook import Rulebook, default_rulebook, parse_rulebook
from coach.settings import DEFAULT_PROMPTS_DIR, Settings

BASE_URL = "http://llm.test/v1"
CHAT_URL = f"{BASE_URL}/chat/completions"
API_KEY = "sk-test-3f9a1c"
MODEL = "gpt-4o-mini"
DEFAULT_RULE_IDS = [
    "no-cold-pitch",
    "give-first",
    "interest-in-them",
    "quality-over-quantity",
    "volunteer-to-lead",
]
#: A draft the fake answers below describe: it asks and gives nothing.
ASK_DRAFT = "Hi Sam, could you introduce me to your head of procurement next week?"


@contextmanager
def fresh_logging(level: str = "WARNING") -> Iterator[None]:
    """structlog as the CLI sets it up (JSON to stderr) at `level`; the previous structlog
    configuration is restored afterwards, so no test leaks its logging set-up into another."""
    saved = structlog.get_config()
    configure_logging(level)
    try:
        yield
    finally:
        structlog.configure(**saved)


def make_request(
    text: str,
    *,
    kind: Kind | str = Kind.message,
    language: Language | str | None = None,
    **context: Any,
) -> ReviewRequest:
    """A ReviewRequest; keyword arguments beyond kind/language become the context. (The root
    conftest has the same helper; it is restated here so `mypy tests/engines/llm` resolves.)"""
    return ReviewRequest(
        text=text,
        kind=Kind(kind),
        language=Language(language) if language is not None else None,
        context=Context.model_validate(context) if context else None,
    )


def make_settings(**overrides: Any) -> Settings:
    """LLM settings for tests: configured, short deadline, few attempts."""
    values: dict[str, Any] = {
        "llm_base_url": BASE_URL,
        "llm_model": MODEL,
        "llm_api_key": API_KEY,
        "llm_deadline_s": 2.0,
        "llm_max_attempts": 3,
    }
    values.update(overrides)
    return Settings.model_validate(values)


class FakeSleep:
    """An async sleep that records the waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_engine(
    settings: Settings | None = None,
    *,
    rulebook: Rulebook | None = None,
    sleep: FakeSleep | None = None,
    max_attempts: int | None = None,
    **kwargs: Any,
) -> LLMEngine:
    """An LLMEngine; with `sleep`, its caller uses that sleep (waits asserted, not waited)."""
    settings = settings or make_settings()
    if sleep is not None:
        kwargs["caller"] = ModelCaller(
            make_client(settings),
            max_attempts=max_attempts or settings.llm_max_attempts,
            sleep=sleep,
        )
    return LLMEngine(rulebook or default_rulebook(), settings, **kwargs)


async def _review_and_close(
    engine: LLMEngine, requests: list[ReviewRequest], rewrite: bool
) -> list[Review]:
    try:
        return [await engine.review(request, rewrite=rewrite) for request in requests]
    finally:
        await engine.caller.client.close()


def run_reviews(
    engine: LLMEngine, requests: list[ReviewRequest], *, rewrite: bool = True
) -> list[Review]:
    """Review each request in turn on one event loop, then close the engine's HTTP client."""
    return asyncio.run(_review_and_close(engine, requests, rewrite))


def run_review(engine: LLMEngine, request: ReviewRequest, *, rewrite: bool = True) -> Review:
    return run_reviews(engine, [request], rewrite=rewrite)[0]


def verdict(rule_id: str, value: str = "pass", reason: str = "Fine.") -> dict[str, Any]:
    return {"rule_id": rule_id, "verdict": value, "confidence": 0.9, "reason": reason}


def finding(rule_id: str, quote: str, **extra: Any) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "quote": quote,
        "message": "This asks without giving.",
        "suggestion": "Offer something first.",
        **extra,
    }


def review_body(
    *,
    rules: list[dict[str, Any]] | None = None,
    findings: list[dict[str, Any]] | None = None,
    rewrite: str | None = "Hi Dana, how is the procurement reorganisation going?",
    summary: str = "The draft asks for an intro and offers nothing.",
) -> dict[str, Any]:
    """A schema-valid answer for ASK_DRAFT and the default rulebook."""
    if rules is None:
        rules = [verdict(rule_id) for rule_id in DEFAULT_RULE_IDS]
        rules[1] = verdict("give-first", "fail", "It asks for an intro and gives nothing.")
    if findings is None:
        findings = [finding("give-first", "introduce me to your head of procurement")]
    return {
        "rules": rules,
        "findings": findings,
        "summary": summary,
        "suggestions": {"questions": ["How is the new team settling in?"], "offers": []},
        "rewrite": None
        if rewrite is None
        else {"text": rewrite, "changes": ["Asked about them instead."]},
    }


def completion(
    content: str | dict[str, Any] | None = None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    prompt_tokens: int = 1200,
    completion_tokens: int = 300,
    cached_tokens: int = 1024,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An OpenAI chat.completions response; `content` defaults to `review_body()`."""
    if content is None:
        content = review_body()
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    message: dict[str, Any] = {"role": "assistant", "content": None if refusal else text}
    if refusal:
        message["refusal"] = refusal
    return httpx.Response(
        status,
        headers=headers,
        json={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            },
        },
    )


def error(status: int, code: str = "server_error", **headers: str) -> httpx.Response:
    """An OpenAI-style error response."""
    return httpx.Response(
        status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        json={"error": {"message": f"fake {status}", "type": code, "param": None, "code": code}},
    )


@contextmanager
def mock_llm() -> Iterator[respx.MockRouter]:
    """A respx router for the fake endpoint; any other request fails (no network)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    """The JSON body of one request the route received."""
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def copy_prompts(tmp_path: Path) -> Path:
    """A private copy of prompts/ (review/v1) to edit; returns the new prompts dir."""
    target = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR / "review" / "v1", target / "review" / "v1")
    return target


#: A custom rulebook: extends the default, disables one rule, adds one.
CUSTOM_RULEBOOK_YAML = """
version: acme-7
extends: default
overrides:
  volunteer-to-lead: {enabled: false}
rules:
  - id: no-buzzwords
    title: {en: "Plain words, no buzzwords", he: "מילים פשוטות"}
    principle: {en: "Buzzwords hide what you mean.", he: "באזוורדס מסתירים כוונה."}
    fails_when: {en: "The draft uses synergy-speak.", he: "הטיוטה משתמשת בז'רגון."}
    passes_when: {en: "The draft says it plainly.", he: "הטיוטה אומרת זאת פשוט."}
    examples:
      fail: [{language: en, text: "Let's leverage synergies."}]
      pass: [{language: en, text: "Let's work on it together."}]
    severity: warning
    applies_to: [message, template]
    fix: {en: "Say it plainly.", he: "אמרו זאת פשוט."}
    detect:
      en: {fail: ['synerg\\w*']}
"""


def custom_rulebook() -> Rulebook:
    return parse_rulebook(CUSTOM_RULEBOOK_YAML, source="test rulebook")
