"""SQLite write locking with several connections on one file ("database is locked" despite
the 30 s busy timeout): a write transaction that read first is not refused because another
connection committed meanwhile, and a write cancelled while its statement runs (a worker's
presence refresh, cancelled as the worker stops) leaves no write lock behind it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from coach.store.schema import workers
from store.store_support import store_at


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}"


def _write_lock_is_free(path: Path) -> bool:
    """Whether another connection could take the write lock right now (no waiting)."""
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return False
    finally:
        probe.close()
    return True


def test_a_write_transaction_that_read_first_survives_another_connections_commit(
    tmp_path: Path,
) -> None:
    """With a deferred BEGIN the read would pin a snapshot, the other store would commit, and
    the write would fail at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no
    busy timeout retries)."""

    async def scenario() -> None:
        async with (
            store_at(_url(tmp_path), tmp_path) as first,
            store_at(_url(tmp_path), tmp_path) as second,
        ):
            await first.check_in("first", pool="p", ttl_s=60)
            async with first._engine.begin() as conn:
                assert await conn.scalar(select(func.count()).select_from(workers)) == 1
                other = asyncio.create_task(second.check_in("second", pool="p", ttl_s=60))
                # Time for the other writer to commit, which it can only if this transaction
                # does not hold the write lock yet.
                await asyncio.wait({other}, timeout=0.5)
                await conn.execute(
                    update(workers).where(workers.c.owner == "first").values(active=False)
                )
            assert await asyncio.wait_for(other, timeout=10) == 1  # "first" is idle now

    asyncio.run(scenario())


def test_a_check_in_cancelled_mid_statement_leaves_no_write_lock(tmp_path: Path) -> None:
    """A task cancelled while its statement runs in the driver's thread (a worker stopping on
    SIGINT or SIGTERM cancels its presence refresh, which may be in `check_in`) gets its
    connection closed. If that statement had returned a row not yet fetched, the driver's
    cursor still holds it, and sqlite3 only marks the connection closed: its transaction kept
    the write lock until the garbage collector freed the cursor, and every writer, this
    process's own `check_out` included, waited out the busy timeout and failed with
    "database is locked"."""

    async def scenario() -> None:
        path = tmp_path / "coach.db"
        async with store_at(_url(tmp_path), tmp_path) as store:
            entered, gate = threading.Event(), threading.Event()
            hook = {"armed": False, "counting": False}

            # Both run in the driver's thread: pause inside check_in's closing count.
            def trace(sql: str) -> None:
                hook["counting"] = hook["armed"] and "count(*)" in sql

            def progress() -> int:
                if hook["counting"]:
                    hook["counting"] = hook["armed"] = False
                    entered.set()
                    gate.wait(10)
                return 0

            @event.listens_for(store._engine.sync_engine, "connect")
            def _hooks(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.run_async(lambda conn: conn.set_trace_callback(trace))
                dbapi_connection.run_async(lambda conn: conn.set_progress_handler(progress, 1))

            assert await store.check_in("first", pool="p", ttl_s=60) == 1
            hook["armed"] = True
            refresh = asyncio.create_task(store.check_in("first", pool="p", ttl_s=60, active=False))
            assert await asyncio.to_thread(entered.wait, 10)
            refresh.cancel()
            await asyncio.sleep(0.05)  # handled while the count still runs in the thread
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await refresh
            # `refresh` keeps its exception, whose traceback keeps the driver's cursor alive,
            # as a reference cycle can for any length of time.
            assert _write_lock_is_free(path)
            # The cancelled check-in was rolled back: "first" still counts as active.
            assert await asyncio.wait_for(store.check_in("next", pool="p", ttl_s=60), 10) == 2
            await asyncio.wait_for(store.check_out("first"), 10)
            assert refresh.cancelled()

    asyncio.run(scenario())
