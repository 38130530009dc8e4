"""Outgoing webhooks in the Standard Webhooks format: signing and verification, target
checks against SSRF, and one delivery attempt with its retry verdict (docs/webhooks.md)."""

from __future__ import annotations

from coach.webhooks.delivery import Attempt, backoff, deliver
from coach.webhooks.signing import (
    WebhookVerificationError,
    generate_secret,
    sign,
    signed_headers,
    tenant_secret,
    tenant_secrets,
    verify,
)
from coach.webhooks.targets import check_resolved, check_url

__all__ = [
    "Attempt",
    "WebhookVerificationError",
    "backoff",
    "check_resolved",
    "check_url",
    "deliver",
    "generate_secret",
    "sign",
    "signed_headers",
    "tenant_secret",
    "tenant_secrets",
    "verify",
]
