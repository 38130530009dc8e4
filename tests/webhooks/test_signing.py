"""Standard Webhooks signatures: the published vector, tampering, freshness, rotation, and
interoperability with the reference Python library both ways."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from coach.errors import ConfigError, InputError
from coach.webhooks import (
    WebhookVerificationError,
    generate_secret,
    sign,
    signed_headers,
    tenant_secret,
    tenant_secrets,
    verify,
)

# The example published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"type":"batch.completed","data":{"batch_id":"b1"}}'


def _headers(secret: str = VECTOR_SECRET, ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return signed_headers(secret, "msg_1", body, timestamp=ts)


def test_sign_reproduces_the_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_verify_accepts_the_published_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
    }
    verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS)


def test_the_prefix_and_the_padding_are_optional_in_a_secret() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    unpadded = generate_secret().rstrip("=")
    verify(unpadded, signed_headers(unpadded, "m", BODY, timestamp=NOW), BODY, now=NOW)


def test_generated_secrets_are_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_signed_headers_carry_id_timestamp_signature_and_content_type() -> None:
    headers = signed_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_BODY, timestamp=VECTOR_TS)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
        "content-type": "application/json",
    }


def test_signed_headers_default_to_the_current_time() -> None:
    before = int(time.time())
    headers = signed_headers(VECTOR_SECRET, "m", BODY)
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    verify(VECTOR_SECRET, headers, BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("webhook-id", "msg_2"), ("webhook-timestamp", str(NOW + 1)), ("body", "tampered")],
)
def test_tampering_with_any_signed_part_is_rejected(field: str, value: str) -> None:
    headers = _headers()
    body = BODY
    if field == "body":
        body = BODY.replace(b"b1", b"b2")
    else:
        headers[field] = value
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(VECTOR_SECRET, headers, body, now=NOW)


def test_a_wrong_secret_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), _headers(), BODY, now=NOW)


@pytest.mark.parametrize(
    ("offset", "ok", "reason"),
    [
        (-300, True, ""),
        (300, True, ""),
        (-301, False, "too old"),
        (301, False, "future"),
    ],
)
def test_tolerance_applies_on_both_sides(offset: int, ok: bool, reason: str) -> None:
    # The message was signed at NOW; the receiver's clock reads NOW - offset.
    receiver_now = NOW - offset
    if ok:
        verify(VECTOR_SECRET, _headers(), BODY, now=receiver_now)
    else:
        with pytest.raises(WebhookVerificationError, match=reason):
            verify(VECTOR_SECRET, _headers(), BODY, now=receiver_now)


def test_a_custom_tolerance_is_honoured() -> None:
    verify(VECTOR_SECRET, _headers(), BODY, now=NOW + 3000, tolerance_s=3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, _headers(), BODY, now=NOW + 61, tolerance_s=60)


def test_a_stale_message_fails_even_when_correctly_signed() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, _headers(), BODY, now=NOW + 3600)


def test_any_of_several_signatures_may_match() -> None:
    headers = _headers()
    good = headers["webhook-signature"]
    other = sign(generate_secret(), "msg_1", NOW, BODY)
    for value in (f"{other} {good}", f"{good} {other}", f"v1a,abc v2,zzz v1,!!! {good}"):
        verify(VECTOR_SECRET, {**headers, "webhook-signature": value}, BODY, now=NOW)


def test_any_of_several_secrets_may_have_signed() -> None:
    old, new = generate_secret(), generate_secret()
    verify([new, old], _headers(secret=old), BODY, now=NOW)
    verify((new, old), _headers(secret=new), BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify([new], _headers(secret=old), BODY, now=NOW)


def test_signing_with_two_secrets_sends_two_signatures_each_verifiable_alone() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([old, new], "msg_1", BODY, timestamp=NOW)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, BODY, now=NOW)
    verify(new, headers, BODY, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in _headers().items()}
    assert "Webhook-Signature" in headers
    verify(VECTOR_SECRET, headers, BODY, now=NOW)
    verify(VECTOR_SECRET, {k.upper(): v for k, v in headers.items()}, BODY, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = _headers()
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing {missing} header"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("value", ["abc", "1.7e9", "-1", "+1700000000", "1_700_000_000", "9" * 40])
def test_a_timestamp_must_be_unix_seconds(value: str) -> None:
    headers = {**_headers(), "webhook-timestamp": value}
    with pytest.raises(WebhookVerificationError, match="not unix seconds"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("value", ["v2,abc", "garbage", "v1,not*base64"])
def test_a_header_without_a_usable_v1_signature_is_rejected(value: str) -> None:
    headers = {**_headers(), "webhook-signature": value}
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


def test_errors_never_quote_the_secret_or_the_signature() -> None:
    headers = _headers()
    with pytest.raises(WebhookVerificationError) as caught:
        verify(generate_secret(), headers, BODY, now=NOW)
    message = str(caught.value)
    assert headers["webhook-signature"].split(",")[1] not in message
    assert VECTOR_SECRET.removeprefix("whsec_") not in message


@pytest.mark.parametrize("secret", ["whsec_", "whsec_***", "", "whsec_a"])
def test_a_malformed_secret_is_a_config_error(secret: str) -> None:
    with pytest.raises(ConfigError, match="webhook secret"):
        sign(secret, "m", NOW, BODY)


def test_an_empty_list_of_secrets_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="none given"):
        verify([], _headers(), BODY, now=NOW)


@pytest.mark.parametrize("msg_id", ["", "with space", "new\nline", "é", "x" * 257])
def test_a_message_id_must_be_header_safe(msg_id: str) -> None:
    with pytest.raises(InputError, match="webhook-id"):
        sign(VECTOR_SECRET, msg_id, NOW, BODY)


# -- interoperability with the reference library (PyPI `standardwebhooks`) ---------------------


def test_the_reference_library_verifies_what_we_sign() -> None:
    secret = generate_secret()
    headers = signed_headers(secret, "msg_interop", BODY)  # it checks against the real clock
    payload = standardwebhooks.Webhook(secret).verify(BODY, headers)
    assert payload == {"type": "batch.completed", "data": {"batch_id": "b1"}}


def test_the_reference_library_verifies_our_rotation_header() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([new, old], "msg_interop", BODY)
    standardwebhooks.Webhook(old).verify(BODY, headers)
    standardwebhooks.Webhook(new).verify(BODY, headers)


def test_we_verify_what_the_reference_library_signs() -> None:
    secret = generate_secret()
    when = datetime.fromtimestamp(NOW, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_theirs", when, BODY.decode())
    headers = {
        "webhook-id": "msg_theirs",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }
    verify(secret, headers, BODY, now=NOW)


def test_the_reference_library_rejects_a_tampered_body_we_signed() -> None:
    secret = generate_secret()
    headers = signed_headers(secret, "msg_interop", BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY + b" ", headers)


# -- the receiver docs -------------------------------------------------------------------------


def _doc_verifier() -> Callable[[str, dict[str, str], bytes], bool]:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text("utf-8")
    found = re.search(r"runs this block -->\n```python\n(.+?)\n```", doc, re.S)
    assert found, "docs/webhooks.md lost its by-hand verifier"
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)
    verifier: Callable[[str, dict[str, str], bytes], bool] = namespace["verify_by_hand"]
    return verifier


def test_the_by_hand_verifier_in_the_docs_agrees_with_ours() -> None:
    verify_by_hand = _doc_verifier()
    old, new = generate_secret(), generate_secret()
    headers = signed_headers([new, old], "msg_doc", BODY)
    assert verify_by_hand(old, headers, BODY)
    assert verify_by_hand(new, headers, BODY)
    assert not verify_by_hand(generate_secret(), headers, BODY)
    assert not verify_by_hand(new, headers, BODY + b" ")
    stale = signed_headers(new, "msg_doc", BODY, timestamp=int(time.time()) - 301)
    assert not verify_by_hand(new, stale, BODY)


def test_each_tenant_has_its_own_secret_derived_from_the_servers() -> None:
    server, rotated = generate_secret(), generate_secret()
    acme = tenant_secret(server, "acme")
    assert acme == tenant_secret(server, "acme")  # derived: the same on every server
    assert acme.startswith("whsec_") and len(base64.b64decode(acme[6:])) == 32
    others = {tenant_secret(server, "globex"), tenant_secret(rotated, "acme"), server}
    assert acme not in others and len(others) == 3
    # Names one character apart get unrelated secrets.
    assert tenant_secret(server, "acme") != tenant_secret(server, "acme ")
    assert tenant_secrets([rotated, server], "acme") == [tenant_secret(rotated, "acme"), acme]


def test_a_tenants_events_verify_with_its_secret_only() -> None:
    server = generate_secret()
    acme, globex = tenant_secret(server, "acme"), tenant_secret(server, "globex")
    headers = signed_headers(acme, "msg_1", BODY, timestamp=int(time.time()))
    standardwebhooks.Webhook(acme).verify(BODY, headers)  # the reference library agrees
    verify(acme, headers, BODY)
    for other in (globex, server):
        with pytest.raises(WebhookVerificationError):
            verify(other, headers, BODY)
