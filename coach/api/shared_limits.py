"""The per-key rate limit shared by every API process, in Redis (COACH_REDIS_URL).

Without it each process keeps its own buckets (coach/api/limits.py), so `coach serve --workers
4` lets a key make four times its limit. With it the bucket of each key lives in Redis and every
process takes from the same one. The algorithm is the in-process token bucket, run atomically
in one Lua script with Redis's clock, so the headers mean the same either way. (The `limits`
library has Redis storage, but its windows are not this bucket: the RateLimit-* headers and
their tests would change meaning with the deployment.)

Redis unreachable or failing: the request is limited by the process's own buckets instead and
a warning is logged (at most once a minute); a limiter outage never fails a request. The per-tenant
LLM slots shared in Redis (shared_slots.py) use the same client and the same fallback:
`redis_client`, `REDIS_ERRORS` and `RedisOutage` are for both.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coach.api.limits import RateDecision, RateLimiter
from coach.logs import get_logger

__all__ = ["REDIS_ERRORS", "RedisOutage", "RedisRateLimiter", "redis_client"]

log = get_logger("coach.api.limits")

#: KEYS[1]: the bucket; ARGV: size, tokens per second, seconds to keep an idle bucket.
#: Returns {allowed (0/1), tokens left (as a string: Lua numbers become integers otherwise)}.
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local size = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = size
  updated = now
end
tokens = math.min(size, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {allowed, tostring(tokens)}
"""

_WARN_EVERY_S = 60.0
#: An idle bucket is full again after a minute whatever the limit; keep it a minute longer.
_IDLE_TTL_S = 120

#: What a failing or unreachable Redis raises: redis-py wraps most socket errors, not all.
REDIS_ERRORS = (RedisError, OSError)


def redis_client(url: str) -> aioredis.Redis:
    """A client with short timeouts: a limit waiting on a slow Redis would hold up every request
    longer than falling back to the process's own state does."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


class RedisOutage:
    """Logs `event` (a warning) when Redis fails, at most once a minute: the caller falls back to
    its process's own state, and a Redis that is down must not add a log line per request."""

    def __init__(self, event: str, *, every_s: float = _WARN_EVERY_S) -> None:
        self.event = event
        self._every_s = every_s
        self._warned_at = -math.inf

    def noticed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._every_s:
            self._warned_at = now
            log.warning(self.event, error=type(exc).__name__)


class RedisRateLimiter:
    """Token buckets by key in Redis, shared by every process that uses the same `url`."""

    def __init__(self, url: str, per_minute: int, *, prefix: str = "coach:rate:") -> None:
        self.fallback = RateLimiter(per_minute)
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self._prefix = prefix
        #: Also the client of the shared LLM slots (`TenantSlots.for_app`), closed with this.
        self.client = redis_client(url)
        self._take = self.client.register_script(_TAKE)
        self._outage = RedisOutage("rate_limit_store_down")

    async def decide(self, key: str) -> RateDecision:
        try:
            allowed, left = await self._take(
                keys=[self._prefix + key], args=[self.limit, self.rate, _IDLE_TTL_S]
            )
        except REDIS_ERRORS as exc:
            self._outage.noticed(exc)
            return self.fallback.hit(key)
        tokens = float(left)
        return self.fallback.decision(bool(int(allowed)), tokens)

    async def aclose(self) -> None:
        await self.client.aclose()
