"""Databases for the store tests: SQLite in tmp_path, and the real PostgreSQL on 127.0.0.1:5432.

PostgreSQL is never skipped: CI guarantees it is up, so a test that cannot reach it fails and
says so. Each PostgreSQL test gets its own schema (through the URL's `search_path`), dropped
afterwards, so tests neither see each other's keys nor leave tables behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Protocol

import asyncpg  # type: ignore[import-untyped]  # no stubs; only for test set-up
import pytest

from coach.settings import Settings
from coach.store import SqlStore, open_store

__all__ = [
    "BACKENDS",
    "PG_URL",
    "CliOutcome",
    "CliRunner",
    "database",
    "settings_for",
    "store_at",
]

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


class CliOutcome(Protocol):
    """What tests/conftest.py's `run_cli` returns (typed here so that mypy can check this folder
    on its own, without tests/ on its path)."""

    @property
    def code(self) -> int: ...
    @property
    def out(self) -> str: ...
    @property
    def err(self) -> str: ...


class CliRunner(Protocol):
    def __call__(self, argv: list[str], stdin: bytes | None = None) -> CliOutcome: ...


async def _pg_admin(sql: str) -> str | None:
    """Run one statement as the superuser; the connection error, if any, as text."""
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    return None


def pg_admin(sql: str) -> None:
    error = asyncio.run(_pg_admin(sql))
    if error is not None:
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_DSN} ({error}). The store tests run against the "
            "real server and do not skip: start PostgreSQL (trust auth for 127.0.0.1, a database "
            "named 'test'); CI's .ci/run makes sure it is up.",
            pytrace=False,
        )


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL for `backend`, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'db' / 'coach.db'}"
        return
    schema = f"coach_test_{uuid.uuid4().hex[:12]}"
    pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?search_path={schema}"
    finally:
        pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "data")


@asynccontextmanager
async def store_at(url: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """`open_store` for `url`, closed on exit."""
    store = await open_store(settings_for(url, tmp_path))
    assert isinstance(store, SqlStore)
    try:
        yield store
    finally:
        await store.close()
