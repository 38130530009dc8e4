"""The canary test: a draft sent through every path never reaches logs, metrics or an error
body (success, validation errors, malformed JSON, too large, LLM failure, unhandled error)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.conftest import BrokenService, MakeClient, sse_events

CANARY = "CANARY-7f3a9c-zebra-quartz"
DRAFT = f"Hi Sam, {CANARY} could you introduce me to your head of procurement next week?"

LLM_DOWN: dict[str, Any] = {
    "llm_base_url": "http://127.0.0.1:9/v1",
    "llm_model": "gpt-4o-mini",
    "llm_timeout_s": 0.5,
    "llm_deadline_s": 1.0,
    "llm_max_attempts": 1,
}


def test_canary_never_leaks(
    make_client: MakeClient,
    auth: dict[str, str],
    api_key: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(**LLM_DOWN)  # log level DEBUG: every log line is on
    broken = make_client(service=BrokenService(lambda r: RuntimeError(f"failed on {r.text}")))
    json_headers = {**auth, "Content-Type": "application/json"}
    error_bodies: list[str] = []

    # Success with the rule engine (the review itself may quote the draft: it is the answer).
    ok = client.post("/v1/reviews", json={"text": DRAFT}, headers=auth)
    assert ok.status_code == 200

    # Validation errors, with the canary in every field that takes text.
    invalid = client.post(
        "/v1/reviews",
        json={
            "text": DRAFT,
            "kind": CANARY,
            "engine": CANARY,
            "rewrite": CANARY,
            "language": CANARY,
            "context": {
                "relationship": CANARY,
                "notes": ["not", "a", "string", CANARY],
                "thread": [{"from": CANARY, "text": DRAFT}],
                "recipient": {"name": {"nested": CANARY}},
            },
        },
        headers=auth,
    )
    assert invalid.status_code == 422
    error_bodies.append(invalid.text)
    too_long = client.post("/v1/reviews", json={"text": DRAFT * 300}, headers=auth)
    assert too_long.status_code == 422
    error_bodies.append(too_long.text)
    blank = client.post(
        "/v1/reviews", json={"text": DRAFT, "context": {"thread": DRAFT}}, headers=auth
    )
    assert blank.status_code == 422
    error_bodies.append(blank.text)
    malformed = client.post(
        "/v1/reviews", content=f'{{"text": "{DRAFT}'.encode(), headers=json_headers
    )
    assert malformed.status_code == 400
    error_bodies.append(malformed.text)
    too_big = client.post(
        "/v1/reviews", content=json.dumps({"text": DRAFT * 1000}).encode(), headers=json_headers
    )
    assert too_big.status_code == 413
    error_bodies.append(too_big.text)
    unauthorized = client.post("/v1/reviews", json={"text": DRAFT})
    assert unauthorized.status_code == 401
    error_bodies.append(unauthorized.text)

    # LLM failure: unreachable endpoint, tiny deadline -> degraded 200, and the stream.
    degraded = client.post("/v1/reviews", json={"text": DRAFT, "engine": "llm"}, headers=auth)
    assert degraded.status_code == 200
    assert degraded.json()["degraded"] is True
    assert CANARY not in (degraded.json()["degraded_reason"] or "")
    streamed = client.post(
        "/v1/reviews/stream", json={"text": DRAFT, "engine": "llm"}, headers=auth
    )
    assert [name for name, _ in sse_events(streamed.text)] == ["rules", "degraded"]

    # An unhandled exception whose message quotes the draft.
    crashed = broken.post("/v1/reviews", json={"text": DRAFT}, headers=auth)
    assert crashed.status_code == 500
    error_bodies.append(crashed.text)
    crashed_stream = broken.post("/v1/reviews/stream", json={"text": DRAFT}, headers=auth)
    assert crashed_stream.status_code == 500
    error_bodies.append(crashed_stream.text)

    metrics = client.get("/metrics").text + broken.get("/metrics").text
    out, err = capsys.readouterr()

    assert '"route": "/v1/reviews"' in err  # the logs were captured
    assert '"error": "RuntimeError"' in err
    for where, text in [
        ("stdout", out),
        ("stderr", err),
        ("stdlib logging", caplog.text),
        ("metrics", metrics),
        *(("error body", body) for body in error_bodies),
    ]:
        assert CANARY not in text, where
        assert api_key not in text, where
