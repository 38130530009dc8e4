"""The per-tenant LLM slots shared through the real Redis on loopback (COACH_REDIS_URL): two
slot objects (two API processes) share one tenant's cap, a waiter gets a freed slot, a dead
holder's slot comes back after its lease, tenants do not interfere, a Redis outage falls back to
the process's own slots, and a cancelled holder or waiter leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from api.conftest import (
    GOOD_DRAFT,
    LLM_SETTINGS,
    HeldLLM,
    MemoryStore,
    ScriptedService,
    make_settings,
)
from coach.api import create_app
from coach.api.shared_limits import redis_client
from coach.api.shared_slots import RedisTenantSlots

REDIS = "redis://127.0.0.1:6379/0"
DEAD = "redis://127.0.0.1:1/0"


def _redis_is_up() -> bool:
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


needs_redis = pytest.mark.skipif(not _redis_is_up(), reason="no Redis on 127.0.0.1:6379")


def _prefix() -> str:
    return f"coach-test:{uuid.uuid4().hex}:"  # no two tests (or runs) share a tenant's slots


#: Builds slot objects as one process would: `make(per_tenant, wait_s=…, lease_s=…)`.
Make = Callable[..., RedisTenantSlots]
Scenario = Callable[[Make, aioredis.Redis, str], Awaitable[None]]


def _run(scenario: Scenario, url: str = REDIS) -> None:
    """Runs `scenario(make, db, prefix)`: `make` builds slot objects, each on a Redis client of
    its own as separate processes would have; `db` is a client to look at the keys with."""

    async def main() -> None:
        prefix = _prefix()
        clients: list[aioredis.Redis] = []

        def make(per_tenant: int, **options: Any) -> RedisTenantSlots:
            client = redis_client(url)
            clients.append(client)
            options.setdefault("wait_s", 0.3)
            return RedisTenantSlots(client, per_tenant, prefix=prefix, **options)

        inspector = redis_client(url)
        clients.append(inspector)
        try:
            await scenario(make, inspector, prefix)
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(main())


async def _timed(slots: RedisTenantSlots, tenant: str) -> tuple[bool, float]:
    started = time.monotonic()
    async with slots.slot(tenant) as acquired:
        return acquired, time.monotonic() - started


@needs_redis
def test_two_processes_share_a_cap_of_two() -> None:
    async def scenario(make: Make, _r: aioredis.Redis, _p: str) -> None:
        first, second = make(2), make(2)
        async with AsyncExitStack() as stack:
            assert await stack.enter_async_context(first.slot("acme")) is True
            assert await stack.enter_async_context(second.slot("acme")) is True
            for slots in (first, second):
                acquired, waited = await _timed(slots, "acme")
                assert acquired is False
                assert 0.3 <= waited < 2.0
        assert (await _timed(first, "acme"))[0] is True  # both released on the way out

    _run(scenario)


@needs_redis
def test_a_released_slot_lets_a_waiter_in() -> None:
    async def scenario(make: Make, _r: aioredis.Redis, _p: str) -> None:
        first, second = make(2), make(2, wait_s=5.0)
        async with AsyncExitStack() as outer:
            await outer.enter_async_context(first.slot("acme"))
            async with AsyncExitStack() as inner:
                await inner.enter_async_context(first.slot("acme"))
                waiter = asyncio.create_task(_timed(second, "acme"))
                await asyncio.sleep(0.2)
                assert not waiter.done()
            acquired, waited = await asyncio.wait_for(waiter, 5)
        assert acquired is True
        assert waited < 1.5  # polled within a fraction of a second, not at the end of wait_s

    _run(scenario)


@needs_redis
def test_a_dead_holders_slot_comes_back_after_its_lease() -> None:
    async def scenario(make: Make, db: aioredis.Redis, p: str) -> None:
        dead, alive = make(2, lease_s=0.5), make(2, wait_s=0.0)
        # A process killed right after taking two slots: it never renews nor releases them.
        assert await dead.hold("acme", "killed-1") and await dead.hold("acme", "killed-2")
        assert (await _timed(alive, "acme"))[0] is False
        await asyncio.sleep(0.7)
        assert (await _timed(alive, "acme"))[0] is True
        assert await db.zcard(p + "acme") == 0
        assert await db.exists(p + "acme") == 0  # an idle tenant leaves no key behind

    _run(scenario)


@needs_redis
def test_a_live_holder_renews_its_lease() -> None:
    async def scenario(make: Make, _r: aioredis.Redis, _p: str) -> None:
        holder, other = make(1, lease_s=0.3), make(1, wait_s=0.0)
        async with holder.slot("acme") as acquired:
            assert acquired
            await asyncio.sleep(1.0)  # more than three leases
            assert (await _timed(other, "acme"))[0] is False
        assert (await _timed(other, "acme"))[0] is True

    _run(scenario)


@needs_redis
def test_tenants_do_not_share_slots() -> None:
    async def scenario(make: Make, _r: aioredis.Redis, _p: str) -> None:
        first, second = make(1), make(1, wait_s=0.05)
        async with first.slot("acme") as acquired:
            assert acquired
            assert (await _timed(second, "globex"))[0] is True
            assert (await _timed(second, "acme"))[0] is False

    _run(scenario)


def test_a_redis_outage_falls_back_to_the_process_slots() -> None:
    async def scenario(make: Make, _r: aioredis.Redis, _p: str) -> None:
        slots = make(2, wait_s=0.1)
        with capture_logs() as logs:
            async with AsyncExitStack() as stack:
                assert await stack.enter_async_context(slots.slot("acme")) is True
                assert await stack.enter_async_context(slots.slot("acme")) is True
                assert (await _timed(slots, "acme"))[0] is False
            assert (await _timed(slots, "acme"))[0] is True
        down = [entry for entry in logs if entry["event"] == "llm_slots_store_down"]
        assert len(down) == 1  # once, not once per request
        assert down[0]["log_level"] == "warning"

    _run(scenario, DEAD)


@needs_redis
def test_cancelling_a_holder_releases_its_slot() -> None:
    async def scenario(make: Make, db: aioredis.Redis, p: str) -> None:
        first, second = make(1), make(1, wait_s=0.0)
        held = asyncio.Event()

        async def review() -> None:
            async with first.slot("acme") as acquired:
                assert acquired
                held.set()
                await asyncio.Event().wait()  # an LLM call the client walks away from

        task = asyncio.create_task(review())
        await asyncio.wait_for(held.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.zcard(p + "acme") == 0
        assert (await _timed(second, "acme"))[0] is True

    _run(scenario)


@needs_redis
def test_cancelling_a_waiter_leaves_nothing_behind() -> None:
    async def scenario(make: Make, db: aioredis.Redis, p: str) -> None:
        first, second = make(1), make(1, wait_s=10.0)
        async with first.slot("acme") as acquired:
            assert acquired
            waiter = asyncio.create_task(_timed(second, "acme"))
            await asyncio.sleep(0.2)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert await db.zcard(p + "acme") == 0
        assert (await _timed(second, "acme"))[0] is True

    _run(scenario)


@needs_redis
def test_two_api_processes_share_a_tenants_llm_slots() -> None:
    """Two apps on one Redis, one LLM slot for the tenant: while a review holds it in one app,
    a review in the other waits `llm_wait_s` and is answered degraded, llm_busy."""
    held = HeldLLM()

    store = MemoryStore()
    key = store.add_key(f"tenant-{uuid.uuid4().hex}")  # slots no other test (or run) touches
    service = ScriptedService(held)
    settings = make_settings(redis_url=REDIS, llm_concurrency_per_tenant=1, **LLM_SETTINGS)
    apps = [
        create_app(
            settings,
            store=store,
            service=service,
            llm_wait_s=0.2,
            configure_logs=False,
            run_worker=False,
        )
        for _ in range(2)
    ]
    auth = {"Authorization": f"Bearer {key}"}
    body = {"text": GOOD_DRAFT, "engine": "llm"}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncExitStack() as stack:
            clients = []
            for app in apps:
                # The lifespan, where the app chooses its slots (and closes the limiter's Redis
                # client they share), runs in this loop: ASGITransport does not run it.
                await stack.enter_async_context(app.lifespan())
                transport = httpx.ASGITransport(app=cast(Any, app))
                client = httpx.AsyncClient(transport=transport, base_url="http://test")
                clients.append(await stack.enter_async_context(client))
            one, two = clients
            try:
                first = asyncio.create_task(one.post("/v1/reviews", json=body, headers=auth))
                await asyncio.wait_for(held.started.wait(), 5)
                # Bounded: a second slot would start an LLM review that waits forever.
                request = two.post("/v1/reviews", json=body, headers=auth)
                second = await asyncio.wait_for(request, 10)
            finally:
                held.release.set()
            return (await first).json(), second.json()

    first, second = asyncio.run(scenario())
    assert first["engine"] == "llm" and not first["degraded"]
    assert second["degraded"] is True
    assert second["degraded_reason"].startswith("llm_busy:")
    assert service.llm_calls == 1
