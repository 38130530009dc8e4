"""The per-tenant LLM slots shared by every API process, in Redis (COACH_REDIS_URL).

Without it each process has its own semaphores (`TenantSlots`, coach/api/limits.py), so `coach
serve --workers 4` lets a tenant run four times `llm_concurrency_per_tenant` LLM reviews. With
it a tenant's slots are one sorted set in Redis, `coach:slots:<tenant>` (the tenant name as is,
like the rate limit's key ids; nothing of a draft ever goes to Redis): a member per holder, a
random id, scored by when its lease runs out. Taking a slot is one Lua script, run with Redis's
clock: drop the holders whose lease ran out, then add this one if fewer than the cap are left.
The holder renews its lease every third of it while its review runs and removes itself when the
review ends, fails or is cancelled (a client that leaves the stream). A process that is killed
cannot do either: its slots come back when their lease runs out (`LEASE_S`).

A request that finds every slot taken polls again after a short, growing pause (up to
`_MAX_POLL_S`) until one frees up or `wait_s` is over: then, as without Redis, the review is
done by the rule engine and answered `degraded_reason` "llm_busy: …". Waiters are not served in
order of arrival.

Redis unreachable or failing: the request takes a slot of the process's own semaphores instead
(the rest of its wait) and a warning, `llm_slots_store_down`, is logged at most once a minute,
as the shared rate limit does (shared_limits.py); a slot store outage never fails a request.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from coach.api.limits import TenantSlots
from coach.api.shared_limits import REDIS_ERRORS, RedisOutage
from coach.logs import get_logger

__all__ = ["LEASE_S", "RedisTenantSlots"]

log = get_logger("coach.api.limits")

#: How long a slot stays taken without a renewal: how late a killed process's slots come back.
LEASE_S = 15.0

_FIRST_POLL_S = 0.02
_MAX_POLL_S = 0.25

#: KEYS[1]: the tenant's holders; ARGV: the cap, the lease in ms, the holder.
#: Takes a slot for the holder, or renews the one it has; returns 1, or 0 when all are taken.
_HOLD = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
"""


class RedisTenantSlots(TenantSlots):
    """`TenantSlots` shared by every process whose `client` is on the same Redis.

    The inherited semaphores are the fallback when Redis fails. The client is the caller's
    (the app passes its rate limiter's) and is not closed here."""

    def __init__(
        self,
        client: aioredis.Redis,
        per_tenant: int,
        *,
        wait_s: float,
        prefix: str = "coach:slots:",
        lease_s: float = LEASE_S,
    ) -> None:
        super().__init__(per_tenant, wait_s=wait_s)
        self._prefix = prefix
        self._lease_ms = max(1, round(lease_s * 1000))
        self._renew_every_s = lease_s / 3
        self._hold = client.register_script(_HOLD)
        self._client = client
        self._outage = RedisOutage("llm_slots_store_down")

    async def hold(self, tenant: str, holder: str) -> bool:
        """Takes a slot of `tenant` for `holder` for one lease, or renews the lease it has;
        False when all are taken. Raises what Redis raises."""
        taken = await self._hold(
            keys=[self._prefix + tenant], args=[self.per_tenant, self._lease_ms, holder]
        )
        return bool(int(taken))

    async def release(self, tenant: str, holder: str) -> None:
        """Gives `holder`'s slot back (nothing if it has none). Raises what Redis raises."""
        await self._client.zrem(self._prefix + tenant, holder)

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[bool]:
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        try:
            acquired = await self._wait(tenant, holder, deadline)
        except REDIS_ERRORS as exc:
            self._outage.noticed(exc)
            async with self.local_slot(tenant, deadline - time.monotonic()) as acquired:
                yield acquired
            return
        except asyncio.CancelledError:
            # Cancelled in the middle of the script, the slot may be taken all the same.
            await asyncio.shield(self._let_go(tenant, holder))
            raise
        if not acquired:
            yield False
            return
        stop = asyncio.Event()
        renewer = asyncio.create_task(self._renew(tenant, holder, stop))
        try:
            yield True
        finally:
            # Shielded: a second cancellation must not skip the release; it then finishes on
            # its own, and at worst the lease runs out.
            await asyncio.shield(self._let_go(tenant, holder, stop, renewer))

    async def _wait(self, tenant: str, holder: str, deadline: float) -> bool:
        pause = _FIRST_POLL_S
        while True:
            if await self.hold(tenant, holder):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Jittered, so that the waiters of several processes do not poll in step.
            await asyncio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, _MAX_POLL_S)

    async def _renew(self, tenant: str, holder: str, stop: asyncio.Event) -> None:
        lost = False
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self._renew_every_s)
                return
            except TimeoutError:
                pass
            try:
                held = await self.hold(tenant, holder)
            except REDIS_ERRORS as exc:
                self._outage.noticed(exc)
                continue
            # The lease ran out (the loop or Redis stalled for longer than it) and others took
            # the slot: the review goes on, the tenant is one over its cap until it ends.
            if not held and not lost:
                log.warning("llm_slot_lease_lost", lease_ms=self._lease_ms)
            lost = not held

    async def _let_go(
        self,
        tenant: str,
        holder: str,
        stop: asyncio.Event | None = None,
        renewer: asyncio.Task[None] | None = None,
    ) -> None:
        if stop is not None and renewer is not None:
            # Stopped rather than cancelled, and waited for: a renewal cancelled after its
            # script was sent could land after the release and take the slot back.
            stop.set()
            await asyncio.wait({renewer})
        try:
            await self.release(tenant, holder)
        except REDIS_ERRORS as exc:
            self._outage.noticed(exc)  # the lease runs out on its own
