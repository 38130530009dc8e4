"""SQLite write locking with several connections on one file ("database is locked" despite
the 30 s busy timeout): a write transaction that read first is not refused because another
connection committed meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select, update

from coach.store.schema import workers
from store.store_support import store_at


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}"


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
