"""Migrations on SQLite and on the real PostgreSQL: the table, idempotence, concurrent starts
(tasks and processes), the SQLite file in the data directory, clear failures."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coach.settings import Settings
from coach.store import SqlStore, StoreError, migrate, open_store
from coach.store.migrate import VERSION_TABLE, current_revision, head_revision, schema_drift
from store.store_support import BACKENDS, PG_URL, database, settings_for, store_at

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


def test_head_is_the_workers_migration() -> None:
    assert head_revision() == "0003"


def test_migrate_creates_the_table_and_is_idempotent(db_url: str) -> None:
    assert asyncio.run(current_revision(db_url)) is None
    migrate(db_url)
    assert asyncio.run(current_revision(db_url)) == "0003"
    # the migrated schema is exactly the tables the code declares (columns, types, index, unique)
    assert asyncio.run(schema_drift(db_url)) == []
    migrate(db_url)
    assert asyncio.run(current_revision(db_url)) == "0003"
    assert asyncio.run(schema_drift(db_url)) == []


def test_open_store_migrates_and_reopens(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, _ = await store.create_key("acme")
        async with store_at(db_url, tmp_path) as store:  # a restart: migrations are a no-op
            assert await store.authenticate(key) is not None
        assert await current_revision(db_url) == head_revision()

    asyncio.run(scenario())


def test_concurrent_open_store_from_tasks(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(db_url, tmp_path)
        stores = await asyncio.gather(*(open_store(settings) for _ in range(4)))
        try:
            key, _ = await stores[0].create_key("acme")
            for store in stores:
                assert await store.authenticate(key) is not None
        finally:
            for store in stores:
                await store.close()
        assert await current_revision(db_url) == head_revision()
        assert await schema_drift(db_url) == []

    asyncio.run(scenario())


def test_concurrent_starts_on_different_databases(db_url: str, tmp_path: Path) -> None:
    """Alembic's context is process-global: interleaved migrations of two databases in one
    event loop must not drive each other's connections."""
    others = [f"sqlite+aiosqlite:///{tmp_path / f'other{i}.db'}" for i in range(2)]

    async def scenario() -> None:
        urls = [db_url, *others]
        stores = await asyncio.gather(*(open_store(settings_for(u, tmp_path)) for u in urls))
        for store in stores:
            await store.close()
        for url in urls:
            assert await current_revision(url) == head_revision()
            assert await schema_drift(url) == []

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_concurrent_migrate_from_processes(db_url: str) -> None:
    code = "import sys; from coach.store import migrate; migrate(sys.argv[1])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert asyncio.run(current_revision(db_url)) == head_revision()
    assert asyncio.run(schema_drift(db_url)) == []


def test_sqlite_file_is_created_in_the_data_dir_on_first_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = Settings(data_dir=data_dir)
    assert settings.database_url is None and not data_dir.exists()

    async def scenario() -> None:
        store = await open_store(settings)
        try:
            assert isinstance(store, SqlStore) and store.dialect == "sqlite"
            await store.create_key("acme")
        finally:
            await store.close()

    asyncio.run(scenario())
    db = data_dir / "coach.db"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"api_keys", VERSION_TABLE} <= tables
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
    conn.close()


def test_a_database_from_a_newer_coach_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "coach.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES ('9999')")
    conn.close()
    with pytest.raises(StoreError, match=r"migration failed.*9999"):
        migrate(f"sqlite+aiosqlite:///{db}")


def test_a_missing_postgresql_schema_is_a_clear_error(tmp_path: Path) -> None:
    url = f"{PG_URL}?search_path=coach_test_no_such_schema"
    with pytest.raises(StoreError, match="no schema"):
        asyncio.run(open_store(settings_for(url, tmp_path)))
