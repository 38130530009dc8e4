"""Batch jobs in the database: batches, their items, leases, results and the webhook outbox.

States of an item::

    pending ──claim──▶ leased ──complete──▶ done
       ▲                 │  └──fail (retry)──▶ pending (not_before = later)
       │                 ├──fail (final)────▶ failed  ──retry_failed──▶ pending
       │                 └──lease expires───▶ claimable again (attempts count)
       └── cancel: pending ▶ cancelled

A worker claims items with `FOR UPDATE SKIP LOCKED` on PostgreSQL (two workers never get the
same row); SQLite serialises writers, so the claiming UPDATE is atomic there as it stands. Each
claim draws a fresh lease token; a result is written only by the holder of the current token
(`complete_item` is idempotent: a second write, or a write after the lease moved on, changes
nothing). A worker killed with SIGKILL leaves leased rows whose lease expires; the next claim
picks them up. An item whose lease expired `max_attempts` times is dead-lettered (failed),
so a draft that crashes workers cannot take the fleet down in a loop.

A batch is `open` while `coach batch` is still adding items, `queued` until a worker takes one,
`running`, then `completed` (every item done), `failed` (finished, some items failed: results
and reasons are kept; `retry_failed` re-queues them) or `cancelled`. The transition to a final
state and its webhook event are written in one transaction (a transactional outbox), and only
once: the UPDATE is conditional on the batch not being final yet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from coach.errors import CoachError
from coach.store.db import database_errors
from coach.store.schema import batch_items, batches, webhook_outbox
from coach.store.sealing import Sealer
from coach.store.workers import WorkerStore

__all__ = [
    "FINAL_BATCH_STATES",
    "BatchRecord",
    "BatchStore",
    "ClaimedItem",
    "IdempotencyConflict",
    "ItemResult",
    "NewItem",
    "OutboxEvent",
]

FINAL_BATCH_STATES = ("completed", "failed", "cancelled")
_OPEN_ITEM_STATES = ("pending", "leased")
ITEM_STATES = ("pending", "leased", "done", "failed", "cancelled")


class IdempotencyConflict(CoachError):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class BatchRecord:
    id: str
    tenant: str
    state: str
    source: str
    engine: str
    rewrite: bool
    total: int
    generation: int
    webhook_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class NewItem:
    key: str
    location: dict[str, str | int]
    request: str | None  # ReviewRequest JSON; None when the input could not be read
    draft_hash: str
    markup: str | None = None
    error: str | None = None  # why the input could not be read


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    batch_id: str
    tenant: str
    seq: int
    key: str
    request: str | None
    draft_hash: str
    attempts: int
    lease_token: str
    engine: str
    rewrite: bool
    error: str | None
    #: (key, review JSON) of a finished item of the batch with the same draft, found when the
    #: item was claimed (one query per claim rather than one per item).
    reuse: tuple[str, str] | None = None


@dataclass(frozen=True)
class ItemResult:
    id: int
    seq: int
    key: str
    location: dict[str, str | int]
    state: str
    attempts: int
    error: str | None
    result: str | None  # Review JSON
    markup: str | None
    duplicate_of: str | None
    request: str | None = None  # ReviewRequest JSON (with `with_requests`)


@dataclass(frozen=True)
class OutboxEvent:
    id: str
    tenant: str
    batch_id: str
    event: str
    url: str
    payload: str
    attempts: int


def _now() -> datetime:
    return datetime.now(UTC)


def _batch(row: Row[Any]) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        tenant=row.tenant,
        state=row.state,
        source=row.source,
        engine=row.engine,
        rewrite=bool(row.rewrite),
        total=row.total,
        generation=row.generation,
        webhook_url=row.webhook_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _held(item: ClaimedItem) -> ColumnElement[bool]:
    """The item is still leased under the lease its worker holds (else a write is refused)."""
    return and_(
        batch_items.c.id == item.id,
        batch_items.c.lease_token == item.lease_token,
        batch_items.c.state == "leased",
    )


class BatchStore(WorkerStore):
    """The batch half of `SqlStore` (mixed in; `_engine` is the store's engine), with the
    presence of the workers that run batches (`WorkerStore`)."""

    _engine: AsyncEngine
    _reads: AsyncEngine  # the same pool; SQLite read transactions without the write lock
    _sealer: Sealer  # drafts and reviews at rest (COACH_STORE_KEY)

    @property
    def _postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    # -- batches ---------------------------------------------------------------------------

    async def create_batch(
        self,
        tenant: str,
        *,
        engine: str,
        rewrite: bool,
        source: str,
        items: Sequence[NewItem] = (),
        batch_id: str | None = None,
        state: str = "queued",
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[BatchRecord, bool]:
        """A new batch with `items`, in one transaction; (batch, created).

        With an `idempotency_key` already used by this tenant: the earlier batch when
        `request_hash` matches (created False), else `IdempotencyConflict`. With a `batch_id`
        that exists (a re-run of `coach batch`), that batch with its generation advanced."""
        now = _now()
        async with database_errors("creating a batch"), self._engine.begin() as conn:
            if idempotency_key is not None:
                row = (
                    await conn.execute(
                        select(batches, batches.c.request_hash).where(
                            batches.c.tenant == tenant,
                            batches.c.idempotency_key == idempotency_key,
                        )
                    )
                ).first()
                if row is not None:
                    if row.request_hash != request_hash:
                        raise IdempotencyConflict(
                            "this Idempotency-Key was used with a different request"
                        )
                    return _batch(row), False
            if batch_id is not None:
                row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
                if row is not None:
                    await conn.execute(
                        update(batches)
                        .where(batches.c.id == batch_id)
                        .values(
                            generation=batches.c.generation + 1,
                            state=state,
                            finished_at=None,
                            updated_at=now,
                        )
                    )
                    row = (
                        await conn.execute(select(batches).where(batches.c.id == batch_id))
                    ).one()
                    return _batch(row), False
            new_id = batch_id or str(uuid.uuid4())
            values = {
                "id": new_id,
                "tenant": tenant,
                "state": state,
                "source": source,
                "engine": engine,
                "rewrite": rewrite,
                "total": len(items),
                "generation": 1,
                "webhook_url": webhook_url,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "created_at": now,
                "updated_at": now,
            }
            insert = (postgresql.insert if self._postgres else sqlite.insert)(batches)
            stmt = insert.values(**values)
            if idempotency_key is not None:
                # Two requests with one key at once: the second waits for the first to commit,
                # then answers with its batch (instead of a unique-constraint error).
                stmt = stmt.on_conflict_do_nothing(index_elements=["tenant", "idempotency_key"])
            if not (await conn.execute(stmt)).rowcount:
                row = (
                    await conn.execute(
                        select(batches).where(
                            batches.c.tenant == tenant,
                            batches.c.idempotency_key == idempotency_key,
                        )
                    )
                ).one()
                if row.request_hash != request_hash:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request"
                    )
                return _batch(row), False
            if items:
                await self._insert_items(conn, new_id, items, start=0, generation=1)
            row = (await conn.execute(select(batches).where(batches.c.id == new_id))).one()
            return _batch(row), True

    async def add_items(
        self, batch_id: str, items: Sequence[NewItem], *, start: int, generation: int
    ) -> None:
        """Upsert a chunk of items numbered from `start`. An item already stored with the same
        draft keeps its state and result (a re-run skips it); one whose draft changed is
        reviewed again."""
        if not items:
            return
        async with database_errors("adding batch items"), self._engine.begin() as conn:
            await self._insert_items(conn, batch_id, items, start=start, generation=generation)

    async def _insert_items(
        self,
        conn: AsyncConnection,
        batch_id: str,
        items: Sequence[NewItem],
        *,
        start: int,
        generation: int,
    ) -> None:
        rows = []
        for offset, item in enumerate(items):
            failed = item.request is None
            rows.append(
                {
                    "batch_id": batch_id,
                    "seq": start + offset,
                    "key": item.key,
                    "location": json.dumps(item.location, ensure_ascii=False),
                    "request": self._sealer.seal(item.request),
                    "markup": self._sealer.seal(item.markup),
                    "draft_hash": item.draft_hash,
                    "generation": generation,
                    "state": "failed" if failed else "pending",
                    "attempts": 0,
                    "error": item.error if failed else None,
                    "completed_at": _now() if failed else None,
                }
            )
        insert = (postgresql.insert if self._postgres else sqlite.insert)(batch_items)
        changed = batch_items.c.draft_hash != insert.excluded.draft_hash
        stmt = insert.values(rows).on_conflict_do_update(
            index_elements=["batch_id", "key"],
            set_={
                "seq": insert.excluded.seq,
                "generation": insert.excluded.generation,
                "location": insert.excluded.location,
                "request": insert.excluded.request,
                "markup": insert.excluded.markup,
                "draft_hash": insert.excluded.draft_hash,
                "state": case((changed, insert.excluded.state), else_=batch_items.c.state),
                "error": case((changed, insert.excluded.error), else_=batch_items.c.error),
                "result": case((changed, None), else_=batch_items.c.result),
                "attempts": case((changed, 0), else_=batch_items.c.attempts),
                "duplicate_of": case((changed, None), else_=batch_items.c.duplicate_of),
                "completed_at": case(
                    (changed, insert.excluded.completed_at), else_=batch_items.c.completed_at
                ),
            },
        )
        await conn.execute(stmt)

    async def seal_batch(self, batch_id: str, *, generation: int) -> BatchRecord:
        """`coach batch` has added every item: drop items the inputs no longer hold, fix the
        total and open the batch to the finishing check."""
        async with database_errors("sealing a batch"), self._engine.begin() as conn:
            await conn.execute(
                batch_items.delete().where(
                    batch_items.c.batch_id == batch_id, batch_items.c.generation != generation
                )
            )
            total = await conn.scalar(
                select(func.count())
                .select_from(batch_items)
                .where(batch_items.c.batch_id == batch_id)
            )
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(total=int(total or 0), state="running", updated_at=_now())
            )
        await self.maybe_finish(batch_id)
        record = await self.get_batch(batch_id)
        assert record is not None
        return record

    async def get_batch(self, batch_id: str, *, tenant: str | None = None) -> BatchRecord | None:
        """The batch; None when it does not exist or belongs to another tenant."""
        condition = batches.c.id == batch_id
        if tenant is not None:
            condition &= batches.c.tenant == tenant
        async with database_errors("reading a batch"), self._reads.connect() as conn:
            row = (await conn.execute(select(batches).where(condition))).first()
        return _batch(row) if row is not None else None

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        """Items per state (every state present, zero when none)."""
        async with database_errors("counting batch items"), self._reads.connect() as conn:
            rows = await conn.execute(
                select(batch_items.c.state, func.count())
                .where(batch_items.c.batch_id == batch_id)
                .group_by(batch_items.c.state)
            )
            counts = {state: 0 for state in ITEM_STATES}
            counts.update({state: int(n) for state, n in rows})
        return counts

    async def cancel_batch(self, batch_id: str, *, tenant: str | None = None) -> BatchRecord | None:
        """Cancel the items not started; items being reviewed finish. None if not found."""
        record = await self.get_batch(batch_id, tenant=tenant)
        if record is None:
            return None
        if record.state in FINAL_BATCH_STATES:
            return record
        async with database_errors("cancelling a batch"), self._engine.begin() as conn:
            await conn.execute(
                update(batch_items)
                .where(batch_items.c.batch_id == batch_id, batch_items.c.state == "pending")
                .values(state="cancelled", completed_at=_now())
            )
            await self._finish(conn, batch_id, cancelled=True)
        return await self.get_batch(batch_id)

    async def retry_failed(self, batch_id: str) -> int:
        """Re-queue the failed items whose input was readable; how many."""
        async with database_errors("re-queueing failed items"), self._engine.begin() as conn:
            result = await conn.execute(
                update(batch_items)
                .where(
                    batch_items.c.batch_id == batch_id,
                    batch_items.c.state == "failed",
                    batch_items.c.request.is_not(None),
                )
                .values(state="pending", attempts=0, error=None, not_before=None)
            )
            if result.rowcount:
                # A `failed` batch is final: without reopening it, the re-queued items would
                # be reviewed but the batch would never finish again (no `completed`, no event).
                await conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.state == "failed")
                    .values(state="running", finished_at=None, updated_at=_now())
                )
        return int(result.rowcount or 0)

    # -- claiming and finishing items --------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_s: float,
        max_attempts: int,
        batch_id: str | None = None,
        exclude: Collection[int] = (),
    ) -> list[ClaimedItem]:
        """Lease up to `limit` claimable items (oldest first) to `owner`. `exclude`: ids the
        caller still works on, never taken back from it when their lease ran out meanwhile."""
        now = _now()
        scope = [] if batch_id is None else [batch_items.c.batch_id == batch_id]
        if exclude:
            scope.append(batch_items.c.id.not_in(list(exclude)))
        expired = and_(batch_items.c.state == "leased", batch_items.c.lease_until < now)
        async with database_errors("claiming batch items"), self._engine.begin() as conn:
            # Dead-letter first: an item whose lease ran out max_attempts times.
            lost = select(batch_items.c.id).where(
                *scope, expired, batch_items.c.attempts >= max_attempts
            )
            dead = await conn.execute(
                update(batch_items)
                .where(batch_items.c.id.in_(lost.scalar_subquery()))
                .values(
                    state="failed",
                    error=f"worker_lost: the item's lease expired {max_attempts} times",
                    lease_token=None,
                    completed_at=now,
                )
                .returning(batch_items.c.batch_id)
            )
            dead_batches = {row.batch_id for row in dead}
            # Two index walks rather than one OR: (batch_id, state, id) — or (state, id)
            # across batches — gives each in id order, where an OR made SQLite scan and sort
            # every item of the batch on each claim (18 ms a claim at 10,000 items).
            waiting = or_(batch_items.c.not_before.is_(None), batch_items.c.not_before <= now)
            picked: list[int] = []
            for ready in (expired, and_(batch_items.c.state == "pending", waiting)):
                if len(picked) >= limit:
                    break
                found = await conn.execute(
                    select(batch_items.c.id)
                    .where(*scope, ready)
                    .order_by(batch_items.c.id)
                    .limit(limit - len(picked))
                    .with_for_update(skip_locked=True)
                )
                picked += [row.id for row in found]
            token = str(uuid.uuid4())
            claimed = await conn.execute(
                update(batch_items)
                # An empty IN matches nothing: no claim, and the same path to the end.
                .where(batch_items.c.id.in_(picked))
                .values(
                    state="leased",
                    lease_owner=owner[:100],
                    lease_token=token,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=batch_items.c.attempts + 1,
                )
                .returning(
                    batch_items.c.id,
                    batch_items.c.batch_id,
                    batch_items.c.seq,
                    batch_items.c.key,
                    batch_items.c.request,
                    batch_items.c.draft_hash,
                    batch_items.c.attempts,
                    batch_items.c.error,
                )
            )
            rows = sorted(claimed.all(), key=lambda r: r.id)
            meta: dict[str, Any] = {}
            reuse: dict[tuple[str, str], tuple[str, str]] = {}
            ids = {r.batch_id for r in rows}
            if ids:
                meta = {
                    b.id: b
                    for b in await conn.execute(
                        select(
                            batches.c.id, batches.c.tenant, batches.c.engine, batches.c.rewrite
                        ).where(batches.c.id.in_(ids))
                    )
                }
                await conn.execute(
                    update(batches)
                    .where(batches.c.id.in_(ids), batches.c.state == "queued")
                    .values(state="running", updated_at=now)
                )
                reuse = await self._reusable(conn, ids, {r.draft_hash for r in rows})
        for dead_batch in dead_batches:
            await self.maybe_finish(dead_batch)
        return [
            ClaimedItem(
                id=r.id,
                batch_id=r.batch_id,
                tenant=meta[r.batch_id].tenant,
                seq=r.seq,
                key=r.key,
                request=self._sealer.open(r.request),
                draft_hash=r.draft_hash,
                attempts=r.attempts,
                lease_token=token,
                engine=meta[r.batch_id].engine,
                rewrite=bool(meta[r.batch_id].rewrite),
                error=r.error,
                reuse=reuse.get((r.batch_id, r.draft_hash)),
            )
            for r in rows
        ]

    async def _reusable(
        self, conn: AsyncConnection, batch_ids: set[str], hashes: set[str]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        rows = await conn.execute(
            select(
                batch_items.c.batch_id,
                batch_items.c.draft_hash,
                batch_items.c.key,
                batch_items.c.result,
            ).where(
                batch_items.c.batch_id.in_(batch_ids),
                batch_items.c.draft_hash.in_(hashes),
                batch_items.c.state == "done",
                batch_items.c.duplicate_of.is_(None),
            )
        )
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for row in rows:
            if row.result and (row.batch_id, row.draft_hash) not in found:
                found[row.batch_id, row.draft_hash] = (row.key, self._sealer.open(row.result) or "")
        return found

    async def extend_leases(self, items: Sequence[ClaimedItem], *, lease_s: float) -> int:
        """Push the leases of items still being reviewed; how many were still ours."""
        if not items:
            return 0
        until = _now() + timedelta(seconds=lease_s)
        extended = 0
        async with database_errors("extending leases"), self._engine.begin() as conn:
            for token in {i.lease_token for i in items}:
                ids = [i.id for i in items if i.lease_token == token]
                result = await conn.execute(
                    update(batch_items)
                    .where(
                        batch_items.c.id.in_(ids),
                        batch_items.c.lease_token == token,
                        batch_items.c.state == "leased",
                    )
                    .values(lease_until=until)
                )
                extended += int(result.rowcount or 0)
        return extended

    async def complete_item(
        self, item: ClaimedItem, result: str, *, duplicate_of: str | None = None
    ) -> bool:
        """Store the review of a leased item. False (and nothing written) when the lease is
        no longer this one's: the item was finished or re-leased elsewhere."""
        async with database_errors("storing a result"), self._engine.begin() as conn:
            written = await conn.execute(
                update(batch_items)
                .where(_held(item))
                .values(
                    state="done",
                    result=self._sealer.seal(result),
                    error=None,
                    duplicate_of=duplicate_of,
                    lease_token=None,
                    lease_until=None,
                    completed_at=_now(),
                )
            )
        return bool(written.rowcount)

    async def fail_item(
        self, item: ClaimedItem, error: str, *, retry_at: datetime | None = None
    ) -> bool:
        """Give a leased item back for a later attempt (`retry_at`), or fail it for good."""
        values: dict[str, Any] = {"error": error[:500], "lease_token": None, "lease_until": None}
        if retry_at is not None:
            # The batch was cancelled meanwhile: no further attempt (cancel stops the items
            # not started; a retry is one), else workers kept reviewing a cancelled batch.
            cancelled = (
                select(batches.c.state)
                .where(batches.c.id == batch_items.c.batch_id)
                .scalar_subquery()
                == "cancelled"
            )
            values.update(
                state=case((cancelled, "cancelled"), else_="pending"),
                completed_at=case((cancelled, _now()), else_=None),
                not_before=retry_at,
            )
        else:
            values.update(state="failed", completed_at=_now())
        async with database_errors("recording a failure"), self._engine.begin() as conn:
            written = await conn.execute(update(batch_items).where(_held(item)).values(**values))
        return bool(written.rowcount)

    async def release(self, items: Sequence[ClaimedItem]) -> None:
        """Hand back items a stopping worker had not finished (the attempt does not count)."""
        if not items:
            return
        async with database_errors("releasing items"), self._engine.begin() as conn:
            for item in items:
                await conn.execute(
                    update(batch_items)
                    .where(_held(item))
                    .values(
                        state="pending",
                        lease_token=None,
                        lease_until=None,
                        attempts=func.max(batch_items.c.attempts - 1, 0)
                        if not self._postgres
                        else func.greatest(batch_items.c.attempts - 1, 0),
                    )
                )

    async def lease_owners(self, batch_id: str | None = None) -> set[str]:
        """The workers holding leases (on the batch, or on any)."""
        scope = [] if batch_id is None else [batch_items.c.batch_id == batch_id]
        async with database_errors("reading leases"), self._reads.connect() as conn:
            rows = await conn.scalars(
                select(batch_items.c.lease_owner)
                .where(*scope, batch_items.c.state == "leased")
                .distinct()
            )
            return {owner for owner in rows if owner}

    async def end_leases_of(self, owners: Collection[str]) -> int:
        """End now the leases of workers known to be dead: their items are claimable at once,
        as if the leases had run out (the attempt counts, and dead-lettering applies)."""
        if not owners:
            return 0
        async with database_errors("ending leases"), self._engine.begin() as conn:
            ended = await conn.execute(
                update(batch_items)
                .where(batch_items.c.state == "leased", batch_items.c.lease_owner.in_(owners))
                .values(lease_until=_now() - timedelta(seconds=1))
            )
        return int(ended.rowcount or 0)

    async def maybe_finish(self, batch_id: str) -> BatchRecord | None:
        """Move the batch to its final state when no item is left to review; the batch when
        this call finished it, else None."""
        async with database_errors("finishing a batch"), self._engine.begin() as conn:
            finished = await self._finish(conn, batch_id, cancelled=False)
        return await self.get_batch(batch_id) if finished else None

    async def _finish(self, conn: AsyncConnection, batch_id: str, *, cancelled: bool) -> bool:
        if not cancelled and await self._any(conn, batch_id, *_OPEN_ITEM_STATES):
            return False
        failed = await self._any(conn, batch_id, "failed")
        state = "cancelled" if cancelled else ("failed" if failed else "completed")
        now = _now()
        moved = await conn.execute(
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.state.not_in([*FINAL_BATCH_STATES, "open"]),
            )
            .values(state=state, finished_at=now, updated_at=now)
        )
        if not moved.rowcount:
            return False
        row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()
        if row.webhook_url:
            counts = {
                s: int(n)
                for s, n in await conn.execute(
                    select(batch_items.c.state, func.count())
                    .where(batch_items.c.batch_id == batch_id)
                    .group_by(batch_items.c.state)
                )
            }
            event = f"batch.{state}"
            event_id = f"msg_{uuid.uuid4().hex}"
            payload = {
                "type": event,
                "timestamp": now.isoformat(),
                "data": {
                    "id": batch_id,
                    "status": state,
                    "total": row.total,
                    "counts": {s: counts.get(s, 0) for s in ITEM_STATES},
                    "results_url": f"/v1/batches/{batch_id}/results",
                },
            }
            values: dict[str, Any] = {
                "id": event_id,
                "tenant": row.tenant,
                "batch_id": batch_id,
                "event": event,
                "url": row.webhook_url,
                "payload": json.dumps(payload, separators=(",", ":")),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            insert = (postgresql.insert if self._postgres else sqlite.insert)(webhook_outbox)
            # A batch finished again after `retry_failed` (failed twice): one row per event
            # kind, so the earlier row is re-armed as a new event (new id, new payload).
            rearm = {k: v for k, v in values.items() if k != "batch_id"}
            rearm.update(lease_until=None, last_error=None, last_status=None, delivered_at=None)
            await conn.execute(
                insert.values(**values).on_conflict_do_update(
                    index_elements=["batch_id", "event"], set_=rearm
                )
            )
        return True

    # -- deleting ------------------------------------------------------------------------------

    async def delete_batch(self, batch_id: str, *, tenant: str | None = None) -> bool:
        """Delete a batch with its items, results and webhook events, whatever its state
        (an item in flight is dropped: its worker's write is refused). False when there is no
        such batch (of `tenant`)."""
        scope = [batches.c.id == batch_id]
        if tenant is not None:
            scope.append(batches.c.tenant == tenant)
        async with database_errors("deleting a batch"), self._engine.begin() as conn:
            if await conn.scalar(select(batches.c.id).where(*scope)) is None:
                return False
            await self._delete(conn, [batch_id])
        return True

    async def purge_finished(
        self, *, older_than_s: float, keep: str | None = None, limit: int = 100
    ) -> list[str]:
        """Delete up to `limit` batches that finished more than `older_than_s` ago (the
        retention period), except `keep` (the batch a `coach batch` run is about to write out);
        their ids."""
        before = _now() - timedelta(seconds=older_than_s)
        spared = [] if keep is None else [batches.c.id != keep]
        async with database_errors("purging old batches"), self._engine.begin() as conn:
            ids = list(
                await conn.scalars(
                    select(batches.c.id)
                    .where(
                        batches.c.state.in_(FINAL_BATCH_STATES),
                        batches.c.finished_at < before,
                        *spared,
                    )
                    .order_by(batches.c.finished_at)
                    .limit(limit)
                )
            )
            await self._delete(conn, ids)
        return ids

    @staticmethod
    async def _delete(conn: AsyncConnection, batch_ids: list[str]) -> None:
        if not batch_ids:
            return
        for table in (batch_items, webhook_outbox, batches):
            column = batches.c.id if table is batches else table.c.batch_id
            await conn.execute(delete(table).where(column.in_(batch_ids)))

    @staticmethod
    async def _any(conn: AsyncConnection, batch_id: str, *states: str) -> bool:
        # An index probe (batch_id, state), not a count: this runs at the end of every chunk.
        found = await conn.scalar(
            select(batch_items.c.id)
            .where(batch_items.c.batch_id == batch_id, batch_items.c.state.in_(states))
            .limit(1)
        )
        return found is not None

    async def open_items(self, batch_id: str | None = None) -> bool:
        """Whether any item (of the batch, or of any batch) is still pending or leased."""
        scope = [] if batch_id is None else [batch_items.c.batch_id == batch_id]
        query = select(batch_items.c.id).where(*scope, batch_items.c.state.in_(_OPEN_ITEM_STATES))
        async with database_errors("checking open items"), self._reads.connect() as conn:
            found = await conn.scalar(query.limit(1))
        return found is not None

    # -- results ------------------------------------------------------------------------------

    async def results_page(
        self,
        batch_id: str,
        *,
        after_seq: int = -1,
        limit: int = 500,
        contiguous: bool = False,
        with_requests: bool = False,
    ) -> list[ItemResult]:
        """Finished items in item order after `after_seq`. `contiguous`: stop at the first
        item still open, so a cursor (the last seq read) never skips one that finishes
        later."""
        columns = (
            batch_items.c.id,
            batch_items.c.seq,
            batch_items.c.key,
            batch_items.c.location,
            batch_items.c.state,
            batch_items.c.attempts,
            batch_items.c.error,
            batch_items.c.result,
            batch_items.c.markup,
            batch_items.c.duplicate_of,
            batch_items.c.request if with_requests else batch_items.c.id.label("request_"),
        )
        async with database_errors("reading results"), self._reads.connect() as conn:
            rows = (
                await conn.execute(
                    select(*columns)
                    .where(batch_items.c.batch_id == batch_id, batch_items.c.seq > after_seq)
                    .order_by(batch_items.c.seq)
                    .limit(limit)
                )
            ).all()
        out: list[ItemResult] = []
        for row in rows:
            if row.state in _OPEN_ITEM_STATES:
                if contiguous:
                    break
                continue
            out.append(
                ItemResult(
                    id=row.id,
                    seq=row.seq,
                    key=row.key,
                    location=json.loads(row.location),
                    state=row.state,
                    attempts=row.attempts,
                    error=row.error,
                    result=self._sealer.open(row.result),
                    markup=self._sealer.open(row.markup),
                    duplicate_of=row.duplicate_of,
                    request=self._sealer.open(row.request) if with_requests else None,
                )
            )
        return out

    async def pending_requests(
        self, batch_id: str, *, after_id: int = 0, limit: int = 500
    ) -> list[tuple[int, str, str]]:
        """(id, key, request JSON) of open items, for the provider Batch API path."""
        async with database_errors("reading items"), self._reads.connect() as conn:
            rows = await conn.execute(
                select(batch_items.c.id, batch_items.c.key, batch_items.c.request)
                .where(
                    batch_items.c.batch_id == batch_id,
                    batch_items.c.id > after_id,
                    batch_items.c.state.in_(_OPEN_ITEM_STATES),
                    batch_items.c.request.is_not(None),
                )
                .order_by(batch_items.c.id)
                .limit(limit)
            )
            return [(r.id, r.key, self._sealer.open(r.request) or "") for r in rows]

    async def item_request(self, batch_id: str, item_id: int) -> str | None:
        async with database_errors("reading an item"), self._reads.connect() as conn:
            sealed = await conn.scalar(
                select(batch_items.c.request).where(
                    batch_items.c.batch_id == batch_id, batch_items.c.id == item_id
                )
            )
        return self._sealer.open(sealed)

    async def settle_item(
        self, batch_id: str, item_id: int, *, result: str | None, error: str | None
    ) -> bool:
        """Write the outcome of an item reviewed outside the lease protocol (the provider
        Batch API): only an item not yet done is changed, so merging twice is harmless."""
        values: dict[str, Any] = {"lease_token": None, "lease_until": None, "completed_at": _now()}
        if result is not None:
            values.update(state="done", result=self._sealer.seal(result), error=None)
        else:
            values.update(state="failed", error=(error or "unknown error")[:500])
        async with database_errors("storing a result"), self._engine.begin() as conn:
            written = await conn.execute(
                update(batch_items)
                .where(
                    batch_items.c.batch_id == batch_id,
                    batch_items.c.id == item_id,
                    batch_items.c.state.in_(_OPEN_ITEM_STATES),
                )
                .values(**values)
            )
        return bool(written.rowcount)

    # -- provider Batch API state ----------------------------------------------------------

    async def load_provider_state(self, batch_id: str) -> dict[str, Any] | None:
        async with database_errors("reading provider state"), self._reads.connect() as conn:
            raw = await conn.scalar(
                select(batches.c.provider_state).where(batches.c.id == batch_id)
            )
        return json.loads(raw) if raw else None

    async def save_provider_state(self, batch_id: str, state: dict[str, Any]) -> None:
        async with database_errors("saving provider state"), self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(provider_state=json.dumps(state), updated_at=_now())
            )

    # -- the webhook outbox ------------------------------------------------------------------

    async def claim_events(self, *, limit: int, lease_s: float) -> list[OutboxEvent]:
        """Webhook events due for delivery, leased so that one sender delivers each."""
        now = _now()
        due = and_(
            webhook_outbox.c.state == "pending",
            webhook_outbox.c.next_attempt_at <= now,
            or_(webhook_outbox.c.lease_until.is_(None), webhook_outbox.c.lease_until < now),
        )
        async with database_errors("claiming webhook events"), self._engine.begin() as conn:
            pick = (
                select(webhook_outbox.c.id)
                .where(due)
                .order_by(webhook_outbox.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = await conn.execute(
                update(webhook_outbox)
                .where(webhook_outbox.c.id.in_(pick.scalar_subquery()))
                .values(
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=webhook_outbox.c.attempts + 1,
                )
                .returning(
                    webhook_outbox.c.id,
                    webhook_outbox.c.tenant,
                    webhook_outbox.c.batch_id,
                    webhook_outbox.c.event,
                    webhook_outbox.c.url,
                    webhook_outbox.c.payload,
                    webhook_outbox.c.attempts,
                )
            )
            return [
                OutboxEvent(
                    id=r.id,
                    tenant=r.tenant,
                    batch_id=r.batch_id,
                    event=r.event,
                    url=r.url,
                    payload=r.payload,
                    attempts=r.attempts,
                )
                for r in rows
            ]

    async def record_delivery(
        self,
        event_id: str,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        """After an attempt: delivered, due again at `retry_at`, or dead (no retry_at)."""
        values: dict[str, Any] = {
            "last_status": status,
            "last_error": (error or "")[:300] or None,
            "lease_until": None,
        }
        if delivered:
            values.update(state="delivered", delivered_at=_now())
        elif retry_at is not None:
            values.update(state="pending", next_attempt_at=retry_at)
        else:
            values.update(state="dead")
        async with database_errors("recording a delivery"), self._engine.begin() as conn:
            await conn.execute(
                update(webhook_outbox).where(webhook_outbox.c.id == event_id).values(**values)
            )

    async def events(self, batch_id: str) -> list[dict[str, Any]]:
        """The webhook events of a batch and their delivery state (for status and tests)."""
        async with database_errors("reading webhook events"), self._reads.connect() as conn:
            rows = await conn.execute(
                select(
                    webhook_outbox.c.id,
                    webhook_outbox.c.event,
                    webhook_outbox.c.state,
                    webhook_outbox.c.attempts,
                    webhook_outbox.c.last_status,
                    webhook_outbox.c.last_error,
                )
                .where(webhook_outbox.c.batch_id == batch_id)
                .order_by(webhook_outbox.c.created_at)
            )
            return [dict(r._mapping) for r in rows]
