"""The shared request scheduler: one per LLM client, used by the batch runner, the eval harness
and API batch jobs through `LLMEngine` (`make_client` installs it as httpx event hooks).

What it does, per HTTP request to a model endpoint (POST `.../chat/completions`,
`.../completions`, `.../responses`, `.../embeddings`; file uploads, batch polls and anything
else pass untouched and are not counted):

* **Even pacing (GCRA).** With a requests-per-minute budget (COACH_LLM_RPM) requests are spaced
  `60 / (rpm * 0.95)` seconds apart, with a burst allowance of 2% of the budget (at least one
  request). A provider that counts over a sliding 60 s window therefore never sees more than
  97% of its limit, whereas sending a whole minute's budget at once and then stalling would hit
  the limit at every window edge. The tokens-per-minute budget (COACH_LLM_TPM) is paced the
  same way in token units; a request's cost is estimated before sending as body bytes / 4 plus
  `max_tokens` / `max_completion_tokens` / `max_output_tokens` (providers reserve the
  completion limit against TPM at admission, so the estimate matches how they count).
  Requests wait in FIFO order; a request whose review is cancelled while waiting (deadline)
  consumes no budget.
* **429.** A 429 starts a cooldown for every request until `retry-after-ms` / `Retry-After`
  (else `x-ratelimit-reset-requests` / `-tokens`, else 1 s), and multiplies the pace by 0.7
  (at most once per episode: 429s of requests sent before the last decrease do not count
  again, and at least down to 10% of the budget). The pace recovers additively, 1/60 of the
  budget per second (from 70% back to 100% in 18 s).
* **Headers.** `x-ratelimit-limit-requests` / `-tokens` lower the budget to the provider's
  limit (or set it when none is configured). `x-ratelimit-remaining-*` at or below 2% of the
  limit (0 when no limit is known) slows the pace like a 429 but without a cooldown: pacing at
  95% keeps about 5% in reserve, so a nearly spent remainder means someone else is using the
  key or our count drifted from the provider's. With a reset (`x-ratelimit-reset-*`) longer
  than a minute the pace also drops to `limit * 0.98 / reset`, so the remainder lasts until
  the reset; when no limit is known at all, the remainder is spread evenly until the reset.
* **No budget, no headers.** Nothing is paced until a 429; then the rate observed over the
  last minute becomes the budget, with the 429 decrease applied.
* **Shared budgets (`share`).** COACH_LLM_RPM / TPM are the whole budget of the provider key.
  Batch workers that share a store (any number of `coach worker` processes, `coach batch
  --workers`, the API's in-process worker) announce themselves there and count each other per
  provider endpoint and model (`coach/batch/presence.py`); each paces its own calls at its
  share, 1/n of the budget, and so do the limits learned from headers. A rate observed at a
  429 is already this process's own and is not divided again.
* **Bounded in flight (`max_in_flight`).** Not an event hook (the response hook does not run
  for errors, timeouts or cancellations, so a semaphore released there would leak): it wraps
  the transport (`Scheduler.wrap_transport`) and holds a slot from sending the request to its
  response headers. `from_settings` leaves it off: the connection pool
  (COACH_LLM_MAX_CONNECTIONS) already bounds requests in flight.

Waiting for the budget happens inside the review's deadline (`ModelCaller` wraps the whole
call), so a deep queue behind a small budget turns into timeouts: a concurrency above
`rpm / 60 * latency` uses the whole budget, one above `rpm / 60 * COACH_LLM_DEADLINE` makes
reviews time out in the queue (batch workers cap their LLM items in flight at half of that:
`Worker._slots`). Nothing here reads or logs a request's text.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from coach.logs import get_logger

if TYPE_CHECKING:
    from coach.settings import Settings

__all__ = [
    "Scheduler",
    "SchedulerStats",
    "estimate_tokens",
    "is_counted",
    "parse_duration",
    "retry_after_seconds",
]

log = get_logger("coach.scheduler")

#: Pace at this share of a budget: the rest absorbs clock skew and network jitter.
MARGIN = 0.95
#: Burst allowance as a share of the per-minute budget (at least one request).
BURST_SHARE = 0.02
#: On a 429 the pace is multiplied by this (multiplicative decrease)...
DECREASE = 0.7
#: ...never below this share of the budget...
MIN_FACTOR = 0.1
#: ...and recovers by this share of the budget per second (additive increase).
RECOVERY_PER_S = 1 / 60
#: `x-ratelimit-remaining-*` at or below this share of the limit slows the pace.
LOW_WATER = 0.02
#: Cooldown after a 429 that names no wait.
DEFAULT_COOLDOWN_S = 1.0
WINDOW_S = 60.0
_EPSILON_S = 1e-6

_ENDPOINTS = ("/chat/completions", "/completions", "/responses", "/embeddings")
_LIMIT_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?$"
)


def is_counted(request: httpx.Request) -> bool:
    """A model call that counts against the budget (not uploads, batch polls, model lists)."""
    return request.method == "POST" and request.url.path.rstrip("/").endswith(_ENDPOINTS)


def estimate_tokens(request: httpx.Request) -> int:
    """Body bytes / 4 plus the completion limit named in the JSON body."""
    try:
        body = request.content
    except httpx.RequestNotRead:  # a streamed body: its size is unknown
        return 0
    tokens = math.ceil(len(body) / 4)
    try:
        data = json.loads(body)
    except ValueError:
        return tokens
    if isinstance(data, dict):
        for key in _LIMIT_KEYS:
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return tokens + value
    return tokens


def parse_duration(value: str | None) -> float | None:
    """Seconds from an `x-ratelimit-reset-*` value: `17ms`, `1.5s`, `6m0s`, `1h2m`, or a
    plain number of seconds; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    match = _DURATION.match(text)
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    seconds = (
        parts.get("h", 0.0) * 3600
        + parts.get("m", 0.0) * 60
        + parts.get("s", 0.0)
        + parts.get("ms", 0.0) / 1000
    )
    return seconds


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait a response asks for: `retry-after-ms`, then `Retry-After` (seconds or an
    HTTP date). Shared with the retry policy (`coach.engines.llm.call.retry_after`)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


