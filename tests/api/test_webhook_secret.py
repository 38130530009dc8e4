"""GET /v1/webhooks/secret: each tenant gets its own derived secret (both during a rotation),
only with its API key, and a clear problem when the server has no webhook secret."""

from __future__ import annotations

from typing import Any

from api.conftest import MakeApi, make_settings
from coach.webhooks import generate_secret, tenant_secret

SERVER, OLD = generate_secret(), generate_secret()


def test_each_tenant_gets_its_own_secret(make_api: MakeApi) -> None:
    api = make_api(run_worker=False, webhook_secret=SERVER)
    acme = api.client.get("/v1/webhooks/secret", headers=api.headers(0))
    globex = api.client.get("/v1/webhooks/secret", headers=api.headers(1))
    assert acme.status_code == 200 and globex.status_code == 200
    assert acme.json() == {"secrets": [tenant_secret(SERVER, "acme")]}
    assert globex.json() == {"secrets": [tenant_secret(SERVER, "globex")]}
    assert SERVER not in acme.text  # never the server's own secret
    anonymous = api.client.get("/v1/webhooks/secret")
    assert anonymous.status_code == 401


def test_during_a_rotation_both_secrets_current_first(make_api: MakeApi) -> None:
    api = make_api(run_worker=False, webhook_secret=f"{SERVER},{OLD}")
    body: dict[str, Any] = api.client.get("/v1/webhooks/secret", headers=api.headers()).json()
    assert body == {"secrets": [tenant_secret(SERVER, "acme"), tenant_secret(OLD, "acme")]}


def test_without_a_server_secret_a_problem(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    response = api.client.get("/v1/webhooks/secret", headers=api.headers())
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "not configured" in response.json()["detail"]
    assert make_settings().webhook_secrets == []
