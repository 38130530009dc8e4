"""Interactive LLM reviews (an API process's `POST /v1/reviews`) count against the shared rate
budget like batch items: the service tells its check-in whether it used the LLM, a process
running no worker checks in on its own (`process_presence`), and a process running the in-process
worker counts its interactive reviews in that worker's check-in. The LLM is a fake engine
registered in `ENGINES` (the service builds it like the real one, scheduler included)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store.store_support import BACKENDS, database, store_at

from batch.batch_support import LLM_SETTINGS, FakeLLM, llm_of, new_items, workers_of
from coach.batch.presence import process_presence
from coach.batch.worker import Worker, WorkerConfig
from coach.engines import ENGINES
from coach.models import ReviewRequest
from coach.service import ReviewService
from coach.settings import Settings
from coach.store import SqlStore

REQUEST = ReviewRequest(text="Could you introduce me to your head of procurement?")
#: Check-ins this often, so that the tests wait fractions of a second, not PRESENCE_S.
EVERY_S = 0.05


@pytest.fixture(autouse=True)
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "llm", FakeLLM)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def held_llm_batch(
    store: SqlStore, service: ReviewService, n: int = 2
) -> tuple[str, asyncio.Event]:
    """A batch of LLM items whose reviews with `service` wait until the event is set: the
    worker reviewing them counts as active all along."""
    llm_of(service).hold = hold = asyncio.Event()
    record, _ = await store.create_batch(
        "acme", engine="llm", rewrite=True, source="api", items=new_items(n, prefix="held")
    )
    return record.id, hold


def worker_config(batch_id: str) -> WorkerConfig:
    return WorkerConfig(concurrency=2, poll_s=EVERY_S, presence_s=EVERY_S, batch_id=batch_id)


def test_the_service_tells_the_check_in_whether_it_used_the_llm() -> None:
    async def scenario() -> None:
        service = ReviewService(settings=LLM_SETTINGS)
        assert not service.take_llm_use()
        await service.review(REQUEST, engine="rules")
        assert not service.take_llm_use()  # the rule engine draws on no budget
        await service.review(REQUEST, engine="auto")
        assert service.take_llm_use()
        assert not service.take_llm_use()  # read and reset: used since the last check-in
        # A slow review spans check-ins: it counts at each of them until it ends.
        llm_of(service).hold = hold = asyncio.Event()
        slow = asyncio.create_task(service.review(REQUEST, engine="llm"))
        await until(lambda: llm_of(service).in_flight == 1)
        assert service.take_llm_use()
        assert service.take_llm_use()
        hold.set()
        assert (await slow).engine == "llm"
        assert service.take_llm_use()  # it ended after the last check-in
        assert not service.take_llm_use()

        rules_only = ReviewService(settings=Settings())
        await rules_only.review(REQUEST, engine="auto")  # "auto" means rules here
        assert not rules_only.take_llm_use()

    asyncio.run(scenario())


def test_an_api_process_answering_llm_reviews_takes_its_share_from_a_batch_worker(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch, api = ReviewService(settings=LLM_SETTINGS), ReviewService(settings=LLM_SETTINGS)
            held, release = await held_llm_batch(store, batch)
            stop = asyncio.Event()
            worker = Worker(store, batch, worker_config(held))
            running = asyncio.create_task(worker.run(stop=stop))
            async with process_presence(store, api, "api-process", every_s=EVERY_S):
                # Idle, the API process counts the worker but takes nothing from it.
                await until(lambda: workers_of(api) == 2)
                await asyncio.sleep(EVERY_S * 4)
                assert workers_of(batch) == 1
                # An interactive LLM review (held, so that it spans the worker's check-ins):
                # the worker paces at half the budget from the API process's next check-in...
                llm_of(api).hold = hold = asyncio.Event()
                interactive = asyncio.create_task(api.review(REQUEST, engine="llm"))
                await until(lambda: workers_of(batch) == 2)
                pace = llm_of(batch).scheduler.stats().pace_rpm
                assert pace == pytest.approx(600 / 2 * 0.95)
                hold.set()
                assert (await interactive).engine == "llm"
                # ...and takes the whole budget back once the API process is idle again.
                await until(lambda: workers_of(batch) == 1)
            release.set()
            stop.set()
            await running
            assert await store.check_in("next", pool="other", ttl_s=60) == 1  # all checked out

    asyncio.run(scenario())


def test_an_in_process_worker_counts_its_api_process_s_interactive_reviews(
    db_url: str, tmp_path: Path
) -> None:
    """The API process runs the worker (COACH_WORKER_IN_PROCESS) and shares its service: the
    worker has no batch item to review, but the interactive LLM reviews make it active."""

    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            batch, api = ReviewService(settings=LLM_SETTINGS), ReviewService(settings=LLM_SETTINGS)
            held, release = await held_llm_batch(store, batch)
            stops = [asyncio.Event(), asyncio.Event()]
            runs = [
                asyncio.create_task(Worker(store, batch, worker_config(held)).run(stop=stops[0])),
                asyncio.create_task(Worker(store, api, worker_config("none")).run(stop=stops[1])),
            ]
            await until(lambda: workers_of(api) == 2)
            await asyncio.sleep(EVERY_S * 4)
            assert workers_of(batch) == 1
            llm_of(api).hold = hold = asyncio.Event()
            interactive = asyncio.create_task(api.review(REQUEST, engine="auto"))
            await until(lambda: workers_of(batch) == 2)
            hold.set()
            assert (await interactive).engine == "llm"
            await until(lambda: workers_of(batch) == 1)
            release.set()
            for stop in stops:
                stop.set()
            await asyncio.gather(*runs)

    asyncio.run(scenario())
