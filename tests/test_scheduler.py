"""The request scheduler (coach/scheduler.py), in virtual time: an event loop whose clock jumps
to the next timer instead of waiting, so minutes of pacing run in milliseconds and exactly."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import selectors
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
import respx

from coach.engines.llm.client import make_client
from coach.scheduler import Scheduler, estimate_tokens, is_counted, parse_duration
from coach.settings import Settings

T = TypeVar("T")
BASE = "https://llm.test/v1"
CHAT = f"{BASE}/chat/completions"
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x" * 396}]}


# -- virtual time ---------------------------------------------------------------------------------


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _JumpingSelector(selectors.SelectSelector):
    """Where the loop would block until its next timer, the clock jumps there instead."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("deadlock: nothing to run and no timer")
        self._clock.now += max(0.0, timeout)
        return super().select(0)


def run_virtual(clock: VirtualClock, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.SelectorEventLoop(_JumpingSelector(clock))
    loop.time = clock  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def scheduler(clock: VirtualClock, **kwargs: Any) -> Scheduler:
    return Scheduler(clock=clock, sleep=asyncio.sleep, **kwargs)


def chat(body: dict[str, Any] | None = None, url: str = CHAT) -> httpx.Request:
    return httpx.Request("POST", url, json=BODY if body is None else body)


def answer(request: httpx.Request, status: int = 200, /, **headers: str) -> httpx.Response:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.Response(status, headers=named, json={}, request=request)


async def send_all(s: Scheduler, count: int, clock: VirtualClock) -> list[float]:
    """`count` concurrent requests; the times they were let through."""
    times: list[float] = []

    async def one() -> None:
        await s.before_request(chat())
        times.append(clock())

    await asyncio.gather(*(one() for _ in range(count)))
    return times


def max_in_window(times: list[float], window: float = 60.0) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- what counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "counted"),
    [
        ("POST", CHAT, True),
        ("POST", f"{BASE}/responses", True),
        ("POST", f"{BASE}/embeddings", True),
        ("POST", "https://x.openai.azure.com/openai/deployments/d/chat/completions", True),
        ("POST", f"{BASE}/files", False),
        ("POST", f"{BASE}/batches", False),
        ("GET", f"{BASE}/batches/batch_1", False),
        ("GET", f"{BASE}/responses/resp_1", False),
        ("GET", f"{BASE}/models", False),
    ],
)
def test_only_model_calls_count(method: str, url: str, counted: bool) -> None:
    assert is_counted(httpx.Request(method, url)) is counted


def test_uncounted_requests_never_wait_nor_count() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=1)

    async def main() -> None:
        await s.before_request(chat())  # spends the one-per-minute budget
        for _ in range(5):
            await s.before_request(httpx.Request("GET", f"{BASE}/batches/b1"))
            await s.before_request(httpx.Request("POST", f"{BASE}/files", content=b"x" * 10))
        # A 429 from the Batch API is another budget: no cooldown for model calls.
        await s.after_response(
            answer(httpx.Request("GET", f"{BASE}/batches/b1"), 429, retry_after="30")
        )

    run_virtual(clock, main)
    assert clock.now == 0.0
    stats = s.stats()
    assert stats.requests == 1 and stats.responses == 0 and stats.cooldown_s == 0.0


def test_token_estimate_is_body_over_four_plus_the_completion_limit() -> None:
    body = {**BODY, "max_completion_tokens": 700}
    request = chat(body)
    assert estimate_tokens(request) == math.ceil(len(request.content) / 4) + 700
    assert estimate_tokens(chat({**BODY, "max_tokens": 50})) > estimate_tokens(chat())
    small = chat({**BODY, "max_output_tokens": 9})
    assert estimate_tokens(small) == math.ceil(len(small.content) / 4) + 9
    assert estimate_tokens(httpx.Request("POST", CHAT, content=b"not json!")) == 3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("17ms", 0.017), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("20", 20.0)],
)
def test_reset_durations(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "5x"])
def test_unreadable_reset_durations(value: str | None) -> None:
    assert parse_duration(value) is None


# -- pacing ---------------------------------------------------------------------------------------


def test_no_budget_means_no_waiting() -> None:
    clock = VirtualClock()
    s = scheduler(clock)
    times = run_virtual(clock, lambda: send_all(s, 500, clock))
    assert max(times) == 0.0 and s.stats().pace_rpm is None