@dataclass(frozen=True)
class SchedulerStats:
    requests: int  # counted requests sent
    responses: int  # responses to counted requests
    responses_429: int
    waited_s: float  # total time counted requests waited for budget or cooldown
    max_wait_s: float
    tokens_estimated: int
    pace_rpm: float | None  # the request pace in force (None: unpaced)
    pace_tpm: float | None  # the token pace in force (None: unpaced)
    factor: float  # the 429 slow-down, 1.0 = full budget
    cooldown_s: float  # cooldown left after a 429
    limit_rpm: int | None  # the budget: configured, or lowered/learned from headers or 429s
    limit_tpm: int | None
    workers: int  # processes sharing the budget (this one included); each paces 1/workers
    in_flight: int  # with max_in_flight only


@dataclass
class _Gcra:
    """A generic cell rate: `tat` is when the budget would be fully caught up."""

    tat: float = -math.inf

    def wait(self, now: float, cost: float, per_unit: float, burst: float) -> float:
        # A request larger than the burst allowance waits for the bucket to drain fully
        # (instead of never fitting).
        return max(0.0, self.tat - now + min(0.0, (cost - burst) * per_unit))

    def take(self, now: float, cost: float, per_unit: float) -> None:
        self.tat = max(self.tat, now) + cost * per_unit


@dataclass
class _Dimension:
    """Requests or tokens: the budget, what headers taught us, and the pacing state."""

    configured: int | None
    learned: int | None = None  # the provider's limit, from x-ratelimit-limit-*
    observed: int | None = None  # our own rate when a 429 came with no limit known
    header_interval: float | None = None  # seconds per unit from x-ratelimit-remaining-*
    share: float = 1.0  # this process's share of a budget other workers also draw on
    gcra: _Gcra = field(default_factory=_Gcra)

    @property
    def limit(self) -> int | None:
        """The whole budget (configured or the provider's), before sharing."""
        known = [v for v in (self.configured, self.learned, self.observed) if v is not None]
        return min(known) if known else None

    @property
    def budget(self) -> float | None:
        """What this process may spend per minute: its share of the whole budget. A rate
        observed at a 429 was already this process's own, so it is not divided again."""
        shared = [v * self.share for v in (self.configured, self.learned) if v is not None]
        known = shared + ([self.observed] if self.observed is not None else [])
        return max(1.0, min(known)) if known else None

    def interval(self, factor: float) -> float:
        """Seconds per unit in force (0.0: unpaced)."""
        base = 0.0
        if (budget := self.budget) is not None:
            base = WINDOW_S / (budget * MARGIN * factor)
        return max(base, self.header_interval or 0.0)

    def burst(self) -> float:
        budget = self.budget
        return max(1.0, budget * BURST_SHARE) if budget is not None else 1.0

    def learn(self, limit: int | None, remaining: int | None, reset: float | None) -> bool:
        """Take in one response's headers; True when the remainder is nearly spent."""
        if limit is not None and limit > 0:
            self.learned = limit
        known = self.limit
        self.header_interval = None
        if remaining is None:
            return False
        low = remaining <= (known * LOW_WATER if known is not None else 0)
        if reset is None or reset <= 0:
            return low
        if known is None:
            # Nothing else to go by: spread what is left evenly until the reset.
            self.header_interval = reset / max(remaining * self.share, 1.0)
        elif low:
            # Slower than the provider can free capacity before the reset: binds for resets
            # longer than the budget's minute, where the base pace would overspend.
            self.header_interval = reset / max(known * (1 - LOW_WATER) * self.share, 1.0)
        return low


