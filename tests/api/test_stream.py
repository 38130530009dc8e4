"""POST /v1/reviews/stream: event order, fallbacks, errors and cancellation."""

from __future__ import annotations

import asyncio
import json

from api.conftest import (
    GOOD_DRAFT,
    LLM_SETTINGS,
    AsgiResult,
    BrokenService,
    MakeClient,
    MemoryStore,
    ScriptedService,
    asgi_request,
    llm_review_from,
    make_settings,
    sse_events,
)
from coach.api import create_app
from coach.models import Review, ReviewRequest
from coach.service import ReviewService

BODY = {"text": GOOD_DRAFT, "engine": "llm"}


async def _llm_ok(request: ReviewRequest, rewrite: bool) -> Review:
    await asyncio.sleep(0.01)
    return llm_review_from(await ReviewService().review(request, rewrite=rewrite))


async def _llm_degraded(request: ReviewRequest, rewrite: bool) -> Review:
    review = await ReviewService().review(request, rewrite=rewrite)
    return review.model_copy(
        update={"degraded": True, "degraded_reason": "timeout: the review deadline passed"}
    )


def test_rules_first_then_the_llm_review(make_client: MakeClient, auth: dict[str, str]) -> None:
    client = make_client(service=ScriptedService(_llm_ok))
    response = client.post("/v1/reviews/stream", json=BODY, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["ratelimit-limit"] == "120"
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["rules", "review"]
    assert Review.model_validate_json(events[0][1]).engine == "rules"
    final = Review.model_validate_json(events[1][1])
    assert final.engine == "llm" and not final.degraded


def test_llm_failure_is_a_degraded_event(make_client: MakeClient, auth: dict[str, str]) -> None:
    client = make_client(service=ScriptedService(_llm_degraded))
    response = client.post("/v1/reviews/stream", json=BODY, headers=auth)
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["rules", "degraded"]
    degraded = json.loads(events[1][1])
    assert degraded["degraded"] is True
    assert degraded["degraded_reason"].startswith("timeout")


def test_rules_engine_streams_one_event(make_client: MakeClient, auth: dict[str, str]) -> None:
    client = make_client()
    response = client.post("/v1/reviews/stream", json={"text": GOOD_DRAFT}, headers=auth)
    assert [name for name, _ in sse_events(response.text)] == ["rules"]


def test_stream_validation_and_auth_are_problems(
    make_client: MakeClient, auth: dict[str, str]
) -> None:
    client = make_client()
    response = client.post("/v1/reviews/stream", json={"text": ""}, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    response = client.post("/v1/reviews/stream", json={"text": GOOD_DRAFT})
    assert response.status_code == 401


def test_failure_before_the_stream_starts_is_a_500_problem(
    make_client: MakeClient, auth: dict[str, str]
) -> None:
    client = make_client(service=BrokenService(lambda r: RuntimeError(r.text)))
    response = client.post("/v1/reviews/stream", json={"text": GOOD_DRAFT}, headers=auth)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://coach.dev/problems/internal"
    assert "DevDays" not in response.text


def test_failure_after_the_stream_started_is_an_error_event(
    make_client: MakeClient, auth: dict[str, str]
) -> None:
    async def broken_llm(request: ReviewRequest, rewrite: bool) -> Review:
        raise RuntimeError(f"exploded on {request.text}")

    client = make_client(service=ScriptedService(broken_llm))
    response = client.post("/v1/reviews/stream", json=BODY, headers=auth)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["rules", "error"]
    problem = json.loads(events[1][1])
    assert problem["type"] == "https://coach.dev/problems/internal"
    assert problem["status"] == 500
    assert "exploded" not in response.text


def test_client_disconnect_cancels_the_llm_call(store: MemoryStore, api_key: str) -> None:
    llm_started = asyncio.Event()
    llm_cancelled = asyncio.Event()

    async def endless_llm(request: ReviewRequest, rewrite: bool) -> Review:
        llm_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            llm_cancelled.set()
            raise
        raise AssertionError("not reached")  # pragma: no cover

    app = create_app(
        make_settings(**LLM_SETTINGS), store=store, service=ScriptedService(endless_llm)
    )
    body = json.dumps(BODY).encode()

    async def leave_after_first_event(result: AsgiResult) -> None:
        while b"event: rules" not in result.body:
            await asyncio.sleep(0.005)
        await llm_started.wait()

    async def scenario() -> tuple[AsgiResult, bool, str]:
        result = await asgi_request(
            app,
            "POST",
            "/v1/reviews/stream",
            headers=[
                ("authorization", f"Bearer {api_key}"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
            chunks=[body],
            disconnect_when=leave_after_first_event,
        )
        await asyncio.wait_for(llm_cancelled.wait(), 5)
        metrics = await asgi_request(app, "GET", "/metrics")
        return result, llm_cancelled.is_set(), metrics.body.decode()

    result, cancelled, metrics = asyncio.run(scenario())
    assert result.status == 200
    assert [name for name, _ in sse_events(result.body.decode())] == ["rules"]
    assert cancelled
    assert "coach_stream_cancellations_total 1.0" in metrics
