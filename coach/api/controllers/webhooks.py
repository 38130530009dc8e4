"""GET /v1/webhooks/secret: the caller's webhook signing secret, so a tenant can set up its
receiver without asking the operator (who can also print it: `coach keys webhook-secret`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from coach.api.auth import principal_of
from coach.api.context import Api
from coach.api.problems import ApiProblem
from coach.api.schemas import BEARER, WebhookSecret, problems
from coach.webhooks import tenant_secrets

__all__ = ["WebhookController"]


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]  # noqa: RUF012
    security = BEARER

    @get(
        "/secret",
        summary="Your webhook signing secret",
        description="The secret(s) your receiver verifies coach's events with (Standard "
        "Webhooks). Each tenant has its own, derived from the server's; another tenant's key "
        "gets another secret.",
        responses=problems(401, 404, 429),
    )
    async def secret(self, request: Request[Any, Any, Any], api: Api) -> WebhookSecret:
        configured = api.settings.webhook_secrets
        if not configured:
            raise ApiProblem("not-found", "webhooks are not configured on this server")
        tenant = principal_of(request.scope).tenant
        return WebhookSecret(secrets=tenant_secrets(configured, tenant))