class _LoopLocal:
    """An asyncio primitive per event loop: one scheduler may outlive an `asyncio.run`."""

    def __init__(self, factory: Callable[[], asyncio.Lock | asyncio.Semaphore]) -> None:
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: asyncio.Lock | asyncio.Semaphore | None = None

    def get(self) -> asyncio.Lock | asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is not loop:
            self._loop, self._value = loop, self._factory()
        return self._value


class Scheduler:
    """Paces model requests to the configured and observed rate limits (see the module doc).

    `clock` and `sleep` are injectable so tests can drive time without waiting."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_in_flight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_in_flight", max_in_flight)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep
        self._requests = _Dimension(rpm)
        self._tokens = _Dimension(tpm)
        self._factor0 = 1.0  # the factor set by the last decrease...
        self._decreased_at = -math.inf  # ...at this time
        self._cooldown_until = -math.inf
        self._sent: deque[float] = deque()  # send times over the last window
        self._sent_at: weakref.WeakKeyDictionary[httpx.Request, float] = weakref.WeakKeyDictionary()
        self._gate = _LoopLocal(asyncio.Lock)
        self._slots = _LoopLocal(lambda: asyncio.Semaphore(max_in_flight or 1))
        self._count = 0
        self._responses = 0
        self._responses_429 = 0
        self._waited = 0.0
        self._max_wait = 0.0
        self._tokens_estimated = 0
        self._in_flight = 0
        self._workers = 1

    def share(self, workers: int) -> None:
        """This process is one of `workers` drawing on the same budget (batch workers count
        each other through the store): pace at 1/`workers` of it from now on."""
        workers = max(1, workers)
        if workers == self._workers:
            return
        log.info("llm_budget_shared", workers=workers, previous=self._workers)
        self._workers = workers
        self._requests.share = self._tokens.share = 1 / workers

    @classmethod
    def from_settings(cls, settings: Settings) -> Scheduler:
        return cls(rpm=settings.llm_rpm, tpm=settings.llm_tpm)

    # -- the event hooks -------------------------------------------------------------------

    async def before_request(self, request: httpx.Request) -> None:
        """Wait for the request and token budgets and any cooldown (httpx request hook)."""
        if not is_counted(request):
            return
        cost = estimate_tokens(request)
        started = self._clock()
        gate = self._gate.get()
        async with gate:  # FIFO: the head waits, re-checking after each sleep
            while True:
                now = self._clock()
                wait = self._wait(now, cost)
                if wait <= _EPSILON_S:  # rounding noise, not a reason to sleep
                    break
                await self._sleep(wait)
            self._take(now, cost)
        self._sent_at[request] = now
        waited = now - started
        self._waited += waited
        self._max_wait = max(self._max_wait, waited)

    async def after_response(self, response: httpx.Response) -> None:
        """Learn from the rate-limit headers; on 429 cool down and slow the pace (httpx
        response hook)."""
        request = response.request
        if not is_counted(request):
            return
        now = self._clock()
        self._responses += 1
        headers = response.headers
        low_requests = self._requests.learn(
            _int_header(headers, "x-ratelimit-limit-requests"),
            _int_header(headers, "x-ratelimit-remaining-requests"),
            parse_duration(headers.get("x-ratelimit-reset-requests")),
        )
        low_tokens = self._tokens.learn(
            _int_header(headers, "x-ratelimit-limit-tokens"),
            _int_header(headers, "x-ratelimit-remaining-tokens"),
            parse_duration(headers.get("x-ratelimit-reset-tokens")),
        )
        if response.status_code == 429:
            self._responses_429 += 1
            wait = retry_after_seconds(headers)
            if wait is None:
                resets = [
                    parse_duration(headers.get(name))
                    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
                ]
                wait = max((r for r in resets if r is not None), default=DEFAULT_COOLDOWN_S)
            self._cooldown_until = max(self._cooldown_until, now + wait)
            self._slow_down(request, now, "429", cooldown_s=wait)
        elif low_requests or low_tokens:
            self._slow_down(request, now, "remaining_low", cooldown_s=0.0)

    # -- bounded in flight -----------------------------------------------------------------

    def wrap_transport(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """`transport` with at most `max_in_flight` counted requests in flight (unchanged
        without a `max_in_flight`)."""
        if self.max_in_flight is None:
            return transport
        return _BoundedTransport(transport, self)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of `max_in_flight` slots, released however the body exits."""
        if self.max_in_flight is None:
            yield
            return
        async with self._slots.get():
            self._in_flight += 1
            try:
                yield
            finally:
                self._in_flight -= 1

    # -- state -----------------------------------------------------------------------------

    def stats(self) -> SchedulerStats:
        now = self._clock()
        factor = self._factor(now)
        req_interval = self._requests.interval(factor)
        tok_interval = self._tokens.interval(factor)
        return SchedulerStats(
            requests=self._count,
            responses=self._responses,
            responses_429=self._responses_429,
            waited_s=self._waited,
            max_wait_s=self._max_wait,
            tokens_estimated=self._tokens_estimated,
            pace_rpm=WINDOW_S / req_interval if req_interval > 0 else None,
            pace_tpm=WINDOW_S / tok_interval if tok_interval > 0 else None,
            factor=factor,
            cooldown_s=max(0.0, self._cooldown_until - now),
            limit_rpm=self._requests.limit,
            limit_tpm=self._tokens.limit,
            workers=self._workers,
            in_flight=self._in_flight,
        )

    # -- internals -------------------------------------------------------------------------

    def _factor(self, now: float) -> float:
        return min(1.0, self._factor0 + (now - self._decreased_at) * RECOVERY_PER_S)

    def _wait(self, now: float, cost: int) -> float:
        factor = self._factor(now)
        requests, tokens = self._requests, self._tokens
        return max(
            self._cooldown_until - now,
            requests.gcra.wait(now, 1, requests.interval(factor), requests.burst()),
            tokens.gcra.wait(now, cost, tokens.interval(factor), tokens.burst()),
        )

    def _take(self, now: float, cost: int) -> None:
        factor = self._factor(now)
        requests, tokens = self._requests, self._tokens
        requests.gcra.take(now, 1, requests.interval(factor))
        tokens.gcra.take(now, cost, tokens.interval(factor))
        self._count += 1
        self._tokens_estimated += cost
        self._sent.append(now)
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()

    def _slow_down(
        self, request: httpx.Request, now: float, reason: str, cooldown_s: float
    ) -> None:
        """Multiplicative decrease, once per episode: responses to requests sent before the
        last decrease were paced at the old rate and tell nothing new."""
        if self._sent_at.get(request, now) <= self._decreased_at:
            return
        if self._requests.limit is None and self._tokens.limit is None:
            self._requests.observed = self._observed_rpm(now)
        self._factor0 = max(MIN_FACTOR, self._factor(now) * DECREASE)
        self._decreased_at = now
        log.info(
            "llm_rate_slow_down",
            reason=reason,
            cooldown_s=round(cooldown_s, 3),
            factor=round(self._factor0, 3),
            limit_rpm=self._requests.limit,
            limit_tpm=self._tokens.limit,
        )

    def _observed_rpm(self, now: float) -> int:
        """Requests per minute sent over the last window (or since the first request)."""
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        if not self._sent:
            return 1
        span = min(WINDOW_S, max(1.0, now - self._sent[0]))
        return max(1, math.floor(len(self._sent) * WINDOW_S / span))


class _BoundedTransport(httpx.AsyncBaseTransport):
    """Holds a scheduler slot from sending a counted request to its response headers; the
    `async with` releases it on errors, timeouts and cancellation too."""

    def __init__(self, inner: httpx.AsyncBaseTransport, scheduler: Scheduler) -> None:
        self._inner = inner
        self._scheduler = scheduler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not is_counted(request):
            return await self._inner.handle_async_request(request)
        async with self._scheduler.slot():
            return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
