"""Alembic migrations, run from code (no alembic.ini): `migrate(url)` for the CLI, `upgrade(url)`
for async callers such as `open_store`.

Safe on every start and from several processes at once: the whole upgrade, from reading the
version table to the last DDL statement, runs in one transaction that first takes a lock —
`pg_advisory_xact_lock` on PostgreSQL, `BEGIN IMMEDIATE` (the database write lock) on SQLite.
Whoever comes second waits, then finds the schema at head and does nothing.

Alembic keeps its migration context in a module-level proxy (`alembic.context`), so two
migrations interleaved in one process would drive each other's connections. Within a process,
migrations therefore also take a lock (per event loop, then per process) *before* the database
lock — always in that order, so no two locks are ever waited for in opposite orders.

The version table is `coach_alembic_version`, so coach can share a schema with another
application that uses Alembic.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from coach.store.db import StoreError, database_errors, make_engine
from coach.store.schema import metadata

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrate",
    "schema_drift",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "coach_alembic_version"
#: The PostgreSQL advisory lock that serialises coach's migrations ("coach" in ASCII).
MIGRATION_LOCK_ID = 0x636F616368

T = TypeVar("T")

_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
_thread_lock = threading.Lock()


@asynccontextmanager
async def _one_migration_per_loop() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    async with lock:
        yield


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic `Config` built in code: script_location is this package's migrations folder.

    `connection` is handed to env.py (migrations then run on it); without one, env.py connects
    to `url` itself (for `command.revision(..., autogenerate=True)` during development)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def run_locked(url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a synchronous connection inside one transaction that holds the migration
    locks; failures become `StoreError`."""

    def locked(conn: Connection) -> T:
        with _thread_lock:  # another thread's loop may be migrating another database
            return work(conn)

    engine = make_engine(url, for_migrations=True)
    try:
        async with (
            _one_migration_per_loop(),
            database_errors("migrating the database"),
            engine.begin() as conn,
        ):
            if conn.dialect.name == "postgresql":
                if await conn.scalar(text("SELECT current_schema()")) is None:
                    raise StoreError(
                        "the database has no schema to migrate: the search_path names none "
                        "that exists"
                    )
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK_ID}
                )
            try:
                return await conn.run_sync(locked)
            except CommandError as exc:
                raise StoreError(f"database migration failed: {exc}") from None
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (creates a SQLite file and its folder)."""

    def work(conn: Connection) -> None:
        command.upgrade(alembic_config(connection=conn), revision)

    await run_locked(url, work)


def migrate(url: str) -> None:
    """Synchronous `upgrade(url)` to head, for commands (not from inside a running event loop)."""
    asyncio.run(upgrade(url))


async def current_revision(url: str) -> str | None:
    """The revision the database is at; None before the first migration."""

    def work(conn: Connection) -> str | None:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    return await run_locked(url, work)


async def schema_drift(url: str) -> list[str]:
    """Differences between the migrated database and the tables in `coach.store.schema`; empty
    when the migrations and the code agree."""

    def work(conn: Connection) -> list[str]:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        return [repr(diff) for diff in compare_metadata(context, metadata)]

    return await run_locked(url, work)
