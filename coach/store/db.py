"""Database engines (SQLite and PostgreSQL URLs, drivers, SQLite file and locking) and the
one translation of database failures into `StoreError`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from coach.errors import CoachError, ConfigError

__all__ = [
    "READ_ONLY",
    "StoreError",
    "database_errors",
    "database_url",
    "describe_error",
    "make_engine",
    "reader",
]


class StoreError(CoachError):
    """The database could not be reached or failed; the message holds no credentials."""


_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def database_url(raw: str) -> URL:
    """The URL with its async driver; ConfigError for an unsupported or unparsable one.

    Messages name the setting, never the URL (it may hold a password)."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError("COACH_DATABASE_URL: not a valid database URL") from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(
            f"COACH_DATABASE_URL: unsupported database {url.drivername!r}; "
            "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
        )
    url = url.set(drivername=driver)
    if driver.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ConfigError("COACH_DATABASE_URL: in-memory SQLite is not supported; give a file")
    return url


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None for other databases, memory and URI filenames)."""
    if not url.drivername.startswith("sqlite") or not url.database:
        return None
    if url.database.startswith("file:"):  # a URI filename: leave it to SQLite
        return None
    return Path(url.database)


def make_engine(raw_url: str, *, for_migrations: bool = False) -> AsyncEngine:
    """An async engine for `raw_url`; creates the directory of a SQLite file.

    `for_migrations`: no pool, and on SQLite every transaction is `BEGIN IMMEDIATE`, so the
    database is write-locked from the moment Alembic reads its version until the commit: two
    processes starting at once then migrate one after the other."""
    url = database_url(raw_url)
    kwargs: dict[str, Any] = {}
    if url.drivername.startswith("postgresql"):
        search_path = url.query.get("search_path")
        if search_path is not None:
            if not isinstance(search_path, str):
                raise ConfigError("COACH_DATABASE_URL: give search_path once")
            url = url.difference_update_query(["search_path"])
            kwargs["connect_args"] = {"server_settings": {"search_path": search_path}}
        if not for_migrations:
            kwargs["pool_pre_ping"] = True
    if (path := sqlite_file(url)) is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"database directory {path.parent}: cannot create ({exc.strerror})"
            ) from None
        kwargs["connect_args"] = {"timeout": 30.0}
    if for_migrations:
        kwargs["poolclass"] = NullPool
    engine = create_async_engine(url, **kwargs)
    if url.drivername.startswith("sqlite"):
        # Every transaction takes the write lock up front: a deferred transaction that reads
        # and then writes can fail with SQLITE_BUSY (no waiting) when another process wrote in
        # between, and batch workers in several processes do exactly that.
        _begin_immediate(engine)
        _end_transaction_before_close(engine)
        if not for_migrations:
            _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL: readers never wait for the writer. synchronous=NORMAL: a commit survives a
        # crash of the process (what batch workers must survive); only a power cut may lose
        # the last commits, which the batch then simply reviews again.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _begin_immediate(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _no_driver_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Read-only work (see `reader`) does not queue behind writers for the write lock.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _end_transaction_before_close(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "invalidate")
    def _rollback(dbapi_connection: Any, _record: Any, _exc: BaseException | None) -> None:
        # A task cancelled while its statement runs (a worker stopping on SIGINT or SIGTERM
        # cancels its presence refresh, which may be in check_in) has its connection
        # invalidated and closed with no rollback. If that statement returned a row not yet
        # fetched, the driver's cursor still holds it, and sqlite3 then only marks the
        # connection closed: its transaction keeps the write lock until the garbage collector
        # frees the cursor (the cancellation's traceback holds it, often in a cycle), and
        # every writer, this process's own included, waits out the busy timeout and fails with
        # "database is locked". This rollback runs in the driver's thread ahead of the close.
        with suppress(Exception):  # already closed or broken; no event loop (GC)
            dbapi_connection.run_async(lambda driver_connection: driver_connection.rollback())


#: The execution option that marks an engine's transactions as reads (SQLite: deferred BEGIN).
READ_ONLY = "coach_read_only"


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool for transactions that only read. On SQLite they start with a
    plain (deferred) BEGIN, so an API key lookup never waits for a batch worker's write lock;
    everything else starts with BEGIN IMMEDIATE (see `make_engine`)."""
    return engine.execution_options(**{READ_ONLY: True})


def describe_error(exc: BaseException) -> str:
    """A one-line description of a database error without SQL, parameters or credentials."""
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    detail = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
    name = type(cause).__name__
    return f"{name}: {detail}" if detail else name


@asynccontextmanager
async def database_errors(action: str) -> AsyncIterator[None]:
    """Re-raise database and connection failures as `StoreError`."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"database error while {action}: {describe_error(exc)}") from exc
