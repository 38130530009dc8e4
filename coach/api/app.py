"""The app factory. Nothing is built at import time: `create_app(settings)` builds everything.

Layers of a request, outside in:

    RequestLogMiddleware   request id, one JSON log line, HTTP metrics (also for 404/405)
    _PreflightGuard        refuses CORS preflights from origins not on the allow-list
    Litestar's CORS        Access-Control-* headers for allowed origins only
    routing                -> 404 / 405 problems
    AuthMiddleware         Bearer key -> Principal (skips public routes, /schema, OPTIONS)
    RateLimitMiddleware    token bucket per API key
    controllers            -> ReviewService
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin
from litestar.types import ASGIApp, Receive, Scope, Send

from coach.api.auth import AuthMiddleware
from coach.api.context import ApiState, request_info
from coach.api.controllers import HealthController, ReviewController, RulesController
from coach.api.controllers.batches import BatchController
from coach.api.controllers.webhooks import WebhookController
from coach.api.limits import Limiter, RateLimiter, RateLimitMiddleware, TenantSlots
from coach.api.logging import REQUEST_ID_HEADER, RequestLogMiddleware
from coach.api.metrics import ApiMetrics
from coach.api.problems import MAX_BODY_BYTES, ApiProblem, problem_response, send_problem
from coach.logs import configure_logging, get_logger
from coach.service import ReviewService
from coach.settings import Settings
from coach.store.base import Store

if TYPE_CHECKING:
    from coach.batch.presence import Presence

__all__ = ["DEFAULT_LLM_WAIT_S", "create_app"]

#: How long an LLM review waits for one of its tenant's slots before falling back to rules.
DEFAULT_LLM_WAIT_S = 2.0

_CORS_METHODS = ["GET", "POST", "OPTIONS"]
_CORS_HEADERS = ["Authorization", "Content-Type", REQUEST_ID_HEADER]
_CORS_SAFELISTED = {"accept", "accept-language", "content-language", "content-type"}
_CORS_EXPOSE = [
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    REQUEST_ID_HEADER,
]

_DESCRIPTION = """Reviews networking outreach drafts against a rulebook built on giving first.

Authenticate with `Authorization: Bearer <key>` (`coach keys create --tenant NAME`). Every error
is an RFC 9457 problem document (`application/problem+json`) whose `type` is stable.
"""


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    service: ReviewService | None = None,
    llm_wait_s: float = DEFAULT_LLM_WAIT_S,
    configure_logs: bool = True,
    run_worker: bool | None = None,
) -> Litestar:
    """The HTTP API. `store` and `service` are for tests and embedding: without them the app
    opens the store (`coach.store.open_store`) in its lifespan and builds a `ReviewService`.

    `run_worker` (default: COACH_WORKER_IN_PROCESS) runs a batch worker and the webhook sender
    inside the app's process, so the embedded default needs no `coach worker`. Either way, with
    an LLM configured the process checks in among the batch workers sharing the LLM's rate
    budget (`coach.batch.presence`), so its interactive LLM reviews get their share of it."""
    if run_worker is None:
        run_worker = settings.worker_in_process
    log = get_logger("coach.api")
    api = ApiState(
        settings=settings,
        service=service or ReviewService(settings=settings),
        metrics=ApiMetrics(),
        limiter=_limiter(settings),
        slots=TenantSlots(settings.llm_concurrency_per_tenant, wait_s=llm_wait_s),
        store=store,
    )
    owns_service = service is None

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging(settings.log_level)
        if not settings.auth:
            log.warning(
                "auth_disabled",
                message="API key authentication is OFF (COACH_AUTH=off): every request runs "
                "as tenant 'local'. Use this for local development only.",
            )
        wildcard = [o for o in settings.cors_origins if "*" in o]
        if wildcard:
            log.warning("cors_wildcard", origins=wildcard)
        # Semaphores belong to the running loop: make them here, not at build time.
        api.slots = TenantSlots.for_app(settings, api.limiter, wait_s=llm_wait_s)
        opened: Store | None = None
        if api.store is None:
            opened = api.store = await _open_store(settings)
        background = _start_worker(settings, api) if run_worker else None
        # The worker's presence already speaks for this process (it counts the interactive
        # reviews too): a second one would count the process twice.
        presence = await _start_presence(api) if background is None else None
        try:
            yield
        finally:
            if background is not None:
                await _stop_worker(*background)
            if presence is not None:
                await presence.stop()
            closer = getattr(api.limiter, "aclose", None)
            if closer is not None:
                await closer()
            if opened is not None:
                api.store = None
                await opened.close()
            if owns_service:
                await _close_service(api.service)

    cors = _cors_config(settings)
    app = Litestar(
        route_handlers=[
            ReviewController,
            RulesController,
            HealthController,
            BatchController,
            WebhookController,
        ],
        dependencies={"api": Provide(lambda: api, sync_to_thread=False)},
        middleware=[
            AuthMiddleware(enabled=settings.auth, store=lambda: api.store),
            RateLimitMiddleware(api.limiter),
        ],
        exception_handlers={Exception: problem_response},
        cors_config=cors,
        openapi_config=_openapi_config(),
        plugins=[PydanticPlugin(prefer_alias=True)],
        request_max_body_size=MAX_BODY_BYTES,
        lifespan=[lifespan],
        logging_config=None,  # no Litestar request/response (body) logging, no tracebacks
        debug=False,
    )
    app.state["api"] = api
    # Outside routing, so that 404/405 and refused preflights are logged and counted too.
    app.asgi_handler = RequestLogMiddleware(
        _PreflightGuard(app.asgi_handler, cors), metrics=api.metrics
    )
    return app


def _cors_config(settings: Settings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=cast(Any, _CORS_METHODS),
        allow_headers=list(_CORS_HEADERS),
        expose_headers=list(_CORS_EXPOSE),
        allow_credentials=False,
        max_age=600,
    )


def _openapi_config() -> OpenAPIConfig:
    try:
        app_version = version("coach")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        app_version = "0.0.0"
    return OpenAPIConfig(
        title="coach",
        version=app_version,
        description=_DESCRIPTION,
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key: `Authorization: Bearer coach_…`.",
                )
            }
        ),
    )


def _limiter(settings: Settings) -> Limiter:
    """The per-key rate limit: shared in Redis with COACH_REDIS_URL, else this process's own."""
    if settings.redis_url:
        from coach.api.shared_limits import RedisRateLimiter

        return RedisRateLimiter(settings.redis_url, settings.rate_limit_per_minute)
    return RateLimiter(settings.rate_limit_per_minute)


