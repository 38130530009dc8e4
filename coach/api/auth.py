"""API keys: `Authorization: Bearer <key>`, checked against the store on every request.

Public: the routes marked `opt={"public": True}` (/healthz, /readyz, /metrics), the OpenAPI
documents under /schema, and every OPTIONS request (CORS preflight needs no key). A missing,
unknown, malformed or revoked key gets a 401 problem with `WWW-Authenticate: Bearer`; a revoked
key stops working on the next request (nothing is cached here).

With `auth` off (local development only) every request runs as the tenant "local".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from coach.api.context import request_info
from coach.api.problems import ApiProblem
from coach.store.base import Principal, Store

__all__ = ["LOCAL_PRINCIPAL", "PUBLIC", "AuthMiddleware", "bearer_key", "principal_of"]

#: The `opt` key that marks a route handler as needing no API key.
PUBLIC = "public"

LOCAL_PRINCIPAL = Principal(tenant="local", key_id="local", prefix="local")

_MAX_KEY_CHARS = 256
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def bearer_key(scope: Scope) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None when absent or malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key or len(key) > _MAX_KEY_CHARS or " " in key:
                return None
            return key
    return None


def principal_of(scope: Any) -> Principal:
    """The caller of an authenticated route."""
    principal = scope.get("user")
    if not isinstance(principal, Principal):  # pragma: no cover - the middleware guarantees it
        raise ApiProblem("unauthorized", "a valid API key is required", headers=_CHALLENGE)
    return principal


def _needs_no_key(scope: Scope) -> bool:
    """CORS preflights (any OPTIONS) and the OpenAPI documents under /schema."""
    if scope.get("method") == "OPTIONS":
        return True
    path = str(scope.get("path", ""))
    return path == "/schema" or path.startswith("/schema/")


class AuthMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_opt_key = PUBLIC

    def __init__(self, *, enabled: bool, store: Callable[[], Store | None]) -> None:
        self.enabled = enabled
        self.store = store
        self.should_bypass_for_scope = _needs_no_key

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = await self._authenticate(scope) if self.enabled else LOCAL_PRINCIPAL
        scope["user"] = principal
        request_info(scope).tenant = principal.tenant
        await next_app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal:
        has_header = any(name == b"authorization" for name, _ in scope.get("headers", ()))
        key = bearer_key(scope)
        if key is None:
            if has_header:
                raise ApiProblem(
                    "unauthorized",
                    "the Authorization header must be 'Bearer <key>'",
                    headers=_INVALID,
                )
            raise ApiProblem(
                "unauthorized",
                "an API key is required: Authorization: Bearer <key>",
                headers=_CHALLENGE,
            )
        store = self.store()
        if store is None:
            raise ApiProblem("not-ready", "the key store is not open yet")
        try:
            principal = await store.authenticate(key)
        except Exception as exc:
            request_info(scope).error = exc.__class__.__name__
            raise ApiProblem("not-ready", "the key store is unavailable") from None
        if principal is None:
            raise ApiProblem("unauthorized", "the API key is unknown or revoked", headers=_INVALID)
        return principal
