"""Real `coach worker` processes against the real databases and the fake OpenAI server: a worker
killed with SIGKILL mid-batch, then a restart, gives every item exactly once with no finished
item reviewed again (SQLite and PostgreSQL); two workers on one PostgreSQL batch never process
an item twice. Reviews are counted from the fake server's access log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from store.store_support import BACKENDS, database, store_at

from batch.batch_support import REPO, CountingServer, counting_server, item_rows
from coach.batch.jobs import draft_hash
from coach.models import ReviewRequest
from coach.store import NewItem, SqlStore

ITEMS = 150
CONCURRENCY = 8


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountingServer]:
    """One fake server for the module (its start costs a second); tests count differences."""
    log = tmp_path_factory.mktemp("fake") / "fake.log"
    with counting_server(log, "--latency", "0.05") as server:
        yield server


def _items(n: int) -> list[NewItem]:
    out = []
    for i in range(n):
        request = ReviewRequest(text=f"Hi {i}, could we book a call about your pipeline?")
        body = request.model_dump_json()
        out.append(
            NewItem(
                key=f"k{i:04d}",
                location={"id": f"k{i:04d}"},
                request=body,
                draft_hash=draft_hash(body, engine="llm", rewrite=True),
            )
        )
    return out


def _worker(
    url: str, fake: CountingServer, tmp_path: Path, name: str, *args: str, lease: str = "1"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **fake.env(),
        "COACH_DATABASE_URL": url,
        "COACH_DATA_DIR": str(tmp_path / "data"),
        "COACH_BATCH_LEASE": lease,
        "COACH_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "coach", "worker", "--concurrency", str(CONCURRENCY), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


async def _done(store: SqlStore, batch_id: str) -> int:
    return (await store.batch_counts(batch_id))["done"]


async def _exit(process: subprocess.Popen[bytes], timeout: float, tmp_path: Path, name: str) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            # Its log says why (a store error such as "database is locked", a stuck lease).
            pytest.fail(
                f"worker {name} did not exit within {timeout:.0f}s:\n{_log(tmp_path, name)}"
            )
        await asyncio.sleep(0.05)
    return process.returncode


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")[-2000:]


async def _exactly_once(store: SqlStore, batch_id: str, n: int = ITEMS) -> list[dict[str, object]]:
    page = await store.results_page(batch_id, limit=10 * n)
    assert len(page) == n
    assert len({r.key for r in page}) == n
    assert all(r.state == "done" and r.result for r in page)
    record = await store.get_batch(batch_id)
    assert record is not None and record.state == "completed"
    return await item_rows(store, batch_id)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_a_worker_mid_batch_and_restart(
    backend: str, tmp_path: Path, fake: CountingServer
) -> None:
    async def scenario(url: str, fake: CountingServer) -> None:
        async with store_at(url, tmp_path) as store:
            record, _ = await store.create_batch(
                "acme", engine="llm", rewrite=True, source="api", items=_items(ITEMS)
            )
            reviews_before = fake.completions()
            first = _worker(url, fake, tmp_path, "first")
            try:
                deadline = time.monotonic() + 60
                while (done := await _done(store, record.id)) < 30:
                    assert first.poll() is None, _log(tmp_path, "first")
                    assert time.monotonic() < deadline, "the worker made no progress"
                    await asyncio.sleep(0.02)
                os.kill(first.pid, signal.SIGKILL)
                assert await _exit(first, 10, tmp_path, "first") == -signal.SIGKILL
            finally:
                if first.poll() is None:
                    first.kill()
                    first.wait()
            at_kill = await store.batch_counts(record.id)
            assert 30 <= at_kill["done"] < ITEMS, at_kill
            assert at_kill["leased"] <= CONCURRENCY
            finished = {
                r["key"]: (r["result"], r["attempts"], r["completed_at"])
                for r in await item_rows(store, record.id)
                if r["state"] == "done"
            }

            second = _worker(url, fake, tmp_path, "second", "--once")
            assert await _exit(second, 90, tmp_path, "second") == 0, _log(tmp_path, "second")
            rows = await _exactly_once(store, record.id)
            # no item finished before the kill was touched again
            after = {r["key"]: (r["result"], r["attempts"], r["completed_at"]) for r in rows}
            assert {k: after[k] for k in finished} == finished
            # every review the server answered: one per item, plus at most the reviews in
            # flight when the worker was killed (those items were claimed again)
            await asyncio.sleep(0.3)  # the server logs a request after its latency
            extra = fake.completions() - reviews_before - ITEMS
            assert 0 <= extra <= at_kill["leased"], (extra, at_kill, done)

    with database(backend, tmp_path) as url:
        asyncio.run(scenario(url, fake))


def test_two_workers_on_one_postgresql_batch(tmp_path: Path, fake: CountingServer) -> None:
    async def scenario(url: str, fake: CountingServer) -> None:
        async with store_at(url, tmp_path) as store:
            record, _ = await store.create_batch(
                "acme", engine="llm", rewrite=True, source="api", items=_items(100)
            )
            reviews_before = fake.completions()
            workers = [
                _worker(url, fake, tmp_path, f"w{i}", "--once", lease="60") for i in range(2)
            ]
            codes = await asyncio.gather(
                *(_exit(w, 90, tmp_path, f"w{i}") for i, w in enumerate(workers))
            )
            assert codes == [0, 0], _log(tmp_path, "w0") + _log(tmp_path, "w1")
            rows = await _exactly_once(store, record.id, 100)
            assert all(r["attempts"] == 1 for r in rows)
            owners = {str(r["lease_owner"]).rsplit(":", 1)[0] for r in rows}
            assert len(owners) == 2  # both worked on the batch
            await asyncio.sleep(0.3)
            assert fake.completions() - reviews_before == 100

    with database("postgresql", tmp_path) as url:
        asyncio.run(scenario(url, fake))


def test_sigterm_hands_the_items_in_flight_back(tmp_path: Path, fake: CountingServer) -> None:
    async def scenario(url: str, fake: CountingServer) -> None:
        async with store_at(url, tmp_path) as store:
            record, _ = await store.create_batch(
                "acme", engine="llm", rewrite=True, source="api", items=_items(ITEMS)
            )
            worker = _worker(url, fake, tmp_path, "worker", lease="60")
            try:
                deadline = time.monotonic() + 60
                while await _done(store, record.id) < 10:
                    assert worker.poll() is None, _log(tmp_path, "worker")
                    assert time.monotonic() < deadline, "the worker made no progress"
                    await asyncio.sleep(0.02)
                worker.send_signal(signal.SIGTERM)
                assert await _exit(worker, 20, tmp_path, "worker") == 0, _log(tmp_path, "worker")
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            counts = await store.batch_counts(record.id)
            assert counts["leased"] == 0 and counts["done"] < ITEMS, counts
            rows = await item_rows(store, record.id)
            assert all(r["attempts"] == 0 for r in rows if r["state"] == "pending")

    with database("postgresql", tmp_path) as url:
        asyncio.run(scenario(url, fake))
