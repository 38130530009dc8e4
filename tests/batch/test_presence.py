"""Workers count each other in the store (SQLite and PostgreSQL) and share the provider's rate
budget: check-ins per pool, stale rows of killed workers expire, a stopped worker checks out,
and running workers pace their LLM engine at 1/n of COACH_LLM_RPM."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store.store_support import BACKENDS, database, store_at

from batch.batch_support import LLM_SETTINGS, FakeLLM, new_items
from coach.batch.presence import Presence, budget_pool
from coach.batch.worker import Worker, WorkerConfig
from coach.engines import ENGINES
from coach.engines.base import Reviewer
from coach.service import ReviewService
from coach.settings import Settings
from coach.store import SqlStore
from coach.store.db import StoreError


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


def test_check_ins_count_the_workers_of_a_pool(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            assert await store.check_in("a", pool="p1", ttl_s=60) == 1
            assert await store.check_in("b", pool="p1", ttl_s=60) == 2
            assert await store.check_in("c", pool="p2", ttl_s=60) == 1  # another model
            assert await store.check_in("a", pool="p1", ttl_s=60) == 2  # again: still one row
            await store.check_out("b")
            assert await store.check_in("a", pool="p1", ttl_s=60) == 1
            # An idle worker counts itself, but the others do not count it.
            assert await store.check_in("idle", pool="p1", ttl_s=60, active=False) == 2
            assert await store.check_in("a", pool="p1", ttl_s=60) == 1

    asyncio.run(scenario())


def test_a_worker_that_stopped_checking_in_no_longer_counts(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            await store.check_in("killed", pool="p", ttl_s=60)
            assert await store.check_in("alive", pool="p", ttl_s=60) == 2
            await asyncio.sleep(0.4)
            # The killed worker never checked out; its row is older than the TTL now.
            assert await store.check_in("alive", pool="p", ttl_s=0.3) == 1

    asyncio.run(scenario())


def test_the_pool_is_the_endpoint_and_the_model() -> None:
    one = Settings(llm_base_url="http://a/v1", llm_model="m")
    assert budget_pool(one) == budget_pool(Settings(llm_base_url="http://a/v1/", llm_model="m"))
    assert budget_pool(one) != budget_pool(Settings(llm_base_url="http://a/v1", llm_model="n"))
    assert budget_pool(one) != budget_pool(Settings(llm_base_url="http://b/v1", llm_model="m"))
    assert "http" not in budget_pool(one)  # a hash: the store holds no endpoint


class _HangingLLM(ReviewService):
    """An LLM-configured service whose LLM reviews (the fake engine's) wait until `release` is
    set: its items stay in flight, so its worker counts as active. The engine is built when
    first used, as in a real service."""

    def __init__(self) -> None:
        super().__init__(settings=LLM_SETTINGS)
        self.release = asyncio.Event()

    def engine(self, name: str) -> Reviewer:
        reviewer = super().engine(name)
        if isinstance(reviewer, FakeLLM):
            reviewer.hold = self.release
        return reviewer


@pytest.fixture(autouse=True)
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "llm", FakeLLM)


def _workers(service: ReviewService) -> int:
    return int(service.engine("llm").scheduler.stats().workers)  # type: ignore[attr-defined]


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def _llm_batch(store: SqlStore, n: int, prefix: str) -> str:
    record, _ = await store.create_batch(
        "acme", engine="llm", rewrite=True, source="api", items=new_items(n, prefix=prefix)
    )
    return record.id


def test_active_workers_share_the_llm_budget_and_idle_ones_take_none(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            first, second, idle = _HangingLLM(), _HangingLLM(), _HangingLLM()
            ones, twos = await _llm_batch(store, 2, "a"), await _llm_batch(store, 2, "b")
            # The first one's engine exists before the share changes, the second one's is
            # built afterwards: both must pace at the share.
            pace = first.engine("llm").scheduler.stats  # type: ignore[attr-defined]

            def config(batch_id: str | None) -> WorkerConfig:
                return WorkerConfig(concurrency=2, poll_s=0.05, presence_s=0.05, batch_id=batch_id)

            stops = [asyncio.Event() for _ in range(3)]
            runs = [
                asyncio.create_task(Worker(store, first, config(ones)).run(stop=stops[0])),
                # An idle worker (nothing to review) is running too: it takes no share.
                asyncio.create_task(Worker(store, idle, config("none")).run(stop=stops[2])),
            ]
            await _until(lambda: _workers(first) == 1 and _workers(idle) == 2)
            runs.append(asyncio.create_task(Worker(store, second, config(twos)).run(stop=stops[1])))
            await _until(lambda: _workers(first) == 2 and _workers(second) == 2)
            assert pace().pace_rpm == pytest.approx(600 / 2 * 0.95)
            second.release.set()  # its items finish; then it stops
            stops[1].set()
            await runs[2]
            # The one left takes the whole budget again at its next check-in.
            await _until(lambda: _workers(first) == 1)
            assert pace().pace_rpm == pytest.approx(600 * 0.95)
            first.release.set()
            for stop in stops:
                stop.set()
            await asyncio.gather(*runs)
            assert await store.check_in("next", pool="other", ttl_s=60) == 1

    asyncio.run(scenario())


class _DownStore:
    async def check_in(self, owner: str, *, pool: str, ttl_s: float, active: bool) -> int:
        raise StoreError("the database is down")

    async def check_out(self, owner: str) -> None:
        raise StoreError("the database is down")


def test_a_database_outage_keeps_the_last_count_and_never_stops_the_worker() -> None:
    seen: list[int] = []

    async def scenario() -> None:
        presence = Presence(_DownStore(), "w", pool="p", on_count=seen.append, every_s=0.01)  # type: ignore[arg-type]
        async with presence:
            await asyncio.sleep(0.05)
        assert presence.count == 1

    asyncio.run(scenario())
    assert seen == []


def test_workers_started_together_share_before_the_others_check_in(
    db_url: str, tmp_path: Path
) -> None:
    """`coach batch --workers 3`: the command's own worker paces at a third from its first
    call, although its helpers have not checked in yet."""
    seen: list[int] = []

    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            presence = Presence(store, "main", pool="p", on_count=seen.append, at_least=3)
            async with presence:
                assert seen == [3]
                await store.check_in("helper-1", pool="p", ttl_s=60)
                await store.check_in("helper-2", pool="p", ttl_s=60)
                await store.check_in("helper-3", pool="p", ttl_s=60)
                await presence._check_in()
                assert seen[-1] == 4  # more than expected: the store's count wins

    asyncio.run(scenario())
