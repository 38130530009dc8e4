"""POST /v1/reviews and POST /v1/reviews/stream.

Both call `ReviewService` and nothing else. LLM reviews are bounded per tenant
(`TenantSlots`): when all of a tenant's slots stay busy for `wait_s`, the review is done by the
rule engine and returned as `degraded: true`, `degraded_reason: "llm_busy: …"` — the same
contract as an LLM failure, so a client handles one case, never a 429 it must retry.

The stream answers with server-sent events:

    event: rules      the rule engine's review (at once)
    event: review     the LLM review, when one was asked for and succeeded
    event: degraded   instead of `review`: the LLM failed or was busy; the rule engine's review
                      with `degraded_reason`
    event: error      an unexpected failure after the stream started (a problem document;
                      a failure before it started is a problem response as usual)

With engine "rules" (or "auto" without an LLM) the stream ends after `rules`. A client that
disconnects cancels the LLM call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from coach.api.auth import principal_of
from coach.api.context import Api, request_info
from coach.api.limits import TenantSlots
from coach.api.metrics import ApiMetrics
from coach.api.problems import problem_for
from coach.api.schemas import BEARER, ReviewCreate, problems
from coach.models import Review
from coach.service import ReviewService

__all__ = ["LLM_BUSY", "ReviewController", "review_events", "run_review"]

LLM_BUSY = (
    "llm_busy: all of this tenant's concurrent LLM reviews are in use; "
    "reviewed by the rule engine instead"
)

AnyRequest = Request[Any, Any, Any]


async def run_review(
    data: ReviewCreate, *, engine: str, service: ReviewService, slots: TenantSlots, tenant: str
) -> Review:
    """One review with the engine already resolved ("rules" or "llm")."""
    request = data.to_request()
    if engine != "llm":
        return await service.review(request, engine=engine, rewrite=data.rewrite)
    async with slots.slot(tenant) as acquired:
        if acquired:
            return await service.review(request, engine="llm", rewrite=data.rewrite)
    review = await service.review(request, engine="rules", rewrite=data.rewrite)
    return review.model_copy(update={"degraded": True, "degraded_reason": LLM_BUSY})


def _record(scope: Any, metrics: ApiMetrics, review: Review) -> None:
    metrics.observe_review(review)
    info = request_info(scope)
    info.engine = review.engine if not review.degraded else "llm"
    info.degraded = review.degraded
    info.degraded_reason = review.degraded_reason
    if review.usage is not None:
        info.tokens_in = (info.tokens_in or 0) + review.usage.tokens_in
        info.tokens_out = (info.tokens_out or 0) + review.usage.tokens_out


async def review_events(
    data: ReviewCreate,
    first: Review,
    *,
    engine: str,
    service: ReviewService,
    slots: TenantSlots,
    tenant: str,
    metrics: ApiMetrics,
    scope: Any,
) -> AsyncIterator[ServerSentEventMessage]:
    upstream: asyncio.Task[Review] | None = None
    delivered = False
    try:
        if engine == "llm":
            upstream = asyncio.create_task(
                run_review(data, engine="llm", service=service, slots=slots, tenant=tenant)
            )
        yield ServerSentEventMessage(event="rules", data=first.model_dump_json())
        if upstream is None:
            return
        final = await upstream
        delivered = True
        _record(scope, metrics, final)
        event = "degraded" if final.degraded else "review"
        yield ServerSentEventMessage(event=event, data=final.model_dump_json())
    except Exception as exc:
        # The 200 and maybe the first event are out: report the failure as an event.
        problem = problem_for(exc)
        info = request_info(scope)
        info.error = info.error or exc.__class__.__name__
        body = problem.body(info.request_id or None)
        yield ServerSentEventMessage(event="error", data=json.dumps(body, ensure_ascii=False))
    except (asyncio.CancelledError, GeneratorExit):
        # The client left (Litestar cancels the stream on http.disconnect).
        if upstream is not None and not delivered:
            metrics.streams_cancelled.inc()
        raise
    finally:
        # Awaiting the task propagates a cancellation to it; this also covers a close of the
        # generator before it got there.
        if upstream is not None and not upstream.done():
            upstream.cancel()


class ReviewController(Controller):
    path = "/v1/reviews"
    tags = ["reviews"]  # noqa: RUF012
    security = BEARER

    @post(
        "/",
        status_code=200,
        summary="Review a draft",
        description="Reviews a networking draft against the rulebook. An LLM failure never "
        "fails the request: the rule engine's review comes back with `degraded: true`.",
        responses=problems(400, 401, 413, 422, 429, 500),
    )
    async def create(
        self,
        request: AnyRequest,
        data: JSONBody[ReviewCreate],
        api: Api,
    ) -> Review:
        engine = api.service.resolve(data.engine)
        tenant = principal_of(request.scope).tenant
        review = await run_review(
            data, engine=engine, service=api.service, slots=api.slots, tenant=tenant
        )
        _record(request.scope, api.metrics, review)
        return review

    @post(
        "/stream",
        status_code=200,
        media_type="text/event-stream",
        summary="Review a draft, streamed as server-sent events",
        description="Events: `rules` (the rule engine's review, at once), then `review` (the "
        "LLM review) or `degraded` (the LLM failed or was busy). Each event's data is a Review "
        "as JSON. Closing the connection cancels the LLM call.",
        responses=problems(400, 401, 413, 422, 429, 500),
    )
    async def stream(
        self,
        request: AnyRequest,
        data: JSONBody[ReviewCreate],
        api: Api,
    ) -> ServerSentEvent:
        engine = api.service.resolve(data.engine)
        tenant = principal_of(request.scope).tenant
        # The rule engine's review before the 200: a failure here is still a problem response.
        first = await api.service.review(data.to_request(), engine="rules", rewrite=data.rewrite)
        _record(request.scope, api.metrics, first)
        return ServerSentEvent(
            review_events(
                data,
                first,
                engine=engine,
                service=api.service,
                slots=api.slots,
                tenant=tenant,
                metrics=api.metrics,
                scope=request.scope,
            ),
            headers={"X-Accel-Buffering": "no"},
        )
