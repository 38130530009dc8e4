"""The LLM engine: one model call per review, validated, cached, and never a crash.

Any failure — deadline, rate limits, provider errors, refusal, truncation, content filter,
output that stays invalid after one repair call — falls back to the rule engine's review with
`degraded: true` and a `degraded_reason` naming what went wrong.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import ValidationError

from coach.engines.base import register
from coach.engines.llm.assemble import assemble_review
from coach.engines.llm.cache import ReviewCache, cache_key, make_cache
from coach.engines.llm.call import CallStats, ModelCaller
from coach.engines.llm.client import make_client
from coach.engines.llm.pricing import estimate_cost, load_prices
from coach.engines.llm.prompts import (
    PromptSet,
    completion_request,
    load_prompt,
    render_review_prompt,
    schema_hint,
)
from coach.engines.llm.schema import LLMReview, strict_schema
from coach.engines.rules.engine import RuleEngine
from coach.errors import LLMError, LLMInvalidOutput, LLMTimeout, first_validation_error
from coach.logs import fingerprint, get_logger
from coach.models import Language, Review, ReviewRequest, Usage
from coach.rulebook import Rulebook
from coach.scheduler import Scheduler
from coach.settings import Settings
from coach.text.language import detect_language

__all__ = ["LLMEngine", "PreparedReview"]

log = get_logger("coach.llm")

_REPAIR = (
    "Your previous answer was not valid JSON for the required schema ({problem}). "
    "Answer again with only the corrected JSON object."
)


@dataclass(frozen=True)
class PreparedReview:
    messages: list[dict[str, str]]
    body: dict[str, Any]
    language: Language


class LLMEngine:
    name = "llm"

    def __init__(
        self,
        rulebook: Rulebook,
        settings: Settings,
        *,
        client: openai.AsyncOpenAI | None = None,
        cache: ReviewCache | None = None,
        caller: ModelCaller | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.rulebook = rulebook
        self.settings = settings
        self.rules = RuleEngine(rulebook)
        self.prompt: PromptSet = load_prompt(
            settings.prompts_dir, "review", settings.llm_prompt_version
        )
        self.model = settings.llm_model or ""
        self.cache = cache if cache is not None else make_cache(settings)
        self.prices = load_prices(settings.llm_prices_file)
        self._client = client
        self._caller = caller
        # One per engine: every review shares its budget. A `client` passed in keeps its own
        # hooks (the eval command builds its client with this same scheduler).
        self.scheduler = scheduler if scheduler is not None else Scheduler.from_settings(settings)
        self._schema = strict_schema(self.prompt.output_model)

    @property
    def caller(self) -> ModelCaller:
        if self._caller is None:
            self._client = self._client or make_client(self.settings, scheduler=self.scheduler)
            self._caller = ModelCaller(self._client, max_attempts=self.settings.llm_max_attempts)
        return self._caller

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    # -- the public entry point --------------------------------------------------------------

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        """The model's review, or the rule engine's marked degraded: never raises for a
        provider or model failure."""
        started = time.perf_counter()
        stats = CallStats()
        try:
            return await self._cached_review(request, rewrite, stats, started)
        except LLMError as exc:
            return self._degraded(request, rewrite, exc.code, str(exc), stats, started)
        except Exception as exc:
            log.error(
                "llm_unexpected", error=exc.__class__.__name__, draft=fingerprint(request.text)
            )
            return self._degraded(
                request, rewrite, "internal_error", exc.__class__.__name__, stats, started
            )

    async def review_or_raise(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        """The model's review; raises the `LLMError` instead of degrading. For batch jobs,
        which retry an item later rather than settle for the rule engine's answer."""
        return await self._cached_review(request, rewrite, CallStats(), time.perf_counter())

    @staticmethod
    def language_of(request: ReviewRequest) -> Language:
        """The language the review is written for: the request's, else the draft's."""
        return request.language or detect_language(request.text)

    def prepare(
        self, request: ReviewRequest, *, rewrite: bool = True, language: Language | None = None
    ) -> PreparedReview:
        """The chat.completions body for one draft (also what a provider batch file holds).
        `language`: when the caller already resolved it (`language_of`)."""
        language = language or self.language_of(request)
        prompt = render_review_prompt(
            self.prompt,
            self.rulebook,
            request,
            language,
            rewrite=rewrite,
            schema_hint=schema_hint(self.settings, self._schema),
        )
        return PreparedReview(
            messages=prompt.messages, body=self._request(prompt.messages), language=language
        )

    def finish(
        self,
        content: str,
        request: ReviewRequest,
        language: Language,
        *,
        rewrite: bool,
        usage: Usage,
    ) -> Review:
        """A `Review` from the model's answer; `LLMInvalidOutput` when it does not validate."""
        try:
            parsed = LLMReview.model_validate_json(content)
        except ValidationError as exc:
            raise LLMInvalidOutput(f"invalid output ({first_validation_error(exc)})") from None
        return assemble_review(parsed, request, language, self.rules, rewrite=rewrite, usage=usage)

    # -- internals ---------------------------------------------------------------------------

    def _cache_key(self, request: ReviewRequest, language: str, rewrite: bool) -> str:
        return cache_key(
            {
                "draft": request.text,
                "kind": request.kind.value,
                "language": language,
                "context": request.context.model_dump(mode="json", by_alias=True)
                if request.context
                else None,
                "rewrite": rewrite,
                "rulebook": [self.rulebook.version, self.rulebook.model_dump(mode="json")],
                "prompt": [self.prompt.version, self.prompt.digest],
                "model": self.model,
                "params": [
                    self.settings.llm_temperature,
                    self.settings.llm_max_tokens,
                    self.settings.llm_response_format,
                ],
            }
        )

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return completion_request(self.prompt, self.settings, self._schema, messages)

    async def _cached_review(
        self, request: ReviewRequest, rewrite: bool, stats: CallStats, started: float
    ) -> Review:
        language = self.language_of(request)
        key = self._cache_key(request, language.value, rewrite)
        if (hit := self.cache.get(key)) is not None:
            usage = (
                hit.usage.model_copy(update={"cache_hit": True, "latency_ms": 0.0})
                if hit.usage
                else None
            )
            return hit.model_copy(update={"usage": usage})
        review = await self._review(request, language, rewrite, stats, started)
        self.cache.put(key, review)
        return review

    async def _review(
        self,
        request: ReviewRequest,
        language: Language,
        rewrite: bool,
        stats: CallStats,
        started: float,
    ) -> Review:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.llm_deadline_s
        prepared = self.prepare(request, rewrite=rewrite, language=language)
        messages = prepared.messages
        completion = await self.caller.complete(prepared.body, deadline=deadline, stats=stats)
        try:
            parsed = LLMReview.model_validate_json(completion.content)
        except ValidationError as first:
            # One repair turn, on a copy of the conversation.
            repair = [
                *copy.deepcopy(messages),
                {"role": "assistant", "content": completion.content},
                {"role": "user", "content": _REPAIR.format(problem=first_validation_error(first))},
            ]
            if loop.time() >= deadline:
                raise LLMTimeout("the review deadline passed before the repair call") from None
            completion = await self.caller.complete(
                self._request(repair), deadline=deadline, stats=stats
            )
            try:
                parsed = LLMReview.model_validate_json(completion.content)
            except ValidationError as second:
                raise LLMInvalidOutput(
                    f"invalid output after one repair ({first_validation_error(second)})"
                ) from None
        usage = self._usage(stats, started)
        review = assemble_review(
            parsed, request, prepared.language, self.rules, rewrite=rewrite, usage=usage
        )
        log.info(
            "llm_review",
            draft=fingerprint(request.text),
            chars=len(request.text),
            model=self.model,
            prompt=self.prompt.version,
            calls=stats.calls,
            tokens_in=stats.tokens_in,
            tokens_out=stats.tokens_out,
            tokens_cached=stats.tokens_cached,
            ms=usage.latency_ms,
        )
        return review

    def _usage(self, stats: CallStats, started: float) -> Usage:
        return Usage(
            model=self.model,
            prompt_version=self.prompt.version,
            tokens_in=stats.tokens_in,
            tokens_out=stats.tokens_out,
            tokens_cached=stats.tokens_cached,
            calls=stats.calls,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            cost_usd=estimate_cost(
                self.prices, self.model, stats.tokens_in, stats.tokens_cached, stats.tokens_out
            ),
        )

    def _degraded(
        self,
        request: ReviewRequest,
        rewrite: bool,
        code: str,
        detail: str,
        stats: CallStats,
        started: float,
    ) -> Review:
        log.warning("llm_fallback", code=code, draft=fingerprint(request.text), calls=stats.calls)
        review = self.rules.review_sync(request, rewrite=rewrite)
        return review.model_copy(
            update={
                "degraded": True,
                "degraded_reason": f"{code}: {detail}; reviewed by the rule engine instead",
                "usage": self._usage(stats, started) if stats.calls else None,
            }
        )


@register("llm")
def _factory(rulebook: Rulebook, settings: Settings) -> LLMEngine:
    return LLMEngine(rulebook, settings)
