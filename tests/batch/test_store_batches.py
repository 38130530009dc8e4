"""The batch half of the store, on SQLite and on the real PostgreSQL: batches and idempotency,
claims and leases, results, failures and dead letters, finishing (once, with one outbox event),
cancel, tenants, the results cursor, and the re-run upsert of `coach batch`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from store.store_support import BACKENDS, database, store_at

from batch.batch_support import item_rows, new_items
from coach.store import BatchRecord, ClaimedItem, IdempotencyConflict, NewItem, SqlStore

REVIEW = '{"fake": "review"}'


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


async def _batch(store: SqlStore, n: int, *, webhook_url: str | None = None) -> str:
    record, created = await store.create_batch(
        "acme",
        engine="rules",
        rewrite=True,
        source="api",
        items=new_items(n),
        webhook_url=webhook_url,
    )
    assert created
    return record.id


async def _claim(
    store: SqlStore,
    limit: int = 1,
    *,
    lease_s: float = 60,
    max_attempts: int = 5,
    batch_id: str | None = None,
) -> list[ClaimedItem]:
    return await store.claim(
        "w", limit=limit, lease_s=lease_s, max_attempts=max_attempts, batch_id=batch_id
    )


def test_create_batch_with_items(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 3, webhook_url="https://hooks.example/x")
            record = await store.get_batch(batch_id, tenant="acme")
            assert record is not None
            assert (record.state, record.total, record.generation) == ("queued", 3, 1)
            assert record.webhook_url == "https://hooks.example/x"
            assert record.finished_at is None and record.created_at.tzinfo is not None
            counts = await store.batch_counts(batch_id)
            assert counts == {"pending": 3, "leased": 0, "done": 0, "failed": 0, "cancelled": 0}
            rows = await item_rows(store, batch_id)
            assert [r["key"] for r in rows] == ["item-0000", "item-0001", "item-0002"]
            assert [r["seq"] for r in rows] == [0, 1, 2]
            # an unreadable item is stored failed with its reason, never dropped
            unreadable = NewItem(
                key="bad",
                location={"path": "bad.txt"},
                request=None,
                draft_hash="h",
                error="empty file",
            )
            other, _ = await store.create_batch(
                "acme", engine="rules", rewrite=True, source="cli", items=[unreadable]
            )
            page = await store.results_page(other.id)
            assert [(r.key, r.state, r.error) for r in page] == [("bad", "failed", "empty file")]

    asyncio.run(scenario())


def test_idempotency_key(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:

            async def create(tenant: str, request_hash: str) -> tuple[BatchRecord, bool]:
                return await store.create_batch(
                    tenant,
                    engine="rules",
                    rewrite=True,
                    source="api",
                    items=new_items(2),
                    idempotency_key="k1",
                    request_hash=request_hash,
                )

            first, created = await create("acme", "h1")
            assert created
            again, created = await create("acme", "h1")
            assert not created and again.id == first.id
            assert (await store.batch_counts(first.id))["pending"] == 2  # items not added twice
            with pytest.raises(IdempotencyConflict):
                await create("acme", "h2")
            other, created = await create("globex", "h1")
            assert created and other.id != first.id and other.tenant == "globex"

    asyncio.run(scenario())


def test_claim_oldest_first_counts_attempts_and_complete(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            first = await _batch(store, 3)
            second = await _batch(store, 2)
            claimed = await _claim(store, 4)
            assert [(c.batch_id, c.key) for c in claimed] == [
                (first, "item-0000"),
                (first, "item-0001"),
                (first, "item-0002"),
                (second, "item-0000"),
            ]
            assert all(
                c.attempts == 1 and c.tenant == "acme" and c.engine == "rules" for c in claimed
            )
            assert len({c.lease_token for c in claimed}) == 1
            record = await store.get_batch(first)
            assert record is not None and record.state == "running"
            # scoped to a batch
            rest = await _claim(store, 5, batch_id=second)
            assert [c.key for c in rest] == ["item-0001"]
            assert await _claim(store, 5) == []

            item = claimed[0]
            assert await store.complete_item(item, REVIEW)
            assert not await store.complete_item(item, '{"other": 1}')  # idempotent
            page = await store.results_page(first)
            assert [(r.key, r.state, r.result, r.attempts) for r in page] == [
                ("item-0000", "done", REVIEW, 1)
            ]

    asyncio.run(scenario())


def test_concurrent_claimers_never_share_an_item(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            stores = [await stack.enter_async_context(store_at(db_url, tmp_path)) for _ in range(4)]
            batch_id = await _batch(stores[0], 60)

            async def claimer(store: SqlStore) -> list[int]:
                got: list[int] = []
                for _ in range(8):
                    got += [c.id for c in await _claim(store, 3)]
                return got

            results = await asyncio.gather(*(claimer(s) for s in stores for _ in range(2)))
            ids = [i for r in results for i in r]
            assert len(ids) == len(set(ids)) == 60
            rows = await item_rows(stores[0], batch_id)
            assert all(r["state"] == "leased" and r["attempts"] == 1 for r in rows)

    asyncio.run(scenario())


def test_stale_token_cannot_write(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1)
            [old] = await _claim(store, lease_s=0.05)
            await asyncio.sleep(0.15)
            [new] = await _claim(store)  # the lease expired: claimable again
            assert new.id == old.id and new.attempts == 2 and new.lease_token != old.lease_token
            assert not await store.complete_item(old, '{"late": 1}')
            assert not await store.fail_item(old, "timeout: late")
            assert await store.extend_leases([old], lease_s=60) == 0
            assert await store.complete_item(new, REVIEW)
            [row] = await item_rows(store, batch_id)
            assert (row["state"], row["result"], row["attempts"]) == ("done", REVIEW, 2)

    asyncio.run(scenario())


def test_lease_expiry_dead_letters_after_max_attempts(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1)
            for attempt in (1, 2):
                [item] = await _claim(store, lease_s=0.05, max_attempts=2)
                assert item.attempts == attempt
                await asyncio.sleep(0.12)
            assert await _claim(store, max_attempts=2) == []
            [row] = await item_rows(store, batch_id)
            assert row["state"] == "failed" and row["error"].startswith("worker_lost")
            assert row["completed_at"] is not None
            record = await store.get_batch(batch_id)
            assert record is not None and record.state == "failed"
            assert record.finished_at is not None

    asyncio.run(scenario())


def test_lease_renewal_keeps_the_item(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            await _batch(store, 1)
            [item] = await _claim(store, lease_s=0.2)
            for _ in range(3):
                await asyncio.sleep(0.1)
                assert await store.extend_leases([item], lease_s=0.2) == 1
            assert await _claim(store) == []
            assert await store.complete_item(item, REVIEW)

    asyncio.run(scenario())


def test_fail_with_retry_at_and_final_fail(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 2)
            waiting, due = await _claim(store, 2)
            later = datetime.now(UTC) + timedelta(minutes=5)
            earlier = datetime.now(UTC) - timedelta(seconds=1)
            assert await store.fail_item(waiting, "rate_limited: slow down", retry_at=later)
            assert await store.fail_item(due, "timeout: slow", retry_at=earlier)
            [again] = await _claim(store, 2)  # `waiting` is not claimable before retry_at
            assert again.id == due.id and again.attempts == 2 and again.error == "timeout: slow"
            assert await store.fail_item(again, "refusal: no")
            assert await store.maybe_finish(batch_id) is None  # `waiting` is still open
            assert await store.open_items(batch_id)
            results = await store.results_page(batch_id)
            assert [(r.key, r.state, r.error, r.attempts) for r in results] == [
                ("item-0001", "failed", "refusal: no", 2)
            ]

    asyncio.run(scenario())


def test_retry_failed_requeues_and_the_batch_can_complete(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 2)
            one, two = await _claim(store, 2)
            assert await store.complete_item(one, REVIEW)
            assert await store.fail_item(two, "refusal: no")
            finished = await store.maybe_finish(batch_id)
            assert finished is not None and finished.state == "failed"

            assert await store.retry_failed(batch_id) == 1
            [again] = await _claim(store)
            assert again.id == two.id and again.attempts == 1 and again.error is None
            assert await store.complete_item(again, REVIEW)
            finished = await store.maybe_finish(batch_id)
            assert finished is not None and finished.state == "completed"
            assert await store.batch_counts(batch_id) == {
                "pending": 0,
                "leased": 0,
                "done": 2,
                "failed": 0,
                "cancelled": 0,
            }

    asyncio.run(scenario())


def test_release_does_not_count_the_attempt(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 2)
            claimed = await _claim(store, 2)
            await store.release(claimed)
            rows = await item_rows(store, batch_id)
            assert [(r["state"], r["attempts"], r["lease_token"]) for r in rows] == [
                ("pending", 0, None),
                ("pending", 0, None),
            ]
            again = await _claim(store, 2)
            assert [c.attempts for c in again] == [1, 1]
            await store.release(claimed)  # stale tokens: nothing changes
            assert [r["state"] for r in await item_rows(store, batch_id)] == ["leased", "leased"]

    asyncio.run(scenario())


def test_maybe_finish_once_with_one_outbox_event(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            stores = [await stack.enter_async_context(store_at(db_url, tmp_path)) for _ in range(3)]
            store = stores[0]
            batch_id = await _batch(store, 2, webhook_url="https://hooks.example/x")
            items = await _claim(store, 2)
            assert await store.complete_item(items[0], REVIEW)
            assert await store.maybe_finish(batch_id) is None  # one item still leased
            assert await store.complete_item(items[1], REVIEW)
            finished = await asyncio.gather(
                *(s.maybe_finish(batch_id) for s in stores for _ in range(4))
            )
            winners = [f for f in finished if f is not None]
            assert len(winners) == 1 and winners[0].state == "completed"
            assert winners[0].finished_at is not None
            assert await store.maybe_finish(batch_id) is None
            events = await store.events(batch_id)
            assert [(e["event"], e["state"]) for e in events] == [("batch.completed", "pending")]
            [event] = await store.claim_events(limit=5, lease_s=30)
            assert event.url == "https://hooks.example/x" and event.tenant == "acme"
            assert '"status":"completed"' in event.payload and '"done":2' in event.payload
            assert await store.claim_events(limit=5, lease_s=30) == []  # leased

            # no webhook_url: finished, no event
            quiet = await _batch(store, 1)
            [item] = await _claim(store, batch_id=quiet)
            assert await store.complete_item(item, REVIEW)
            assert await store.maybe_finish(quiet) is not None
            assert await store.events(quiet) == []

    asyncio.run(scenario())


def test_cancel(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 3, webhook_url="https://hooks.example/x")
            [leased] = await _claim(store)
            assert await store.cancel_batch(batch_id, tenant="globex") is None
            record = await store.cancel_batch(batch_id, tenant="acme")
            assert record is not None and record.state == "cancelled"
            counts = await store.batch_counts(batch_id)
            assert (counts["cancelled"], counts["leased"]) == (2, 1)
            assert await _claim(store) == []
            assert await store.complete_item(leased, REVIEW)  # in flight: finishes
            assert await store.maybe_finish(batch_id) is None
            again = await store.cancel_batch(batch_id)
            assert again is not None and again.state == "cancelled"
            assert [e["event"] for e in await store.events(batch_id)] == ["batch.cancelled"]

    asyncio.run(scenario())


def test_tenants_do_not_see_each_other(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1)
            assert await store.get_batch(batch_id, tenant="globex") is None
            assert await store.get_batch("no-such-batch") is None
            found = await store.get_batch(batch_id, tenant="acme")
            assert found is not None and found.id == batch_id

    asyncio.run(scenario())


def test_results_page_contiguous_stops_at_first_open_item(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 5)
            items = await _claim(store, 5)
            for i in (0, 1, 3):
                assert await store.complete_item(items[i], REVIEW)
            contiguous = await store.results_page(batch_id, contiguous=True)
            assert [r.seq for r in contiguous] == [0, 1]
            assert [r.seq for r in await store.results_page(batch_id)] == [0, 1, 3]
            assert [r.seq for r in await store.results_page(batch_id, after_seq=1, limit=2)] == [3]
            assert await store.results_page(batch_id, after_seq=1, contiguous=True) == []
            assert await store.complete_item(items[2], REVIEW)
            assert await store.fail_item(items[4], "refusal: no")
            page = await store.results_page(
                batch_id, after_seq=1, contiguous=True, with_requests=True
            )
            assert [(r.seq, r.state) for r in page] == [(2, "done"), (3, "done"), (4, "failed")]
            assert all(r.request is not None and '"text"' in r.request for r in page)

    asyncio.run(scenario())


def test_rerun_upsert_keeps_unchanged_requeues_changed_drops_removed(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = "5f0b1c2e-0000-4000-8000-000000000001"
            record, created = await store.create_batch(
                "cli", engine="rules", rewrite=True, source="cli", batch_id=batch_id, state="open"
            )
            assert created and record.generation == 1 and record.state == "open"
            await store.add_items(batch_id, new_items(3), start=0, generation=1)
            items = await _claim(store, 3)
            for item in items:
                assert await store.complete_item(item, REVIEW)
            assert await store.maybe_finish(batch_id) is None  # still open: not finished
            sealed = await store.seal_batch(batch_id, generation=1)
            assert (sealed.state, sealed.total) == ("completed", 3)

            again, created = await store.create_batch(
                "cli", engine="rules", rewrite=True, source="cli", batch_id=batch_id, state="open"
            )
            assert not created and again.generation == 2 and again.state == "open"
            assert again.finished_at is None
            kept, _, removed = new_items(3)
            [changed] = new_items(1, text="A different draft {i}")
            changed = NewItem(
                key="item-0001",
                location=changed.location,
                request=changed.request,
                draft_hash=changed.draft_hash,
            )
            fresh = NewItem(
                key="new", location={"id": "new"}, request=kept.request, draft_hash="x" * 64
            )
            await store.add_items(batch_id, [kept, changed], start=0, generation=2)
            await store.add_items(batch_id, [fresh], start=2, generation=2)
            sealed = await store.seal_batch(batch_id, generation=2)
            assert (sealed.state, sealed.total) == ("running", 3)
            rows = {r["key"]: r for r in await item_rows(store, batch_id)}
            assert set(rows) == {"item-0000", "item-0001", "new"}
            assert removed.key not in rows
            assert (rows["item-0000"]["state"], rows["item-0000"]["result"]) == ("done", REVIEW)
            assert rows["item-0000"]["attempts"] == 1
            assert (rows["item-0001"]["state"], rows["item-0001"]["result"]) == ("pending", None)
            assert rows["item-0001"]["attempts"] == 0
            assert rows["new"]["state"] == "pending"
            claimed = await _claim(store, 5)
            assert sorted(c.key for c in claimed) == ["item-0001", "new"]
            for item in claimed:
                assert await store.complete_item(item, REVIEW)
            finished = await store.maybe_finish(batch_id)
            assert finished is not None and finished.state == "completed"

    asyncio.run(scenario())


def test_concurrent_creates_with_one_idempotency_key_give_one_batch(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            stores = [await stack.enter_async_context(store_at(db_url, tmp_path)) for _ in range(3)]

            async def create(store: SqlStore) -> tuple[BatchRecord, bool]:
                return await store.create_batch(
                    "acme",
                    engine="rules",
                    rewrite=True,
                    source="api",
                    items=new_items(20),
                    idempotency_key="same",
                    request_hash="h",
                )

            results = await asyncio.gather(*(create(s) for s in stores for _ in range(3)))
            assert len({record.id for record, _ in results}) == 1
            assert [created for _, created in results].count(True) == 1
            assert (await stores[0].batch_counts(results[0][0].id))["pending"] == 20

    asyncio.run(scenario())


def test_a_retried_batch_that_fails_again_announces_it_again(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1, webhook_url="https://hooks.example/x")
            for _ in range(2):
                [item] = await _claim(store)
                assert await store.fail_item(item, "refusal: no")
                finished = await store.maybe_finish(batch_id)
                assert finished is not None and finished.state == "failed"
                [event] = await store.claim_events(limit=5, lease_s=30)
                assert '"status":"failed"' in event.payload
                await store.record_delivery(
                    event.id, delivered=True, status=204, error=None, retry_at=None
                )
                assert await store.retry_failed(batch_id) == 1
            [item] = await _claim(store)
            assert await store.complete_item(item, REVIEW)
            finished = await store.maybe_finish(batch_id)
            assert finished is not None and finished.state == "completed"
            events = await store.events(batch_id)
            assert [(e["event"], e["state"]) for e in events] == [
                ("batch.failed", "delivered"),
                ("batch.completed", "pending"),
            ]

    asyncio.run(scenario())


def test_a_retry_after_cancel_is_cancelled_not_requeued(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 2)
            first, second = await _claim(store, 2)
            assert await store.cancel_batch(batch_id) is not None
            soon = datetime.now(UTC) - timedelta(seconds=1)
            assert await store.fail_item(first, "rate_limited: later", retry_at=soon)
            assert await _claim(store) == []  # a cancelled batch gets no new attempt
            assert await store.complete_item(second, REVIEW)  # a review in flight finishes
            counts = await store.batch_counts(batch_id)
            assert (counts["cancelled"], counts["done"], counts["pending"]) == (1, 1, 0)
            assert not await store.open_items(batch_id)
            row = (await item_rows(store, batch_id))[0]
            assert row["state"] == "cancelled"
            assert abs(row["completed_at"] - datetime.now(UTC)) < timedelta(minutes=1)

    asyncio.run(scenario())


async def _finish_all(store: SqlStore, batch_id: str) -> None:
    for item in await _claim(store, 10, batch_id=batch_id):
        assert await store.complete_item(item, REVIEW)
    assert await store.maybe_finish(batch_id) is not None


def test_delete_batch_removes_items_results_and_events(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 2, webhook_url="https://hooks.example/x")
            other = await _batch(store, 1)
            await _finish_all(store, batch_id)
            assert len(await store.events(batch_id)) == 1
            assert not await store.delete_batch(batch_id, tenant="globex")  # not theirs
            assert await store.get_batch(batch_id) is not None
            assert await store.delete_batch(batch_id, tenant="acme")
            assert await store.get_batch(batch_id) is None
            assert await item_rows(store, batch_id) == []
            assert await store.events(batch_id) == []
            assert await store.claim_events(limit=5, lease_s=30) == []
            assert not await store.delete_batch(batch_id)
            assert len(await item_rows(store, other)) == 1  # the other batch is untouched

    asyncio.run(scenario())


def test_a_result_for_a_deleted_batch_is_refused(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1)
            [item] = await _claim(store)
            assert await store.delete_batch(batch_id)
            assert not await store.complete_item(item, REVIEW)
            assert await item_rows(store, batch_id) == []

    asyncio.run(scenario())


def test_purge_deletes_only_batches_finished_before_the_retention(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            old, kept, running = (
                await _batch(store, 1),
                await _batch(store, 1),
                await _batch(store, 2),
            )
            await _finish_all(store, old)
            await _finish_all(store, kept)
            [item] = await _claim(store, batch_id=running)
            assert await store.complete_item(item, REVIEW)
            # Nothing finished an hour ago yet.
            assert await store.purge_finished(older_than_s=3600) == []
            await asyncio.sleep(0.05)
            assert await store.purge_finished(older_than_s=0.01, keep=kept) == [old]
            assert await store.get_batch(old) is None and await item_rows(store, old) == []
            assert await store.get_batch(kept) is not None  # spared: its run writes it out
            assert await store.get_batch(running) is not None  # not finished: never purged
            assert await store.purge_finished(older_than_s=0.01) == [kept]

    asyncio.run(scenario())