def test_requests_are_paced_evenly_just_under_the_budget() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=120)
    times = run_virtual(clock, lambda: send_all(s, 600, clock))
    # Never more than the budget in any sliding minute, but at least 90% of it.
    assert max_in_window(times) <= 120
    rate_per_min = (len(times) - 1) / (max(times) - min(times)) * 60
    assert 0.9 * 120 <= rate_per_min <= 120
    # Evenly: a small burst at the start, then one request every 60 / (0.95 * 120) s.
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert sum(g == 0.0 for g in gaps) <= 2
    assert max(gaps) == pytest.approx(60 / 114)
    stats = s.stats()
    assert stats.requests == 600 and stats.pace_rpm == pytest.approx(114)
    assert stats.waited_s > 0 and stats.max_wait_s == pytest.approx(max(times))


def test_the_token_budget_paces_by_estimated_tokens() -> None:
    clock = VirtualClock()
    s = scheduler(clock, tpm=60_000)
    body = {**BODY, "max_tokens": 900}  # 1,000 tokens with the messages
    cost = estimate_tokens(chat(body))
    times: list[float] = []

    async def main() -> None:
        async def one() -> None:
            await s.before_request(chat(body))
            times.append(clock())

        await asyncio.gather(*(one() for _ in range(240)))

    run_virtual(clock, main)
    # 60,000 tokens a minute at 95%: about 57 requests of `cost` tokens a minute.
    per_minute = 60_000 * 0.95 / cost
    assert max_in_window(times) <= 60_000 / cost
    assert (len(times) - 1) / max(times) * 60 == pytest.approx(per_minute, rel=0.03)
    assert s.stats().tokens_estimated == 240 * cost


def test_a_request_larger_than_the_whole_token_budget_still_goes() -> None:
    clock = VirtualClock()
    s = scheduler(clock, tpm=1_000)
    huge = {**BODY, "max_tokens": 5_000}

    async def main() -> None:
        await s.before_request(chat(huge))
        await s.before_request(chat(huge))  # waits for the first one's tokens, then goes

    run_virtual(clock, main)
    assert clock.now == pytest.approx(estimate_tokens(chat(huge)) * 60 / 950)


def test_a_cancelled_waiter_spends_no_budget() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=30)  # a burst allowance of one request

    async def main() -> list[float]:
        await s.before_request(chat())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s.before_request(chat()), timeout=0.5)  # a review's deadline
        return await send_all(s, 1, clock)

    (sent,) = run_virtual(clock, main)
    assert sent == pytest.approx(60 / 28.5)  # the next slot, not one slot later
    assert s.stats().requests == 2


# -- 429s and headers -----------------------------------------------------------------------------


def test_429_retry_after_cools_every_request_down() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=100_000)  # a budget so large that only the cooldown shows

    async def main() -> list[float]:
        request = chat()
        await s.before_request(request)
        await s.after_response(answer(request, 429, retry_after="5"))
        assert s.stats().cooldown_s == 5.0 and s.stats().responses_429 == 1
        return await send_all(s, 3, clock)

    assert run_virtual(clock, main) == [5.0, 5.0, 5.0]


def test_retry_after_ms_wins_over_retry_after() -> None:
    clock = VirtualClock()
    s = scheduler(clock)

    async def main() -> list[float]:
        request = chat()
        await s.before_request(request)
        await s.after_response(answer(request, 429, retry_after="2", retry_after_ms="250"))
        return await send_all(s, 1, clock)

    assert run_virtual(clock, main) == [0.25]


def test_a_429_without_retry_after_waits_for_the_reset_header() -> None:
    clock = VirtualClock()
    s = scheduler(clock)

    async def main() -> list[float]:
        request = chat()
        await s.before_request(request)
        await s.after_response(answer(request, 429, x_ratelimit_reset_tokens="1.5s"))
        return await send_all(s, 1, clock)

    assert run_virtual(clock, main) == [1.5]


