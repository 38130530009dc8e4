"""The batch worker against the store (SQLite and PostgreSQL) with the rule engine behind a spy:
a batch fully reviewed, identical drafts reviewed once, retries and final failures, crashes
that never lose an item, a clean stop that hands items back, and lease renewal that keeps a
slow item from a second worker."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from store.store_support import BACKENDS, database, store_at

import coach.batch.worker as worker_module
from batch.batch_support import item_rows, new_items
from coach.batch.worker import Worker, WorkerConfig
from coach.errors import LLMRateLimited, LLMRefusal
from coach.models import Review, ReviewRequest
from coach.service import ReviewService
from coach.store import SqlStore

Hook = Callable[[str, int], Awaitable[None]]


class SpyService(ReviewService):
    """The rule engine, counting reviews per draft; `hook(text, nth_call)` runs first (it may
    raise or sleep)."""

    def __init__(self, hook: Hook | None = None) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.hook = hook

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        self.calls[request.text] += 1
        if self.hook is not None:
            await self.hook(request.text, self.calls[request.text])
        return await super().review(request, engine=engine, rewrite=rewrite, strict=strict)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "retry_delay", lambda attempt, **_: 0.0)


def _config(**kwargs: object) -> WorkerConfig:
    values: dict[str, object] = {"concurrency": 8, "poll_s": 0.05, "max_attempts": 3}
    values.update(kwargs)
    return WorkerConfig(**values)  # type: ignore[arg-type]


async def _batch(store: SqlStore, n: int, **kwargs: str) -> str:
    record, _ = await store.create_batch(
        "acme", engine="rules", rewrite=True, source="api", items=new_items(n, **kwargs)
    )
    return record.id


async def _copies(store: SqlStore, copies: int, drafts: int) -> str:
    """A batch of `copies` copies of each of `drafts` drafts ("Identical draft {i}, ok?"), the
    copies of one draft apart in the queue."""
    items = [
        item
        for i in range(copies)
        for item in new_items(drafts, prefix=f"copy{i}", text="Identical draft {i}, ok?")
    ]
    return (
        await store.create_batch("acme", engine="rules", rewrite=True, source="api", items=items)
    )[0].id


async def _run(store: SqlStore, service: ReviewService, **config: object) -> Worker:
    worker = Worker(store, service, _config(**config))
    await asyncio.wait_for(worker.run(until_idle=True), timeout=60)
    return worker


def test_a_batch_is_fully_reviewed(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 50)
            service = SpyService()
            worker = await _run(store, service)
            assert worker.stats.done == 50 and worker.stats.failed == 0
            assert worker.stats.in_flight == 0 and worker.stats.lost == 0
            assert sum(service.calls.values()) == 50
            page = await store.results_page(batch_id, contiguous=True)
            assert [r.seq for r in page] == list(range(50))
            assert all(r.state == "done" and r.attempts == 1 and r.result for r in page)
            assert all(Review.model_validate_json(r.result or "").engine == "rules" for r in page)
            record = await store.get_batch(batch_id)
            assert record is not None and record.state == "completed"

    asyncio.run(scenario())


def test_identical_drafts_are_reviewed_once(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            # 24 items, 3 distinct drafts, 8 in flight at a time: copies both in flight and done
            batch_id = await _copies(store, 8, 3)

            async def slow(text: str, n: int) -> None:
                await asyncio.sleep(0.05)

            service = SpyService(slow)
            worker = await _run(store, service)
            assert dict(service.calls) == {f"Identical draft {i}, ok?": 1 for i in range(3)}
            page = await store.results_page(batch_id)
            assert len(page) == 24 and all(r.state == "done" for r in page)
            originals = {r.key: r for r in page if r.duplicate_of is None}
            assert len(originals) == 3
            for r in page:
                if r.duplicate_of is not None:
                    assert r.duplicate_of in originals
                    assert r.result == originals[r.duplicate_of].result
            assert worker.stats.reused == 21

    asyncio.run(scenario())


def test_a_copy_claimed_before_its_original_was_stored_reuses_its_review(
    db_url: str, tmp_path: Path
) -> None:
    """Two identical items claimed together (so neither finds a stored copy), the second
    processed only once the first has been reviewed and stored: what happens when a claim
    reads the store just before a review of the same draft commits, and its item starts after
    that review is finished. It copies the review rather than reviewing the draft again."""

    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _copies(store, 2, 1)
            service = SpyService()
            worker = Worker(store, service, _config())
            first, second = await store.claim(
                worker.owner, limit=2, lease_s=60, max_attempts=3, batch_id=batch_id
            )
            assert first.reuse is None and second.reuse is None
            await worker._process(first)
            await worker._process(second)
            assert dict(service.calls) == {"Identical draft 0, ok?": 1}
            page = await store.results_page(batch_id)
            assert [r.duplicate_of for r in page] == [None, first.key]
            assert worker.stats.reused == 1

    asyncio.run(scenario())


def test_retryable_failure_is_retried(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 3)

            async def limited(text: str, n: int) -> None:
                if text.startswith("Draft number 1") and n <= 2:
                    raise LLMRateLimited("429 from the provider")

            worker = await _run(store, SpyService(limited))
            rows = await item_rows(store, batch_id)
            assert [(r["state"], r["attempts"]) for r in rows] == [
                ("done", 1),
                ("done", 3),
                ("done", 1),
            ]
            assert rows[1]["error"] is None
            assert worker.stats.retried == 2 and worker.stats.done == 3
            record = await store.get_batch(batch_id)
            assert record is not None and record.state == "completed"

    asyncio.run(scenario())


def test_refusal_fails_at_once_and_max_attempts_fails_with_reason(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 3)

            async def faults(text: str, n: int) -> None:
                if text.startswith("Draft number 0"):
                    raise LLMRefusal("the model refused")
                if text.startswith("Draft number 2"):
                    raise LLMRateLimited("429 again")

            service = SpyService(faults)
            worker = await _run(store, service, max_attempts=3)
            results = {r.key: r for r in await store.results_page(batch_id)}
            refused, fine, limited = (results[f"item-{i:04d}"] for i in range(3))
            assert (refused.state, refused.attempts) == ("failed", 1)
            assert refused.error == "refusal: the model refused"
            assert fine.state == "done"
            assert (limited.state, limited.attempts) == ("failed", 3)
            assert limited.error == "rate_limited: 429 again"
            assert service.calls["Draft number 2: can we talk?"] == 3
            assert worker.stats.failed == 2 and worker.stats.failures["rate_limited"] == 3
            record = await store.get_batch(batch_id)
            assert record is not None and record.state == "failed"

    asyncio.run(scenario())


def test_a_crashing_review_never_loses_the_item(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 4)

            async def crash(text: str, n: int) -> None:
                if text.startswith("Draft number 1") and n == 1:
                    raise RuntimeError("a bug, once")
                if text.startswith("Draft number 3"):
                    raise KeyError("a bug, always")

            await _run(store, SpyService(crash), max_attempts=2)
            results = {r.key: r for r in await store.results_page(batch_id)}
            assert len(results) == 4
            assert (results["item-0001"].state, results["item-0001"].attempts) == ("done", 2)
            broken = results["item-0003"]
            assert (broken.state, broken.attempts) == ("failed", 2)
            assert broken.error == "internal_error: KeyError"
            assert await store.batch_counts(batch_id) == {
                "pending": 0,
                "leased": 0,
                "done": 3,
                "failed": 1,
                "cancelled": 0,
            }

    asyncio.run(scenario())


def test_stop_hands_items_in_flight_back(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 6)
            started = asyncio.Event()

            async def hang(text: str, n: int) -> None:
                started.set()
                await asyncio.sleep(30)

            stop = asyncio.Event()
            worker = Worker(store, SpyService(hang), _config(concurrency=4))
            running = asyncio.create_task(worker.run(stop=stop))
            await asyncio.wait_for(started.wait(), timeout=10)
            await asyncio.sleep(0.1)
            assert (await store.batch_counts(batch_id))["leased"] == 4
            stop.set()
            await asyncio.wait_for(running, timeout=10)
            rows = await item_rows(store, batch_id)
            assert [(r["state"], r["attempts"], r["lease_token"]) for r in rows] == [
                ("pending", 0, None)
            ] * 6
            # and they are reviewed by the next worker
            await _run(store, SpyService())
            assert (await store.batch_counts(batch_id))["done"] == 6

    asyncio.run(scenario())


def test_lease_renewal_keeps_a_slow_item_from_a_second_worker(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as first, store_at(db_url, tmp_path) as second:
            batch_id = await _batch(first, 1)

            async def slow(text: str, n: int) -> None:
                await asyncio.sleep(1.2)  # more than twice the lease

            one, two = SpyService(slow), SpyService(slow)
            await asyncio.gather(
                _run(first, one, lease_s=0.5, concurrency=2),
                _run(second, two, lease_s=0.5, concurrency=2),
            )
            assert sum(one.calls.values()) + sum(two.calls.values()) == 1
            [row] = await item_rows(first, batch_id)
            assert (row["state"], row["attempts"]) == ("done", 1)

    asyncio.run(scenario())


def test_a_stalled_loop_does_not_review_an_item_twice(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 1)

            async def stall(text: str, n: int) -> None:
                time.sleep(0.5)  # blocks the event loop past the lease: no renewal runs
                await asyncio.sleep(0.3)  # the worker's own claim loop finds the lease expired

            service = SpyService(stall)
            worker = await _run(store, service, lease_s=0.3, concurrency=2)
            assert sum(service.calls.values()) == 1
            assert worker.stats.done == 1 and worker.stats.lost == 0
            [row] = await item_rows(store, batch_id)
            assert row["state"] == "done"

    asyncio.run(scenario())


def test_a_batch_finishes_while_the_worker_stays_busy_with_another(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            small = await _batch(store, 2, prefix="small")
            big = await _batch(store, 150, prefix="big")

            async def slow(text: str, n: int) -> None:
                await asyncio.sleep(0.02)

            stop = asyncio.Event()
            worker = Worker(store, SpyService(slow), _config(concurrency=2, poll_s=0.1))
            running = asyncio.create_task(worker.run(stop=stop))
            try:
                for _ in range(200):
                    record = await store.get_batch(small)
                    if record is not None and record.state == "completed":
                        break
                    await asyncio.sleep(0.05)
                counts = await store.batch_counts(big)
                assert counts["pending"] > 0, "the big batch ended first: make it bigger"
                assert record is not None and record.state == "completed"
            finally:
                stop.set()
                await asyncio.wait_for(running, timeout=10)

    asyncio.run(scenario())


def test_workers_delete_batches_past_their_retention_but_not_their_own(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            old, own = await _batch(store, 2), await _batch(store, 2, prefix="own")
            await _run(store, SpyService())  # finishes both; no retention: both kept
            assert await store.get_batch(old) is not None
            await asyncio.sleep(0.05)
            # A `coach batch` worker (scoped to its batch) spares the batch it writes out.
            await _run(store, SpyService(), retention_s=0.01, batch_id=own)
            assert await store.get_batch(old) is None and await store.get_batch(own) is not None
            await _run(store, SpyService(), retention_s=0.01)
            assert await store.get_batch(own) is None

    asyncio.run(scenario())


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_owner_gone_only_for_dead_processes_of_this_machine() -> None:
    here = worker_module.machine()
    assert here.startswith(socket.gethostname())
    assert worker_module.default_owner().startswith(f"{here}:{os.getpid()}:")
    assert worker_module.owner_gone(f"{here}:{_dead_pid()}:abc123")
    assert not worker_module.owner_gone(f"{here}:{os.getpid()}:abc123")  # alive
    assert not worker_module.owner_gone(f"another-{here}:{_dead_pid()}:abc123")
    # The same hostname in another pid namespace (another container): its pids are not ours.
    assert not worker_module.owner_gone(f"{socket.gethostname()}/1:{_dead_pid()}:abc123")
    assert not worker_module.owner_gone("w") and not worker_module.owner_gone(f"{here}:x:y")


def test_a_worker_takes_over_the_leases_of_a_dead_local_worker_at_once(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch_id = await _batch(store, 4)
            here = worker_module.machine()
            dead, alive = f"{here}:{_dead_pid()}:dead00", f"{here}:{os.getpid()}:live00"
            # Leases that would hold the items for ten minutes.
            await store.claim(dead, limit=2, lease_s=600, max_attempts=3, batch_id=batch_id)
            await store.claim(alive, limit=1, lease_s=600, max_attempts=3, batch_id=batch_id)
            worker = Worker(store, SpyService(), _config(batch_id=batch_id))
            stop = asyncio.Event()
            run = asyncio.create_task(worker.run(stop=stop))
            await asyncio.wait_for(_until_done(store, batch_id, 3), timeout=10)
            stop.set()
            await run
            rows = {r["key"]: r for r in await item_rows(store, batch_id)}
            taken = [r for r in rows.values() if r["state"] == "done"]
            assert len(taken) == 3 and sum(r["attempts"] == 2 for r in taken) == 2
            # The live worker's item is still its own.
            assert [r["lease_owner"] for r in rows.values() if r["state"] == "leased"] == [alive]

    asyncio.run(scenario())


async def _until_done(store: SqlStore, batch_id: str, count: int) -> None:
    while sum(r["state"] == "done" for r in await item_rows(store, batch_id)) < count:
        await asyncio.sleep(0.05)


class _PacedService(SpyService):
    """The rule engine behind a spy, as if an LLM budget paced it at `pace` requests/min."""

    def __init__(self, pace: float | None) -> None:
        self.in_flight = self.most = 0

        async def hook(text: str, nth: int) -> None:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.02)
            self.in_flight -= 1

        super().__init__(hook)
        self.pace = pace

    def llm_pace_rpm(self) -> float | None:
        return self.pace


@pytest.mark.parametrize(
    ("pace", "most"),
    [
        (None, 8),  # no budget: the whole concurrency
        (6.0, 1),  # 0.1/s for half a 20 s deadline: one at a time
        (60.0, 8),  # 1/s: 10 could wait; the concurrency (8) binds
        (36.0, 6),  # 0.6/s: 6
    ],
)
def test_a_small_budget_bounds_the_items_in_flight(
    pace: float | None, most: int, db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            await _batch(store, 24)
            service = _PacedService(pace)
            worker = await _run(store, service, concurrency=8)
            assert worker.stats.done == 24 and service.most == most

    asyncio.run(scenario())
