"""Limits per caller: a request rate per API key, and concurrent LLM reviews per tenant.

Rate limit: a token bucket per API key id (never the client address, never X-Forwarded-For).
The bucket holds `rate_limit_per_minute` tokens and refills at that rate; a request takes one.
Every authenticated response carries

    RateLimit-Limit: <bucket size>   RateLimit-Remaining: <whole tokens left>
    RateLimit-Reset: <seconds until the bucket is full again>

and a request that finds the bucket empty gets a 429 problem with `Retry-After` (seconds until
one token is back). State lives in the process (with several workers, each has its buckets)
unless COACH_REDIS_URL is set: then the buckets are shared in Redis (shared_limits.py).

LLM concurrency: at most `llm_concurrency_per_tenant` LLM reviews run at once per tenant. A
request that finds them all busy waits up to `wait_s` for a slot; if none frees up, the review
is done by the rule engine and marked `degraded: true` with `degraded_reason` "llm_busy: …",
the same contract as any other LLM failure (see `coach/api/controllers/reviews.py`). The slots
are semaphores of the process (with several workers, each has its own) unless COACH_REDIS_URL is
set: then they are shared in Redis, with leases so that a killed process's slots come back
(shared_slots.py). For both limits, a Redis outage falls back to the process's own state.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from coach.api.context import request_info
from coach.api.problems import ApiProblem
from coach.store.base import Principal

if TYPE_CHECKING:
    from coach.settings import Settings

__all__ = ["Limiter", "RateDecision", "RateLimitMiddleware", "RateLimiter", "TenantSlots"]

_MAX_BUCKETS = 10_000


class Limiter(Protocol):
    """A per-key rate limit: in this process (`RateLimiter`) or shared (`RedisRateLimiter`)."""

    async def decide(self, key: str) -> RateDecision: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimiter:
    """Token buckets by key. Not thread-safe; used from one event loop."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.limit = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def hit(self, key: str) -> RateDecision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.limit), now)
        else:
            bucket.tokens = min(self.limit, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        return self.decision(allowed, bucket.tokens)

    async def decide(self, key: str) -> RateDecision:
        """`hit`, behind the interface the shared limiter (coach/api/shared_limits.py) has."""
        return self.hit(key)

    def decision(self, allowed: bool, tokens: float) -> RateDecision:
        """The decision and its headers for a bucket left with `tokens`."""
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=math.floor(tokens),
            reset_s=math.ceil((self.limit - tokens) / self.rate),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate)),
        )

    def _prune(self, now: float) -> None:
        if len(self._buckets) < _MAX_BUCKETS:
            return
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.limit:
                del self._buckets[key]


class RateLimitMiddleware(ASGIMiddleware):
    """Runs after authentication; public routes (no principal) are not limited."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = scope.get("user")
        if not isinstance(principal, Principal):
            await next_app(scope, receive, send)
            return
        decision = await self.limiter.decide(principal.key_id)
        info = request_info(scope)
        # The request log middleware adds these to whatever response this request gets,
        # including problems raised further in.
        info.headers.update(decision.headers())
        if not decision.allowed:
            raise ApiProblem(
                "rate-limited",
                f"over {decision.limit} requests per minute for this API key; "
                f"retry in {decision.retry_after_s} s",
                headers={"Retry-After": str(decision.retry_after_s)},
            )
        await next_app(scope, receive, send)


class TenantSlots:
    """A semaphore per tenant bounding its concurrent LLM reviews, in this process.

    `RedisTenantSlots` (shared_slots.py) shares them between processes; `for_app` chooses."""

    def __init__(self, per_tenant: int, *, wait_s: float) -> None:
        self.per_tenant = per_tenant
        self.wait_s = wait_s
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    @classmethod
    def for_app(cls, settings: Settings, limiter: Limiter, *, wait_s: float) -> TenantSlots:
        """Shared in Redis when the rate limit is (COACH_REDIS_URL), on the limiter's client so
        that the app's shutdown, which closes the limiter, closes it too; else this process's."""
        per_tenant = settings.llm_concurrency_per_tenant
        if settings.redis_url:
            # Imported here, like the limiter: without COACH_REDIS_URL redis is never loaded.
            from coach.api.shared_limits import RedisRateLimiter
            from coach.api.shared_slots import RedisTenantSlots

            if isinstance(limiter, RedisRateLimiter):
                return RedisTenantSlots(limiter.client, per_tenant, wait_s=wait_s)
        return cls(per_tenant, wait_s=wait_s)

    def _semaphore(self, tenant: str) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(tenant)
        if semaphore is None:
            semaphore = self._semaphores[tenant] = asyncio.Semaphore(self.per_tenant)
        return semaphore

    def slot(self, tenant: str) -> AbstractAsyncContextManager[bool]:
        """Yields True holding a slot, or False when none freed up within `wait_s`."""
        return self.local_slot(tenant, self.wait_s)

    @asynccontextmanager
    async def local_slot(self, tenant: str, wait_s: float) -> AsyncIterator[bool]:
        """`slot` in this process, waiting up to `wait_s` (the shared slots' fallback)."""
        semaphore = self._semaphore(tenant)
        try:
            if semaphore.locked():
                await asyncio.wait_for(semaphore.acquire(), timeout=wait_s)
            else:
                # Not through wait_for: with nothing left of the wait it times out even a free
                # semaphore, and a fallback may come with nothing left.
                await semaphore.acquire()
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            semaphore.release()