def test_429s_slow_the_pace_once_per_episode_and_it_recovers() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=600)

    async def main() -> None:
        burst = [chat() for _ in range(5)]
        for request in burst:
            await s.before_request(request)
        await asyncio.sleep(1)
        # Five in-flight requests of the same episode come back 429: one decrease.
        for request in burst:
            await s.after_response(answer(request, 429, retry_after_ms="100"))
        assert s.stats().factor == pytest.approx(0.7)
        assert s.stats().pace_rpm == pytest.approx(570 * 0.7)
        later = chat()
        await s.before_request(later)  # sent after the decrease: a new episode
        await asyncio.sleep(1)
        await s.after_response(answer(later, 429, retry_after_ms="100"))
        assert s.stats().factor == pytest.approx(0.7 * (0.7 + 1.1 / 60))
        await asyncio.sleep(60)  # additive recovery: 1/60 of the budget per second

    run_virtual(clock, main)
    stats = s.stats()
    assert stats.factor == 1.0 and stats.pace_rpm == pytest.approx(570)
    assert stats.responses_429 == 6


def test_low_remaining_requests_slow_down_without_a_cooldown() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=1000)

    async def main() -> None:
        request = chat()
        await s.before_request(request)
        await s.after_response(
            answer(
                request,
                x_ratelimit_limit_requests="1000",
                x_ratelimit_remaining_requests="3",
                x_ratelimit_reset_requests="20s",
            )
        )

    run_virtual(clock, main)
    stats = s.stats()
    assert stats.factor == pytest.approx(0.7) and stats.cooldown_s == 0.0
    assert stats.responses_429 == 0 and stats.pace_rpm == pytest.approx(950 * 0.7)


def test_a_remainder_with_a_long_reset_is_made_to_last_until_the_reset() -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=100)
    request = chat()
    response = answer(
        request,
        x_ratelimit_limit_requests="100",
        x_ratelimit_remaining_requests="1",
        x_ratelimit_reset_requests="10m0s",
    )
    run_virtual(clock, functools.partial(s.after_response, response))
    # 98 requests over the 600 s to the reset, not 95 a minute.
    assert s.stats().pace_rpm == pytest.approx(98 / 10)


def test_the_provider_limit_header_lowers_or_sets_the_budget() -> None:
    clock = VirtualClock()
    configured = scheduler(clock, rpm=1000)
    unconfigured = scheduler(clock)
    headers = {
        "x_ratelimit_limit_requests": "300",
        "x_ratelimit_remaining_requests": "299",
        "x_ratelimit_reset_requests": "200ms",
        "x_ratelimit_limit_tokens": "90000",
        "x_ratelimit_remaining_tokens": "88000",
        "x_ratelimit_reset_tokens": "1s",
    }
    for s in (configured, unconfigured):
        response = answer(chat(), **headers)
        run_virtual(clock, functools.partial(s.after_response, response))
        stats = s.stats()
        assert stats.limit_rpm == 300 and stats.limit_tpm == 90_000
        assert stats.pace_rpm == pytest.approx(285) and stats.factor == 1.0
    assert scheduler(clock, rpm=100).stats().limit_rpm == 100


def test_remaining_without_a_limit_is_spread_until_the_reset() -> None:
    clock = VirtualClock()
    s = scheduler(clock)

    async def main() -> list[float]:
        request = chat()
        await s.before_request(request)
        await s.after_response(
            answer(request, x_ratelimit_remaining_requests="4", x_ratelimit_reset_requests="8s")
        )
        return await send_all(s, 3, clock)

    times = run_virtual(clock, main)
    assert s.stats().pace_rpm == pytest.approx(30)  # 4 requests over 8 s
    # The first goes at once (the previous request was spaced at the old, unpaced rate).
    assert sorted(times) == pytest.approx([0.0, 2.0, 4.0])


async def _120_a_minute_then_a_429(s: Scheduler) -> None:
    """20 requests half a second apart (120 a minute), then the last one's answer is a 429."""
    requests = []
    for _ in range(20):
        request = chat()
        await s.before_request(request)
        requests.append(request)
        await asyncio.sleep(0.5)
    await s.after_response(answer(requests[-1], 429))


def test_without_budget_or_headers_a_429_adopts_the_observed_rate() -> None:
    clock = VirtualClock()
    s = scheduler(clock)
    run_virtual(clock, functools.partial(_120_a_minute_then_a_429, s))
    stats = s.stats()
    assert stats.limit_rpm == 120 and stats.cooldown_s == pytest.approx(1.0)
    assert stats.pace_rpm == pytest.approx(120 * 0.95 * 0.7)


