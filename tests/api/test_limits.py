"""The token bucket and the per-tenant LLM slots, without HTTP."""

from __future__ import annotations

import asyncio

import pytest

from coach.api.limits import RateLimiter, TenantSlots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_limit_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one token per second
    decisions = [limiter.hit("k") for _ in range(61)]
    assert all(d.allowed for d in decisions[:60])
    assert decisions[59].remaining == 0
    last = decisions[60]
    assert not last.allowed and last.retry_after_s == 1 and last.reset_s == 60
    clock.now += 1.0
    assert limiter.hit("k").allowed
    assert limiter.hit("other").remaining == 59


def test_reset_counts_seconds_until_full() -> None:
    clock = Clock()
    limiter = RateLimiter(120, clock=clock)  # two tokens per second
    limiter.hit("k")
    decision = limiter.hit("k")
    assert decision.remaining == 118
    assert decision.reset_s == 1
    assert decision.headers() == {
        "RateLimit-Limit": "120",
        "RateLimit-Remaining": "118",
        "RateLimit-Reset": "1",
    }


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_slots_are_per_tenant_and_time_out() -> None:
    async def scenario() -> list[bool]:
        slots = TenantSlots(1, wait_s=0.01)
        results: list[bool] = []
        async with slots.slot("a") as first:
            results.append(first)
            async with slots.slot("a") as second:
                results.append(second)
            async with slots.slot("b") as other_tenant:
                results.append(other_tenant)
        async with slots.slot("a") as again:
            results.append(again)
        return results

    assert asyncio.run(scenario()) == [True, False, True, True]
