"""Standard Webhooks signatures (https://www.standardwebhooks.com/): HMAC-SHA256 over
"{webhook-id}.{webhook-timestamp}.{body}", sent as `webhook-signature: v1,<base64>`.

The same module signs (delivery) and verifies (receivers, tests), so the two can never drift.
Errors name the header or the check that failed, never a secret, a signature or the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

from coach.errors import CoachError, ConfigError, InputError

__all__ = [
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "generate_secret",
    "sign",
    "signed_headers",
    "tenant_secret",
    "tenant_secrets",
    "verify",
]

SECRET_PREFIX = "whsec_"
_VERSION = "v1"
#: Bytes of key material in a generated secret (the spec asks for 24 to 64).
_SECRET_BYTES = 32
#: A timestamp longer than this is garbage, and refusing it early keeps int() cheap.
_MAX_TIMESTAMP_DIGITS = 12
#: Domain separation: the derived secrets are used for nothing but tenants' webhooks.
_TENANT_LABEL = b"coach webhook tenant\x00"


class WebhookVerificationError(CoachError):
    """A webhook did not pass verification; the message says which check failed."""


def generate_secret() -> str:
    """A new signing secret: "whsec_" + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def tenant_secret(secret: str, tenant: str) -> str:
    """The signing secret of one tenant, derived from the server's (HMAC-SHA256 of the tenant
    name under the server secret's key): each tenant verifies its own events, and none can sign
    events that another tenant's receiver would accept. Derived, not stored, so rotating the
    server secret rotates every tenant's."""
    digest = hmac.new(_key(secret), _TENANT_LABEL + tenant.encode("utf-8"), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(digest.digest()).decode("ascii")


def tenant_secrets(secrets_: str | Sequence[str], tenant: str) -> list[str]:
    """`tenant_secret` for each server secret (several during a rotation: newest first)."""
    return [tenant_secret(s, tenant) for s in _secrets(secrets_)]


def _key(secret: str) -> bytes:
    body = secret.strip()
    body = body.removeprefix(SECRET_PREFIX)
    try:
        # The reference libraries accept unpadded base64; extra padding is ignored by b64decode
        # only in non-validating mode, so pad exactly instead.
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("webhook secret: not base64 after the 'whsec_' prefix") from None
    if not key:
        raise ConfigError("webhook secret: empty")
    return key


def _check_id(msg_id: str) -> None:
    # The id travels in a header and is part of the signed string: printable ASCII without
    # spaces keeps it header-safe and the signed string unambiguous to every receiver library.
    if not msg_id or len(msg_id) > 256 or not all("!" <= ch <= "~" for ch in msg_id):
        raise InputError("webhook-id: must be 1-256 printable ASCII characters without spaces")


def _digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The signature of one message, "v1,<base64 HMAC-SHA256>"."""
    _check_id(msg_id)
    if timestamp < 0:
        raise InputError("webhook-timestamp: must not be negative")
    digest = _digest(_key(secret), msg_id, str(timestamp), body)
    return f"{_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _secrets(secret: str | Sequence[str]) -> list[str]:
    # A str is itself a Sequence[str]: without this test it would be split into characters.
    found = [secret] if isinstance(secret, str) else list(secret)
    if not found:
        raise ConfigError("webhook secret: none given")
    return found


def signed_headers(
    secret: str | Sequence[str],
    msg_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers of one delivery attempt. Several secrets give several space-separated
    signatures, so receivers on the old or the new secret both accept it during a rotation."""
    ts = int(time.time()) if timestamp is None else timestamp
    signature = " ".join(sign(s, msg_id, ts, body) for s in _secrets(secret))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def _candidates(header: str) -> list[bytes]:
    """The v1 signatures of a header; other versions (v1a asymmetric, future ones) and
    malformed entries are skipped, as the spec asks, so one bad entry cannot hide a good one."""
    found: list[bytes] = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or version != _VERSION:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook. Returns None when it is authentic and fresh, otherwise
    raises `WebhookVerificationError` with a one-line reason.

    `secret` may list several secrets (during a rotation); any of them may have signed any of
    the signatures in the header. `body` must be the raw request bytes, not re-serialised JSON.
    """
    keys = [_key(s) for s in _secrets(secret)]
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "").strip()
    raw_ts = lowered.get("webhook-timestamp", "").strip()
    header = lowered.get("webhook-signature", "")
    for name, value in (("webhook-id", msg_id), ("webhook-timestamp", raw_ts)):
        if not value:
            raise WebhookVerificationError(f"missing {name} header")
    if not header.strip():
        raise WebhookVerificationError("missing webhook-signature header")

    # Digits only: int() would also take "+1", " 1", "1_0" or a thousand digits.
    if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    # Freshness first: it is cheap, and a stale message must fail even if correctly signed
    # (that is what defeats a replay).
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too far in the future")

    candidates = _candidates(header)
    if not candidates:
        raise WebhookVerificationError("webhook-signature has no v1 signature")
    for key in keys:
        # The header's own digits are what the sender signed (even with a leading zero).
        expected = _digest(key, msg_id, raw_ts, body)
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return
    raise WebhookVerificationError("no matching signature")