# -- a simulated sliding-window provider: the batch benchmark in virtual time -------------------


class SlidingWindowProvider:
    """Like `python -m tools.fake_openai --rpm N`: a sliding 60 s window over accepted
    requests, 429 with retry-after(-ms) beyond it, and the x-ratelimit-*-requests headers."""

    def __init__(self, rpm: int, clock: VirtualClock, *, headers: bool = True) -> None:
        self.rpm = rpm
        self.clock = clock
        self.headers = headers
        self.window: deque[float] = deque()
        self.calls = 0
        self.rejected = 0

    def arrive(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        self.calls += 1
        while self.window and self.window[0] <= now - 60:
            self.window.popleft()
        status, headers = 200, {}
        if len(self.window) >= self.rpm:
            self.rejected += 1
            wait = self.window[0] + 60 - now
            status = 429
            headers = {
                "retry-after": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(max(1000, math.ceil(wait * 1000))),
            }
        else:
            self.window.append(now)
        if self.headers:
            reset = self.window[-1] + 60 - now if self.window else 0.0
            headers |= {
                "x-ratelimit-limit-requests": str(self.rpm),
                "x-ratelimit-remaining-requests": str(max(0, self.rpm - len(self.window))),
                "x-ratelimit-reset-requests": f"{max(0, math.ceil(reset * 1000))}ms",
            }
        return httpx.Response(status, headers=headers, json={}, request=request)


async def batch(
    s: Scheduler,
    provider: SlidingWindowProvider,
    *,
    items: int,
    concurrency: int,
    latency: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """`items` reviews, `concurrency` at a time, each retried after a 429 like ModelCaller."""
    queue = list(range(items))

    async def worker() -> None:
        while queue:
            queue.pop()
            while True:
                request = chat()
                await s.before_request(request)
                response = provider.arrive(request)
                await sleep(latency)
                await s.after_response(response)
                if response.status_code != 429:
                    break
                await sleep(float(response.headers["retry-after-ms"]) / 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@pytest.mark.parametrize(
    ("rpm", "configured", "concurrency", "latency", "items"),
    [
        (600, 600, 32, 1.0, 1_500),  # rate-bound, budget configured
        (600, None, 32, 1.0, 1_500),  # rate-bound, budget learned from the headers
        (120, 120, 8, 0.05, 600),  # the e2e test's shape, for five minutes
        (6_000, 6_000, 8, 1.0, 2_000),  # concurrency-bound: pacing must not get in the way
    ],
)
def test_batch_reaches_90_percent_of_ideal_with_under_2_percent_429s(
    rpm: int, configured: int | None, concurrency: int, latency: float, items: int
) -> None:
    clock = VirtualClock()
    s = scheduler(clock, rpm=configured)
    provider = SlidingWindowProvider(rpm, clock)
    run_virtual(
        clock,
        lambda: batch(s, provider, items=items, concurrency=concurrency, latency=latency),
    )
    ideal = min(concurrency / latency, rpm / 60)
    achieved = items / clock.now
    assert achieved >= 0.9 * ideal, (achieved, ideal, s.stats())
    assert provider.rejected < 0.02 * provider.calls, s.stats()
    assert s.stats().responses_429 == provider.rejected


def test_the_simulated_provider_does_punish_an_unpaced_batch() -> None:
    """The benchmark above is not vacuous: without a budget or headers, a batch overruns."""
    clock = VirtualClock()
    provider = SlidingWindowProvider(600, clock, headers=False)
    no_scheduler = Scheduler(clock=clock, rpm=None)

    async def blind() -> None:
        await batch(no_scheduler, provider, items=3_000, concurrency=32, latency=1.0)

    run_virtual(clock, blind)
    assert provider.rejected > 0.02 * provider.calls


def _shared_batch(workers: int, *, share: bool) -> tuple[SlidingWindowProvider, float]:
    """`workers` processes, each configured with the whole 600 rpm budget, on one provider."""
    clock = VirtualClock()
    provider = SlidingWindowProvider(600, clock)
    schedulers = [scheduler(clock, rpm=600) for _ in range(workers)]
    if share:
        for s in schedulers:
            s.share(workers)

    async def main() -> None:
        await asyncio.gather(
            *(batch(s, provider, items=500, concurrency=16, latency=1.0) for s in schedulers)
        )

    run_virtual(clock, main)
    return provider, workers * 500 / clock.now


def test_workers_sharing_a_budget_stay_within_it_together() -> None:
    provider, achieved = _shared_batch(3, share=True)
    assert achieved >= 0.9 * 600 / 60
    assert provider.rejected < 0.02 * provider.calls


def test_workers_that_do_not_share_a_budget_overrun_it() -> None:
    """The test above is not vacuous: each taking the whole budget draws 429s."""
    provider, _ = _shared_batch(3, share=False)
    assert provider.rejected > 0.02 * provider.calls


def test_a_share_divides_the_configured_and_the_learned_budget_but_not_the_observed_rate() -> None:
    clock = VirtualClock()
    configured = scheduler(clock, rpm=1200)
    configured.share(4)
    stats = configured.stats()
    assert stats.workers == 4 and stats.limit_rpm == 1200
    assert stats.pace_rpm == pytest.approx(1200 / 4 * 0.95)
    # The provider's limit from the headers is the whole key's too.
    learned = scheduler(clock)
    learned.share(2)
    response = answer(
        chat(), x_ratelimit_limit_requests="300", x_ratelimit_remaining_requests="299"
    )
    run_virtual(clock, functools.partial(learned.after_response, response))
    assert learned.stats().pace_rpm == pytest.approx(300 / 2 * 0.95)
    # Back to one worker: the whole budget again.
    configured.share(1)
    assert configured.stats().pace_rpm == pytest.approx(1200 * 0.95)
    assert configured.stats().workers == 1


def test_a_rate_observed_at_a_429_is_already_this_workers_own() -> None:
    clock = VirtualClock()
    s = scheduler(clock)
    s.share(2)
    run_virtual(clock, functools.partial(_120_a_minute_then_a_429, s))  # from this worker
    assert s.stats().pace_rpm == pytest.approx(120 * 0.95 * 0.7)


# -- bounded in flight and the client hooks -------------------------------------------------------


def test_max_in_flight_bounds_requests_and_releases_on_errors() -> None:
    in_flight = 0
    peak = 0

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await asyncio.sleep(0.01)
                if request.url.params.get("fail"):
                    raise httpx.ConnectError("down", request=request)
                return httpx.Response(200, json={}, request=request)
            finally:
                in_flight -= 1

    s = Scheduler(max_in_flight=3)
    transport = s.wrap_transport(Slow())

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:

            async def call(i: int) -> None:
                params = {"fail": "1"} if i % 2 else {}
                with contextlib.suppress(httpx.ConnectError):
                    await client.post(CHAT, params=params, json=BODY)

            await asyncio.gather(*(call(i) for i in range(20)))
            with pytest.raises(TimeoutError):  # cancelled mid-request: the slot comes back
                await asyncio.wait_for(client.post(CHAT, json=BODY), timeout=0.001)
            assert s.stats().in_flight == 0
            await asyncio.gather(*(call(0) for _ in range(3)))

    asyncio.run(main())
    assert peak == 3 and s.stats().in_flight == 0
    assert Scheduler().wrap_transport(transport) is transport  # off without max_in_flight


def _settings(**extra: Any) -> Settings:
    return Settings.model_validate({"llm_base_url": BASE, "llm_model": "m", **extra})


def test_from_settings_takes_the_budgets() -> None:
    stats = Scheduler.from_settings(_settings(llm_rpm=60, llm_tpm=9000)).stats()
    assert stats.limit_rpm == 60 and stats.limit_tpm == 9000


def test_make_client_installs_the_hooks() -> None:
    s = Scheduler(rpm=6000)
    client = make_client(_settings(), scheduler=s)
    reply = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"},
            }
        ],
    }

    async def main() -> None:
        try:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        finally:
            await client.close()

    with respx.mock(assert_all_called=True) as router:
        router.post(CHAT).mock(
            return_value=httpx.Response(
                200, json=reply, headers={"x-ratelimit-limit-requests": "500"}
            )
        )
        asyncio.run(main())
    stats = s.stats()
    assert stats.requests == 1 and stats.responses == 1 and stats.limit_rpm == 500


def test_rejects_a_zero_budget() -> None:
    with pytest.raises(ValueError, match="rpm"):
        Scheduler(rpm=0)
