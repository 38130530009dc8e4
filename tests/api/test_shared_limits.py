"""The per-key rate limit shared through the real Redis on loopback (COACH_REDIS_URL): two
limiters (two API processes) take from one bucket, it refills, headers keep their meaning, and
a Redis outage falls back to the process's own buckets without failing a request."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from api.conftest import make_settings
from coach.api import create_app
from coach.api.shared_limits import RedisRateLimiter
from coach.store import open_store

REDIS = "redis://127.0.0.1:6379/0"
DEAD = "redis://127.0.0.1:1/0"


def _prefix() -> str:
    return f"coach-test:{uuid.uuid4().hex}:"  # no two tests (or runs) share a bucket


def test_two_processes_take_from_one_bucket_and_it_refills() -> None:
    async def scenario() -> None:
        prefix = _prefix()
        first = RedisRateLimiter(REDIS, 60, prefix=prefix)  # one token a second
        second = RedisRateLimiter(REDIS, 60, prefix=prefix)
        try:
            decisions = [await (first, second)[i % 2].decide("key-1") for i in range(64)]
            assert [d.allowed for d in decisions] == [True] * 60 + [False] * 4
            assert decisions[59].remaining == 0 and decisions[0].remaining == 59
            refused = decisions[60]
            assert refused.retry_after_s == 1 and refused.reset_s == 60
            assert (await first.decide("key-2")).remaining == 59  # another key, its own bucket
            await asyncio.sleep(1.1)
            assert (await second.decide("key-1")).allowed
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(scenario())


def test_a_redis_outage_falls_back_to_the_process_buckets() -> None:
    async def scenario() -> None:
        limiter = RedisRateLimiter(DEAD, 2, prefix=_prefix())
        try:
            decisions = [await limiter.decide("k") for _ in range(3)]
        finally:
            await limiter.aclose()
        assert [d.allowed for d in decisions] == [True, True, False]

    asyncio.run(scenario())


def _key(settings: Any) -> str:
    async def create() -> str:
        store = await open_store(settings)
        try:
            return (await store.create_key("acme"))[0]
        finally:
            await store.close()

    return asyncio.run(create())


def test_two_api_processes_share_a_keys_limit(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}",
        rate_limit_per_minute=3,
        redis_url=REDIS,
    )
    key = _key(settings)  # a new key id: a bucket no other test touches
    headers = {"Authorization": f"Bearer {key}"}
    body = {"text": "Hi Dana, loved your talk on onboarding. What are you working on?"}
    apps = [create_app(settings, run_worker=False, configure_logs=False) for _ in range(2)]
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        responses = [
            (one, two)[i % 2].post("/v1/reviews", json=body, headers=headers) for i in range(4)
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    refused = responses[3]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["Retry-After"]) >= 1