async def _open_store(settings: Settings) -> Store:
    # Imported here: the store (SQLAlchemy, migrations) is only needed by a running server.
    from coach.store import open_store

    return await open_store(settings)


async def _close_service(service: ReviewService) -> None:
    await service.aclose()


def _start_worker(
    settings: Settings, api: ApiState
) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    from coach.batch.background import BackgroundWorkers
    from coach.store.batches import BatchStore

    if not isinstance(api.store, BatchStore):
        return None
    stop = asyncio.Event()
    workers = BackgroundWorkers(api.store, api.service, settings)
    return stop, asyncio.create_task(workers.run(stop=stop))


async def _start_presence(api: ApiState) -> Presence | None:
    """Without a worker, the process still draws on the LLM's rate budget with its interactive
    reviews: check in like a worker, so that it paces them at its share and the workers of its
    pool count it while it reviews. None when there is no LLM or no store to check in to."""
    from coach.batch.presence import process_presence
    from coach.batch.worker import default_owner
    from coach.store.workers import WorkerStore

    if not api.service.settings.llm_configured or not isinstance(api.store, WorkerStore):
        return None
    presence = process_presence(api.store, api.service, default_owner())
    # A failed check-in only logs (the database may come back): start-up goes on regardless.
    await presence.start()
    return presence


async def _stop_worker(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    # Items in flight are handed back to the queue (see Worker.run), not lost.
    stop.set()
    await asyncio.gather(task, return_exceptions=True)


class _PreflightGuard:
    """Answers a CORS preflight that will not be allowed with a 403 problem (no
    Access-Control-Allow-Origin), instead of Litestar's plain-text 400."""

    def __init__(self, app: ASGIApp, cors: CORSConfig | None) -> None:
        self.app = app
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "OPTIONS":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            method = headers.get("access-control-request-method")
            if origin and method and (reason := self._refusal(origin, method, headers)):
                await send_problem(
                    send,
                    ApiProblem("cors-refused", reason),
                    request_info(scope).request_id or None,
                )
                return
        await self.app(scope, receive, send)

    def _refusal(self, origin: str, method: str, headers: dict[str, str]) -> str | None:
        if self.cors is None or not self.cors.is_origin_allowed(origin):
            return "this origin is not allowed"
        if method.upper() not in _CORS_METHODS:
            return "this method is not allowed cross-origin"
        allowed = {h.lower() for h in _CORS_HEADERS} | _CORS_SAFELISTED
        asked = headers.get("access-control-request-headers", "")
        if any(h.strip().lower() not in allowed for h in asked.split(",") if h.strip()):
            return "a requested header is not allowed cross-origin"
        return None
