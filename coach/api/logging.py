"""One structlog JSON line and the HTTP metrics for every request.

`RequestLogMiddleware` wraps the whole app (outside routing, so a 404 or 405 is logged and
counted too). It gives each request an id (the client's `X-Request-ID` when it is a plain token,
else a new one), echoes it in `X-Request-ID`, adds the headers the inner layers asked for
(rate limit state), and logs:

    {"event": "request", "request_id": "…", "tenant": "acme", "method": "POST",
     "route": "/v1/reviews", "status": 200, "ms": 12.3, "engine": "llm", "tokens_in": 812,
     "tokens_out": 240, "degraded": false, ...}

Never a body, a draft, a rewrite, a query string or a header value other than the request id.
Litestar's own request/response logging is not used (the app is built with
`logging_config=None`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from coach.api.context import RequestInfo, request_info
from coach.api.metrics import UNMATCHED_ROUTE, ApiMetrics, reason_code
from coach.api.problems import ApiProblem, send_problem
from coach.logs import get_logger

__all__ = ["REQUEST_ID_HEADER", "RequestLogMiddleware"]

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = get_logger("coach.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = request_info(scope)
        info.request_id = _client_request_id(scope) or uuid.uuid4().hex
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                message["headers"] = _with_layer_headers(
                    message.get("headers", ()), info.request_id, info.headers
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Litestar's exception handling failed too: answer with a bare problem if we can.
            info.error = info.error or exc.__class__.__name__
            if not response_started:
                await send_problem(
                    send_wrapper,
                    ApiProblem("internal", "an unexpected error occurred; quote the request id"),
                    info.request_id,
                )
        finally:
            self._finish(scope, info, status, time.perf_counter() - started)

    def _finish(self, scope: Scope, info: RequestInfo, status: int, seconds: float) -> None:
        route = _route(scope)
        method = str(scope.get("method", ""))
        self.metrics.observe_request(route, method, status, seconds)
        if info.error:
            self.metrics.observe_exception(info.error)
        fields: dict[str, Any] = {
            "request_id": info.request_id,
            "tenant": info.tenant,
            "method": method,
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 2),
        }
        if info.engine is not None:
            fields["engine"] = info.engine
            fields["degraded"] = bool(info.degraded)
            if info.degraded:
                fields["degraded_reason"] = reason_code(info.degraded_reason)
        if info.tokens_in is not None:
            fields["tokens_in"] = info.tokens_in
            fields["tokens_out"] = info.tokens_out
        if info.error:
            fields["error"] = info.error
        if status >= 500:
            self.log.error("request", **fields)
        else:
            self.log.info("request", **fields)


def _with_layer_headers(
    sent: Iterable[tuple[bytes, bytes]], request_id: str, extra: dict[str, str]
) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id (replacing any, in the first one's place)
    and each of `extra` the response does not already have (names compared in any case).

    One pass over plain byte pairs: Litestar's MutableScopeHeaders decodes and lower-cases
    every header name again for each lookup, which cost more than the rest of this layer."""
    headers: list[tuple[bytes, bytes]] = []
    present: set[bytes] = set()
    request_id_at = -1
    for name, value in sent:
        lowered = name.lower()
        if lowered == _REQUEST_ID_NAME:
            if request_id_at < 0:
                request_id_at = len(headers)
                headers.append((lowered, b""))
            continue
        present.add(lowered)
        headers.append((name, value))
    own = (_REQUEST_ID_NAME, request_id.encode("latin-1"))
    if request_id_at < 0:
        headers.append(own)
    else:
        headers[request_id_at] = own
    for key, text in extra.items():
        lowered = key.lower().encode("latin-1")
        if lowered not in present and lowered != _REQUEST_ID_NAME:
            present.add(lowered)
            headers.append((lowered, text.encode("latin-1")))
    return headers


def _route(scope: Scope) -> str:
    # Set by Litestar's router once a route matched: the template, never the raw path.
    template = scope.get("path_template")
    if isinstance(template, str) and template and scope.get("route_handler") is not None:
        return template
    return UNMATCHED_ROUTE
