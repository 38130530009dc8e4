"""Running batch workers: each one announces itself and counts the others of its pool.

A worker refreshes its row every few seconds while it runs and deletes it when it stops; a row
not refreshed within `ttl_s` (a worker killed with SIGKILL, a machine gone) is dropped by the
next check-in of anyone. The count is how many processes share a provider's rate budget
(`coach.scheduler.Scheduler.share`): rows are grouped by `pool`, a hash of the endpoint and the
model, because providers limit each model of a key separately, and only workers that reviewed
with the LLM since their last check-in count (an idle one, say an API process's worker with
nothing to do, takes no share).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from coach.store.db import database_errors
from coach.store.schema import workers

__all__ = ["WorkerStore"]


class WorkerStore:
    """The worker-presence half of `SqlStore` (mixed in; `_engine` is the store's engine)."""

    _engine: AsyncEngine

    async def check_in(self, owner: str, *, pool: str, ttl_s: float, active: bool = True) -> int:
        """Record that `owner` is running now (`active`: reviewing with the LLM lately); how
        many workers of `pool` share its budget: the active others, plus itself. An idle worker
        sends nothing, so it takes no share from the others."""
        now = datetime.now(UTC)
        owner = owner[:100]
        async with database_errors("recording a worker"), self._engine.begin() as conn:
            await conn.execute(
                delete(workers).where(workers.c.seen_at < now - timedelta(seconds=ttl_s))
            )
            seen = await conn.execute(
                update(workers)
                .where(workers.c.owner == owner)
                .values(seen_at=now, pool=pool, active=active)
            )
            if not seen.rowcount:
                await conn.execute(
                    insert(workers).values(
                        owner=owner, pool=pool, active=active, started_at=now, seen_at=now
                    )
                )
            others = await conn.scalar(
                select(func.count())
                .select_from(workers)
                .where(workers.c.pool == pool, workers.c.active, workers.c.owner != owner)
            )
        return 1 + int(others or 0)

    async def check_out(self, owner: str) -> None:
        """`owner` stops: the others take over its share at their next check-in."""
        async with database_errors("removing a worker"), self._engine.begin() as conn:
            await conn.execute(delete(workers).where(workers.c.owner == owner[:100]))
