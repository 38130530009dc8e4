"""The rulebook routes, health, readiness and metrics."""

from __future__ import annotations

import asyncio

import pytest

from api.conftest import GOOD_DRAFT, Client, MakeClient, MemoryStore, make_settings
from coach.api import create_app
from coach.rulebook import BUILTIN_RULE_IDS, Rule, Rulebook, default_rulebook


def test_list_rules(client: Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/rules", headers=auth)
    assert response.status_code == 200
    rulebook = Rulebook.model_validate(response.json())
    assert rulebook.version == default_rulebook().version
    assert set(BUILTIN_RULE_IDS) <= set(rulebook.ids)
    # Aliases on the wire, as in the rulebook files.
    assert "pass" in response.json()["rules"][0]["examples"]


def test_get_one_rule(client: Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/rules/give-first", headers=auth)
    assert response.status_code == 200
    assert Rule.model_validate(response.json()).id == "give-first"


def test_unknown_rule_is_a_404_problem(client: Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/rules/no-such-rule", headers=auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/rule-not-found"
    assert problem["title"] and problem["status"] == 404 and "no-such-rule" in problem["detail"]


def test_healthz(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_store_and_llm(make_client: MakeClient) -> None:
    ready = make_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["store"] is True
    assert ready.json()["llm_configured"] is False
    configured = make_client(llm_model="m", llm_base_url="http://127.0.0.1:9/v1").get("/readyz")
    assert configured.json()["llm_configured"] is True


def test_readyz_is_503_when_the_store_is_down(client: Client, store: MemoryStore) -> None:
    store.healthy = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://coach.dev/problems/not-ready"
    assert problem["store"] is False and problem["llm_configured"] is False


def test_readyz_is_503_when_ping_raises(
    client: Client, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> bool:
        raise OSError("connection refused")

    monkeypatch.setattr(store, "ping", broken)
    assert client.get("/readyz").status_code == 503


def test_metrics_use_route_templates_and_count_reviews(
    client: Client, auth: dict[str, str]
) -> None:
    client.get("/v1/rules/give-first", headers=auth)
    client.get("/v1/rules/volunteer-to-lead", headers=auth)
    client.get("/v1/rules/secret-path-segment", headers=auth)
    client.get("/not/a/route/private-segment")
    client.post("/v1/reviews", json={"text": GOOD_DRAFT}, headers=auth)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'route="/v1/rules/{rule_id}",status="200"} 2.0' in text
    assert 'route="/v1/rules/{rule_id}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text
    bucket = 'coach_http_request_duration_seconds_bucket{le="0.005",method="GET",route='
    assert bucket + '"/v1/rules/{rule_id}"}' in text
    assert 'coach_reviews_total{engine="rules",verdict="pass"} 1.0' in text
    assert 'coach_rule_verdicts_total{engine="rules",rule="give-first",verdict="pass"} 1.0' in text
    for raw in ('give-first"', 'volunteer-to-lead"', "secret-path-segment", "private-segment"):
        assert f'route="/v1/rules/{raw}' not in text
    assert "secret-path-segment" not in text and "private-segment" not in text
    assert "DevDays" not in text


def test_each_app_has_its_own_registry(store: MemoryStore, auth: dict[str, str]) -> None:
    first = create_app(make_settings(), store=store)
    second = create_app(make_settings(), store=store)
    api_first = first.state["api"]
    api_second = second.state["api"]
    assert api_first.metrics.registry is not api_second.metrics.registry


def test_the_app_opens_and_closes_its_own_store(
    monkeypatch: pytest.MonkeyPatch, store: MemoryStore
) -> None:
    """Without a store, the lifespan opens one with coach.store.open_store(settings)."""
    import sys
    import types

    from litestar.testing import TestClient

    opened: list[object] = []

    async def open_store(settings: object) -> MemoryStore:
        opened.append(settings)
        return store

    fake = types.ModuleType("coach.store")
    fake.open_store = open_store  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coach.store", fake)
    app = create_app(make_settings())
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert len(opened) == 1
    assert store.closed
    asyncio.run(store.close())
