"""What the layers around the handlers add to every response: headers, each once, and metrics
that count every request. (Characterisation tests for the request log middleware's header
merge and the metrics' label handling.)"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from api.conftest import GOOD_DRAFT, MakeClient, MemoryStore, asgi_request
from coach.api.context import request_info
from coach.api.logging import RequestLogMiddleware
from coach.api.metrics import ApiMetrics


def _names(raw: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name.lower() for name, _ in raw]


def _post_review(key: str | None, text: str = GOOD_DRAFT) -> dict[str, Any]:
    body = json.dumps({"text": text}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if key is not None:
        headers.append(("authorization", f"Bearer {key}"))
    return {"headers": headers, "chunks": [body]}


def test_each_layer_header_is_sent_once(make_client: MakeClient, store: MemoryStore) -> None:
    app = make_client(rate_limit_per_minute=1).app
    key = store.add_key("acme")

    async def scenario() -> list[Any]:
        return [
            await asgi_request(app, "POST", "/v1/reviews", **_post_review(key)),
            await asgi_request(app, "POST", "/v1/reviews", **_post_review(key)),
            await asgi_request(app, "POST", "/v1/reviews", **_post_review(None)),
        ]

    ok, limited, unauthorized = asyncio.run(scenario())
    assert (ok.status, limited.status, unauthorized.status) == (200, 429, 401)
    rate = [b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"]
    for result in (ok, limited):
        names = _names(result.raw_headers)
        for name in [b"x-request-id", b"content-type", b"content-length", *rate]:
            assert names.count(name) == 1, (result.status, name, names)
    assert _names(limited.raw_headers).count(b"retry-after") == 1
    assert ok.headers["ratelimit-remaining"] == limited.headers["ratelimit-remaining"] == "0"
    names = _names(unauthorized.raw_headers)
    assert names.count(b"x-request-id") == 1
    assert not set(rate) & set(names)
    assert re.fullmatch(r"[0-9a-f]{32}", unauthorized.headers["x-request-id"])


def test_request_log_middleware_merges_headers_into_what_the_app_sent() -> None:
    """The request id replaces one an inner layer set (first place kept, duplicates dropped);
    the inner layers' extra headers are added only when the response has none of that name,
    whatever its case."""
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        request_info(scope).headers.update({"RateLimit-Limit": "5", "RateLimit-Remaining": "4"})
        headers = [
            (b"content-type", b"text/plain"),
            (b"X-Request-ID", b"inner"),
            (b"ratelimit-limit", b"99"),
            (b"x-request-id", b"inner-again"),
            (b"content-length", b"2"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:  # pragma: no cover - never called
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Any = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"abc-123")],
        "state": {},
    }
    asyncio.run(RequestLogMiddleware(inner, metrics=ApiMetrics())(scope, receive, send))
    assert list(sent[0]["headers"]) == [
        (b"content-type", b"text/plain"),
        (b"x-request-id", b"abc-123"),
        (b"ratelimit-limit", b"99"),
        (b"content-length", b"2"),
        (b"ratelimit-remaining", b"4"),
    ]


def test_metrics_count_every_request_and_review(
    make_client: MakeClient, store: MemoryStore
) -> None:
    client = make_client()
    auth = {"Authorization": f"Bearer {store.add_key('acme')}"}
    for _ in range(3):
        assert (
            client.post("/v1/reviews", json={"text": GOOD_DRAFT}, headers=auth).status_code == 200
        )
    for method in ("PURGE", "BREW"):
        client.request(method, "/v1/reviews", headers=auth)
    text = client.get("/metrics").text
    post = 'method="POST",route="/v1/reviews"'
    assert f'coach_http_requests_total{{{post},status="200"}} 3.0' in text
    assert f"coach_http_request_duration_seconds_count{{{post}}} 3.0" in text
    assert 'coach_reviews_total{engine="rules",verdict="pass"} 3.0' in text
    verdicts = re.findall(r'coach_rule_verdicts_total\{engine="rules",[^}]*\} (\S+)', text)
    assert len(verdicts) >= 3 and all(float(v) == 3.0 for v in verdicts[:5]), verdicts
    others = re.findall(r'coach_http_requests_total\{method="OTHER",[^}]*\} (\S+)', text)
    assert sum(float(v) for v in others) == 2.0
    assert "PURGE" not in text and "BREW" not in text
