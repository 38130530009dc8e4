"""API keys, auth off, rate limits, CORS and request ids."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.conftest import (
    EXTENSION_ORIGIN,
    GOOD_DRAFT,
    WEB_ORIGIN,
    Client,
    MakeClient,
    MemoryStore,
)

PROBLEM = "application/problem+json"
UNAUTHORIZED = "https://coach.dev/problems/unauthorized"


def _assert_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == UNAUTHORIZED
    assert "ratelimit-limit" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/rules"), ("GET", "/v1/rules/give-first"), ("POST", "/v1/reviews")],
)
def test_missing_key_is_401(client: Client, method: str, path: str) -> None:
    response = client.request(method, path, json={"text": GOOD_DRAFT})
    _assert_401(response)


@pytest.mark.parametrize(
    "header",
    ["Bearer coach_00000000_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a b"],
)
def test_wrong_or_malformed_key_is_401(client: Client, header: str) -> None:
    _assert_401(client.get("/v1/rules", headers={"Authorization": header}))


def test_revoked_key_is_401_on_the_next_request(
    client: Client, store: MemoryStore, api_key: str, auth: dict[str, str]
) -> None:
    assert client.get("/v1/rules", headers=auth).status_code == 200
    assert asyncio.run(store.revoke(api_key)) == 1
    _assert_401(client.get("/v1/rules", headers=auth))


def test_public_routes_need_no_key(client: Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/schema/openapi.json", "/schema/swagger"):
        assert client.get(path).status_code == 200, path


def test_auth_off_runs_as_local_and_warns_at_start(
    make_client: MakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(auth=False)
    err = capsys.readouterr().err
    assert '"event": "auth_disabled"' in err and '"level": "warning"' in err
    response = client.post("/v1/reviews", json={"text": GOOD_DRAFT})
    assert response.status_code == 200
    assert response.headers["ratelimit-limit"] == "120"
    assert '"tenant": "local"' in capsys.readouterr().err


def test_auth_on_does_not_warn(make_client: MakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    make_client()
    assert "auth_disabled" not in capsys.readouterr().err


def test_rate_limit_per_key_with_headers(
    make_client: MakeClient, store: MemoryStore, auth: dict[str, str]
) -> None:
    client = make_client(rate_limit_per_minute=2)
    first = client.get("/v1/rules", headers=auth)
    second = client.get("/v1/rules", headers={**auth, "X-Forwarded-For": "10.0.0.1"})
    assert first.status_code == second.status_code == 200
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    assert second.headers["ratelimit-remaining"] == "0"
    assert int(second.headers["ratelimit-reset"]) >= 1
    # A client-supplied forwarding header does not make a new caller.
    third = client.get("/v1/rules", headers={**auth, "X-Forwarded-For": "203.0.113.9"})
    assert third.status_code == 429
    assert third.headers["content-type"] == PROBLEM
    assert third.json()["type"] == "https://coach.dev/problems/rate-limited"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["ratelimit-remaining"] == "0"
    assert third.headers["ratelimit-limit"] == "2"
    # Another key of the same tenant has its own bucket; public routes are not limited.
    other = {"Authorization": f"Bearer {store.add_key('acme')}"}
    assert client.get("/v1/rules", headers=other).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_problems_of_authenticated_requests_carry_rate_limit_headers(
    client: Client, auth: dict[str, str]
) -> None:
    response = client.post("/v1/reviews", json={"text": ""}, headers=auth)
    assert response.status_code == 422
    assert response.headers["ratelimit-limit"] == "120"


def test_store_failure_during_auth_is_503_not_500(
    client: Client, store: MemoryStore, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(key: str) -> None:
        raise ConnectionError(f"database down while checking {key}")

    monkeypatch.setattr(store, "authenticate", broken)
    response = client.get("/v1/rules", headers=auth)
    assert response.status_code == 503
    assert response.json()["type"] == "https://coach.dev/problems/not-ready"
    assert "coach_" not in response.text


@pytest.mark.parametrize("origin", [EXTENSION_ORIGIN, WEB_ORIGIN])
def test_cors_allowed_origin(client: Client, auth: dict[str, str], origin: str) -> None:
    response = client.get("/v1/rules", headers={**auth, "Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "ratelimit-remaining" in exposed and "x-request-id" in exposed


def test_cors_refused_origin_gets_no_allow_origin(client: Client, auth: dict[str, str]) -> None:
    for origin in ("https://evil.example", "chrome-extension://someotherextensionid", "null"):
        response = client.get("/v1/rules", headers={**auth, "Origin": origin})
        assert "access-control-allow-origin" not in response.headers, origin


def test_preflight_needs_no_key(client: Client) -> None:
    response = client.options(
        "/v1/reviews",
        headers={
            "Origin": EXTENSION_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == EXTENSION_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_preflight_from_a_refused_origin_is_a_403_problem(client: Client) -> None:
    response = client.options(
        "/v1/reviews",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert "access-control-allow-origin" not in response.headers
    assert response.json()["type"] == "https://coach.dev/problems/cors-refused"


def test_preflight_asking_for_other_headers_or_methods_is_refused(client: Client) -> None:
    asks = [
        {"Access-Control-Request-Method": "DELETE"},
        {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-secret"},
    ]
    for ask in asks:
        response = client.options("/v1/reviews", headers={"Origin": EXTENSION_ORIGIN, **ask})
        assert response.status_code == 403, ask
        assert "access-control-allow-origin" not in response.headers


def test_no_cors_configured_means_no_cors(make_client: MakeClient, auth: dict[str, str]) -> None:
    client = make_client(cors_origins=[])
    response = client.get("/v1/rules", headers={**auth, "Origin": EXTENSION_ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_request_id_is_generated_or_echoed(client: Client) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    # Not a plain token: replaced, never echoed.
    odd = client.get("/healthz", headers={"X-Request-ID": "<script>"}).headers["x-request-id"]
    assert odd != "<script>" and len(odd) == 32
