"""GET /healthz, GET /readyz, GET /metrics: public (no API key)."""

from __future__ import annotations

import asyncio

from litestar import Controller, MediaType, Response, get

from coach.api.auth import PUBLIC
from coach.api.context import Api
from coach.api.metrics import CONTENT_TYPE
from coach.api.problems import ApiProblem
from coach.api.schemas import Health, Readiness, problems
from coach.store.base import Store

__all__ = ["PING_TIMEOUT_S", "HealthController"]

#: How long /readyz waits for the database.
PING_TIMEOUT_S = 2.0


async def _ping(store: Store | None) -> bool:
    if store is None:
        return False
    try:
        return bool(await asyncio.wait_for(store.ping(), timeout=PING_TIMEOUT_S))
    except Exception:
        return False


class HealthController(Controller):
    path = "/"
    tags = ["operations"]  # noqa: RUF012
    opt = {PUBLIC: True}  # noqa: RUF012

    @get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> Health:
        return Health()

    @get(
        "/readyz",
        summary="Readiness: the database answers; whether an LLM is configured",
        responses=problems(503),
    )
    async def readyz(self, api: Api) -> Readiness:
        ok = await _ping(api.store)
        llm = api.settings.llm_configured
        if not ok:
            raise ApiProblem(
                "not-ready",
                "the database does not answer",
                members={"store": False, "llm_configured": llm},
            )
        return Readiness(
            status="ready",
            store=True,
            llm_configured=llm,
            rulebook_version=api.service.rulebook.version,
        )

    @get(
        "/metrics",
        summary="Prometheus metrics",
        media_type=MediaType.TEXT,
    )
    async def metrics(self, api: Api) -> Response[bytes]:
        return Response(content=api.metrics.render(), media_type=CONTENT_TYPE)
