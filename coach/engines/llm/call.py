"""The one place that calls the model and decides retries (tenacity).

Retried, with exponential backoff and jitter: 429 (except `insufficient_quota`), 5xx, timeouts
and connection errors. A `retry-after-ms` or `Retry-After` header sets the wait instead. Never
retried: other 4xx. Everything stays inside the review's deadline: a retry whose wait would end
after it is not attempted. Errors leave as the named `LLMError`s of `coach.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from coach.errors import (
    LLMContentFiltered,
    LLMError,
    LLMProviderError,
    LLMQuotaExceeded,
    LLMRateLimited,
    LLMRefusal,
    LLMTimeout,
    LLMTruncated,
)
from coach.scheduler import retry_after_seconds

__all__ = ["Completion", "ModelCaller", "retry_after"]

_BACKOFF = wait_random_exponential(multiplier=0.5, max=8)


@dataclass
class Completion:
    content: str
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0


@dataclass
class CallStats:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    waits: list[float] = field(default_factory=list)


def _quota(exc: BaseException) -> bool:
    body = getattr(exc, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code") or code
    return code == "insufficient_quota" or getattr(exc, "code", None) == "insufficient_quota"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError):
        return not _quota(exc)
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, openai.APITimeoutError | openai.APIConnectionError)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After`."""
    response: httpx.Response | None = getattr(exc, "response", None)
    if response is None:
        return None
    return retry_after_seconds(response.headers)


class ModelCaller:
    """Calls chat.completions with retries inside a deadline. `sleep` is injectable so tests
    can assert the waits without waiting."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        max_attempts: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.max_attempts = max_attempts
        self._sleep = sleep

    async def complete(
        self, request: dict[str, Any], *, deadline: float, stats: CallStats
    ) -> Completion:
        loop = asyncio.get_running_loop()

        def wait(state: RetryCallState) -> float:
            asked = retry_after(state.outcome.exception() if state.outcome else None)
            return asked if asked is not None else float(_BACKOFF(state))

        def stop(state: RetryCallState) -> bool:
            remaining = deadline - loop.time()
            return state.attempt_number >= self.max_attempts or state.upcoming_sleep >= remaining

        async def sleep(seconds: float) -> None:
            stats.waits.append(seconds)
            await self._sleep(seconds)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait,
            stop=stop,
            sleep=sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    stats.calls += 1
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise LLMTimeout("the review deadline passed")
                    response = await asyncio.wait_for(_create(self.client, request), remaining)
        except LLMError:
            raise
        except TimeoutError:
            raise LLMTimeout("the review deadline passed") from None
        except openai.RateLimitError as exc:
            if _quota(exc):
                raise LLMQuotaExceeded("the provider reports insufficient quota") from None
            raise LLMRateLimited(
                "rate limited (429) until the retries or the deadline ran out"
            ) from None
        except openai.APITimeoutError:
            raise LLMTimeout("the provider timed out") from None
        except openai.APIConnectionError:
            raise LLMProviderError("could not reach the provider") from None
        except openai.APIStatusError as exc:
            raise LLMProviderError(f"the provider answered HTTP {exc.status_code}") from None
        return _completion(response, stats)


async def _create(client: openai.AsyncOpenAI, request: dict[str, Any]) -> Any:
    """chat.completions.create with the structured-output schema passed through `extra_body`:
    the SDK walks typed parameters value by value to transform them, which for our
    several-kilobyte JSON schema cost about a millisecond of CPU per call (a batch worker's
    budget); `extra_body` is sent as given. The request on the wire is the same."""
    params = dict(request)
    response_format = params.pop("response_format", None)
    extra = {"response_format": response_format} if response_format is not None else None
    return await client.chat.completions.create(**params, extra_body=extra)


def _completion(response: Any, stats: CallStats) -> Completion:
    usage = getattr(response, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0)
    stats.tokens_in += tokens_in
    stats.tokens_out += tokens_out
    stats.tokens_cached += cached
    if not response.choices:
        raise LLMProviderError("the provider returned no choices")
    choice = response.choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        raise LLMRefusal("the model refused to review the draft")
    if choice.finish_reason == "content_filter":
        raise LLMContentFiltered("the provider's content filter stopped the answer")
    if choice.finish_reason == "length":
        raise LLMTruncated("the answer was cut off at the token limit")
    return Completion(message.content or "", tokens_in, tokens_out, cached)
