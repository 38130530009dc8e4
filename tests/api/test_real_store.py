"""The app on the real store, opened by its lifespan, on both databases: SQLite in a temporary
data directory (the embedded default) and the PostgreSQL server on 127.0.0.1:5432. A key created
in the store works, and stops working once revoked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from litestar.testing import TestClient
from store.store_support import BACKENDS, database

from api.conftest import make_settings
from coach.api import create_app
from coach.settings import Settings
from coach.store import open_store


async def _create_key(settings: Settings) -> str:
    store = await open_store(settings)
    try:
        key, _ = await store.create_key("acme")
        return key
    finally:
        await store.close()


async def _revoke(settings: Settings, key: str) -> int:
    store = await open_store(settings)
    try:
        return await store.revoke(key)
    finally:
        await store.close()


def test_app_on_the_embedded_sqlite_default(tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    _exercise(settings)
    assert (tmp_path / "data" / "coach.db").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_app_on_each_database(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        _exercise(make_settings(database_url=url, data_dir=tmp_path / "data"))


def _exercise(settings: Settings) -> None:
    key = asyncio.run(_create_key(settings))
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] is True
        assert client.get("/v1/rules", headers=auth).status_code == 200
        made = client.post("/v1/reviews", json={"text": "Can we hop on a call?"}, headers=auth)
        assert made.status_code in (200, 201) and made.json()["engine"] == "rules"
        assert (
            client.get("/v1/rules", headers={"Authorization": "Bearer coach_x_y"}).status_code
            == 401
        )
        assert asyncio.run(_revoke(settings, key)) == 1
        assert client.get("/v1/rules", headers=auth).status_code == 401
