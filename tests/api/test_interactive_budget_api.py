"""An API process draws on the LLM's rate budget with its interactive reviews, so it checks in
like a batch worker: with an LLM configured and no in-process worker it has a presence of its
own (a row in `workers`, gone at shutdown), with the in-process worker it has that worker's and
no second one, and its `POST /v1/reviews` and SSE reviews make it count for the other workers
of its pool. The LLM is the fake engine of tests/batch/test_interactive_budget.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from batch.batch_support import FakeLLM, wait_for, workers_of

import coach.batch.presence as presence_module
from api.conftest import GOOD_DRAFT, LLM_SETTINGS, Api, MakeApi, MakeClient, MemoryStore
from coach.api.context import ApiState
from coach.batch.presence import budget_pool
from coach.batch.worker import machine
from coach.engines import ENGINES
from coach.settings import Settings
from coach.store import open_store
from coach.store.db import StoreError
from coach.store.workers import WorkerStore


@pytest.fixture(autouse=True)
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "llm", FakeLLM)


class DownWorkerStore(MemoryStore, WorkerStore):
    """Keys in memory; the workers' table in a database that is down."""

    def __init__(self) -> None:
        super().__init__()
        self.check_ins = 0

    async def check_in(self, owner: str, *, pool: str, ttl_s: float, active: bool = True) -> int:
        self.check_ins += 1
        raise StoreError("the database is down")

    async def check_out(self, owner: str) -> None:
        raise StoreError("the database is down")


@pytest.fixture
def store() -> MemoryStore:
    """make_client's store (this module's replaces the conftest's)."""
    return DownWorkerStore()


def worker_rows(tmp_path: Path) -> list[tuple[str, bool]]:
    """(owner, active) of every row of the `workers` table of make_api's database."""
    with closing(sqlite3.connect(tmp_path / "coach.db")) as db:
        return [
            (owner, bool(active))
            for owner, active in db.execute("SELECT owner, active FROM workers")
        ]


def state_of(api: Api) -> ApiState:
    state = api.client.app.state["api"]
    assert isinstance(state, ApiState)
    return state


def test_an_api_process_with_an_llm_and_no_worker_checks_in_and_out(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = make_api(run_worker=False, **LLM_SETTINGS)
    [(owner, active)] = worker_rows(tmp_path)
    assert owner.startswith(f"{machine()}:{os.getpid()}:")  # the workers' owner format
    assert not active  # no review yet: it takes no share from the others
    api.client.__exit__(None, None, None)
    assert worker_rows(tmp_path) == []


@pytest.mark.parametrize(
    ("run_worker", "llm", "rows"),
    [
        (False, False, 0),  # rules only: the process draws on no budget
        (True, True, 1),  # the in-process worker's presence counts for the whole process
        (True, False, 1),  # the worker checks in as before
    ],
)
def test_one_presence_per_process_and_none_without_an_llm(
    make_api: MakeApi, tmp_path: Path, run_worker: bool, llm: bool, rows: int
) -> None:
    api = make_api(run_worker=run_worker, **(LLM_SETTINGS if llm else {}))
    assert api.client.get("/healthz").status_code == 200
    # The worker checks in from its task, maybe just after the start-up: wait for it.
    assert wait_for(lambda: len(worker_rows(tmp_path)) >= rows, timeout=10)
    time.sleep(0.3)  # time for a second presence, were there one, to show
    assert len(worker_rows(tmp_path)) == rows


def test_interactive_reviews_make_the_api_process_count_for_the_other_workers(
    make_api: MakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_s = 0.2
    monkeypatch.setattr(presence_module, "PRESENCE_S", every_s)
    api = make_api(run_worker=False, llm_rpm=600, **LLM_SETTINGS)
    service = state_of(api).service
    pool = budget_pool(service.settings)
    database = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}")

    async def peer(check: Callable[[int], bool], during: float = 10.0) -> bool:
        """An active batch worker of the same pool checking in until `check(count)`."""
        store = await open_store(database)
        try:
            async with asyncio.timeout(during):
                while not check(await store.check_in("peer", pool=pool, ttl_s=every_s * 3)):
                    await asyncio.sleep(0.02)
            return True
        except TimeoutError:
            return False
        finally:
            await store.close()

    def counted() -> bool:
        """The peer sees the API process as an active worker of its pool."""
        return asyncio.run(peer(lambda count: count == 2))

    # Idle, the API process is checked in but the peer keeps the whole budget...
    assert not asyncio.run(peer(lambda count: count != 1, during=every_s * 4))
    # ...while the API process paces at its share should it get an LLM review.
    assert wait_for(lambda: workers_of(service) == 2, timeout=10)

    reviewed = api.client.post(
        "/v1/reviews", json={"text": GOOD_DRAFT, "engine": "llm"}, headers=api.headers()
    )
    assert reviewed.status_code == 200 and reviewed.json()["engine"] == "llm"
    assert counted()
    # Idle again after its next check-in; then an SSE review counts the same way.
    assert asyncio.run(peer(lambda count: count == 1))
    streamed = api.client.post(
        "/v1/reviews/stream", json={"text": GOOD_DRAFT, "engine": "llm"}, headers=api.headers()
    )
    assert streamed.status_code == 200 and "event: review" in streamed.text
    assert counted()


def test_a_failed_check_in_never_fails_the_start_up_or_a_request(
    make_client: MakeClient, store: DownWorkerStore, auth: dict[str, str]
) -> None:
    llm: dict[str, Any] = dict(LLM_SETTINGS)
    client = make_client(**llm)
    assert store.check_ins == 1  # it tried, at start-up
    reviewed = client.post("/v1/reviews", json={"text": GOOD_DRAFT, "engine": "llm"}, headers=auth)
    assert reviewed.status_code == 200 and reviewed.json()["engine"] == "llm"
