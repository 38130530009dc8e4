"""POST /v1/reviews: success, engines, limits and the problems a review can end in."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx

from api.conftest import (
    GOOD_DRAFT,
    LLM_SETTINGS,
    BrokenService,
    Client,
    HeldLLM,
    MakeClient,
    MemoryStore,
    ScriptedService,
    asgi_request,
    llm_review_from,
    make_settings,
)
from coach.api import create_app
from coach.errors import LLMProviderError
from coach.models import MAX_TEXT_CHARS, Review, ReviewRequest
from coach.service import ReviewService

PROBLEM = "application/problem+json"
BAD_DRAFT = "Could you introduce me to your head of procurement?"


def test_review_with_the_rule_engine(client: Client, auth: dict[str, str]) -> None:
    response = client.post("/v1/reviews", json={"text": BAD_DRAFT}, headers=auth)
    assert response.status_code == 200
    review = Review.model_validate(response.json())
    assert review.engine == "rules"
    assert not review.degraded
    assert review.verdict("give-first") is not None
    assert review.rewrite is not None


def test_review_options_pass_through(client: Client, auth: dict[str, str]) -> None:
    body = {
        "text": GOOD_DRAFT,
        "kind": "message",
        "language": "en",
        "rewrite": False,
        "engine": "auto",  # no LLM configured: the rule engine
        "context": {"relationship": "met", "thread": [{"from": "them", "text": "Hi!"}]},
    }
    response = client.post("/v1/reviews", json=body, headers=auth)
    assert response.status_code == 200
    review = response.json()
    assert review["engine"] == "rules"
    assert review["rewrite"] is None
    assert review["language"] == "en"


def test_llm_engine_not_configured_is_a_422_problem(client: Client, auth: dict[str, str]) -> None:
    response = client.post("/v1/reviews", json={"text": "Hi", "engine": "llm"}, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "https://coach.dev/problems/unprocessable"
    assert "not configured" in response.json()["detail"]


def test_llm_review_records_tokens(
    make_client: MakeClient, auth: dict[str, str], capsys: Any
) -> None:
    async def llm(request: ReviewRequest, rewrite: bool) -> Review:
        rules = await ReviewService().review(request, rewrite=rewrite)
        return llm_review_from(rules, tokens_in=321, tokens_out=54)

    client = make_client(service=ScriptedService(llm))
    response = client.post("/v1/reviews", json={"text": GOOD_DRAFT, "engine": "llm"}, headers=auth)
    assert response.status_code == 200
    assert response.json()["engine"] == "llm"
    assert response.json()["usage"]["tokens_in"] == 321
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if '"route": "/v1/reviews"' in line)
    assert '"tokens_in": 321' in line and '"tokens_out": 54' in line
    assert '"engine": "llm"' in line and '"degraded": false' in line
    metrics = client.get("/metrics").text
    assert 'coach_llm_tokens_total{kind="in"} 321.0' in metrics
    assert "coach_llm_calls_total 1.0" in metrics
    assert 'coach_reviews_total{engine="llm",verdict="pass"} 1.0' in metrics


def test_unreachable_llm_degrades_to_rules_with_200(
    make_client: MakeClient, auth: dict[str, str]
) -> None:
    client = make_client(
        llm_base_url="http://127.0.0.1:9/v1",
        llm_model="gpt-4o-mini",
        llm_timeout_s=0.5,
        llm_deadline_s=1.0,
        llm_max_attempts=1,
    )
    response = client.post("/v1/reviews", json={"text": BAD_DRAFT, "engine": "llm"}, headers=auth)
    assert response.status_code == 200
    review = response.json()
    assert review["degraded"] is True
    assert review["engine"] == "rules"
    metrics = client.get("/metrics").text
    assert "coach_fallbacks_total{reason=" in metrics
    assert "coach_llm_errors_total{code=" in metrics


def test_llm_busy_falls_back_to_rules_degraded(store: MemoryStore, api_key: str) -> None:
    """With every LLM slot of the tenant taken, a review waits `llm_wait_s`, then the rule
    engine answers with degraded=true and reason llm_busy (never a 429 or a 500)."""
    held = HeldLLM()

    service = ScriptedService(held)
    app = create_app(
        make_settings(llm_concurrency_per_tenant=1, **LLM_SETTINGS),
        store=store,
        service=service,
        llm_wait_s=0.05,
    )
    auth = {"Authorization": f"Bearer {api_key}"}
    body = {"text": GOOD_DRAFT, "engine": "llm"}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        # One event loop for the app and both requests (Litestar's test clients run the app
        # in a thread of their own, one request at a time).
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/reviews", json=body, headers=auth))
            await asyncio.wait_for(held.started.wait(), 5)
            second = await client.post("/v1/reviews", json=body, headers=auth)
            held.release.set()
            done = await first
            metrics = (await client.get("/metrics")).text
            return done.json(), second.json(), metrics

    first, second, metrics = asyncio.run(scenario())
    assert first["engine"] == "llm" and not first["degraded"]
    assert second["degraded"] is True
    assert second["degraded_reason"].startswith("llm_busy:")
    assert service.llm_calls == 1
    assert 'coach_fallbacks_total{reason="llm_busy"} 1.0' in metrics


def test_body_over_64_kib_is_413(client: Client, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/reviews",
        content=b'{"text": "' + b"a" * (70 * 1024) + b'"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/body-too-large"
    assert problem["status"] == 413
    assert problem["limit"] == 65536


def test_chunked_body_over_64_kib_is_413(store: MemoryStore, api_key: str) -> None:
    """No Content-Length: the bytes are counted as they arrive."""
    app = create_app(make_settings(), store=store)
    chunk = b"a" * (16 * 1024)
    result = asyncio.run(
        asgi_request(
            app,
            "POST",
            "/v1/reviews",
            headers=[
                ("authorization", f"Bearer {api_key}"),
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
            ],
            chunks=[b'{"text": "', *([chunk] * 5), b'"}'],
        )
    )
    assert result.status == 413
    assert result.headers["content-type"] == PROBLEM
    assert result.json()["type"] == "https://coach.dev/problems/body-too-large"


def test_draft_over_the_limit_is_422_naming_field_and_limit(
    client: Client, auth: dict[str, str]
) -> None:
    text = "word " * (MAX_TEXT_CHARS // 5) + "tail"
    assert len(text) > MAX_TEXT_CHARS
    response = client.post("/v1/reviews", json={"text": text}, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/draft-too-long"
    assert problem["field"] == "text"
    assert problem["limit"] == MAX_TEXT_CHARS
    assert str(MAX_TEXT_CHARS) in problem["detail"]
    assert "word" not in response.text


def test_malformed_json_is_400(client: Client, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/reviews",
        content=b'{"text": "Hi there, unterminated',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/malformed-json"
    assert set(problem) >= {"type", "title", "status", "detail"}
    assert "unterminated" not in response.text


def test_validation_errors_list_fields_without_values(client: Client, auth: dict[str, str]) -> None:
    body = {
        "text": "   ",
        "kind": "sonnet-of-secrets",
        "engine": "gpt-secret-engine",
        "rewrite": "maybe-secret",
        "surprise": "secret-extra",
        "context": {"thread": [{"from": "secret-sender", "text": "secret thread"}]},
    }
    response = client.post("/v1/reviews", json=body, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/validation"
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert set(fields) == {"text", "kind", "engine", "rewrite", "surprise", "context.thread.0.from"}
    assert fields["surprise"] == "not an allowed field"
    assert fields["kind"].startswith("must be one of")
    assert "secret" not in response.text


def test_missing_body_and_non_object_body_are_422(client: Client, auth: dict[str, str]) -> None:
    for content in (b"", b"[1, 2]", b"null", b'"text"'):
        response = client.post(
            "/v1/reviews", content=content, headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, content
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["errors"], content


def test_unhandled_exception_is_a_500_problem_without_leaks(
    make_client: MakeClient, auth: dict[str, str], capsys: Any
) -> None:
    client = make_client(service=BrokenService(lambda r: RuntimeError(f"boom: {r.text}")))
    response = client.post("/v1/reviews", json={"text": "a very private draft"}, headers=auth)
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/internal"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "private" not in response.text and "boom" not in response.text
    assert "Traceback" not in response.text
    err = capsys.readouterr().err
    assert '"error": "RuntimeError"' in err
    assert "private" not in err and "Traceback" not in err
    assert 'coach_unhandled_exceptions_total{exception="RuntimeError"} 1.0' in (
        client.get("/metrics").text
    )


def test_an_llm_error_escaping_the_service_is_not_a_500(
    make_client: MakeClient, auth: dict[str, str]
) -> None:
    client = make_client(service=BrokenService(lambda r: LLMProviderError("upstream said no")))
    response = client.post("/v1/reviews", json={"text": GOOD_DRAFT}, headers=auth)
    assert response.status_code == 503
    assert response.json()["type"] == "https://coach.dev/problems/llm-unavailable"
