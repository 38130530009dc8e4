"""The committed openapi.json is what the code generates (regenerate it with
`python -m coach.api.openapi > openapi.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from api.conftest import Client
from coach.api.openapi import openapi_document, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def test_committed_spec_matches_the_code() -> None:
    committed = json.loads(COMMITTED.read_text("utf-8"))
    assert committed == openapi_document(), (
        "openapi.json drifted from the code: run `python -m coach.api.openapi > openapi.json`"
    )
    assert COMMITTED.read_text("utf-8") == render()


def test_spec_is_openapi_3_1_with_every_route(client: Client) -> None:
    served = client.get("/schema/openapi.json")
    assert served.status_code == 200
    spec = served.json()
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/v1/reviews",
        "/v1/reviews/stream",
        "/v1/rules",
        "/v1/rules/{rule_id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/batches",
        "/v1/batches/jsonl",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/results",
        "/v1/batches/{batch_id}/cancel",
        "/v1/batches/{batch_id}/retry",
        "/v1/webhooks/secret",
    }
    review = spec["paths"]["/v1/reviews"]["post"]
    assert review["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert review["responses"]["422"]["content"]["application/problem+json"]
    body = spec["components"]["schemas"]["ReviewCreate"]["properties"]
    assert {"text", "kind", "language", "context", "engine", "rewrite"} <= set(body)


def test_browsable_ui(client: Client) -> None:
    for path in ("/schema", "/schema/swagger"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
