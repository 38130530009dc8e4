"""The one entry point every front end (CLI, eval harness, later the API and batch) calls.

It picks the engine ("auto": the LLM when one is configured, else the rule engine), runs it and
measures it. Front ends never talk to an engine directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

from coach.engines import ENGINES, Reviewer
from coach.engines.rules import RuleEngine
from coach.errors import InputError
from coach.logs import fingerprint, get_logger
from coach.models import Review, ReviewRequest
from coach.rulebook import Rulebook, default_rulebook
from coach.settings import Settings

__all__ = ["ENGINE_CHOICES", "ReviewService"]

log = get_logger("coach.service")

ENGINE_CHOICES = ("rules", "llm", "auto")


class ReviewService:
    def __init__(self, rulebook: Rulebook | None = None, settings: Settings | None = None) -> None:
        self.rulebook = rulebook or default_rulebook()
        self.settings = settings or Settings()
        self.rules = RuleEngine(self.rulebook)
        self._engines: dict[str, Reviewer] = {"rules": self.rules}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._budget_workers = 1
        self._llm_used = False  # an LLM review started since `take_llm_use` last asked
        # A review may outlast a check-in interval: it counts at every check-in it spans.
        self._llm_in_flight = 0

    def resolve(self, name: str) -> str:
        """The engine that `name` means here ("auto" depends on the settings)."""
        if name == "auto":
            return "llm" if self.settings.llm_configured else "rules"
        if name == "llm" and not self.settings.llm_configured:
            raise InputError(
                "the LLM engine is not configured: set COACH_LLM_MODEL and COACH_LLM_BASE_URL "
                "(or COACH_LLM_API_KEY / OPENAI_API_KEY)"
            )
        return name

    def engine(self, name: str) -> Reviewer:
        name = self.resolve(name)
        if name not in self._engines:
            if name not in ENGINES:
                raise InputError(
                    f"unknown engine {name!r} (available: {', '.join(ENGINE_CHOICES)})"
                )
            self._engines[name] = ENGINES[name](self.rulebook, self.settings)
            self._share(self._engines[name])
        return self._engines[name]

    def share_llm_budget(self, workers: int) -> None:
        """This process is one of `workers` processes (batch workers, API processes) drawing on
        the same provider budget (`coach.batch.presence`): its engines pace their calls at that
        share, including an engine built later."""
        self._budget_workers = workers
        for reviewer in self._engines.values():
            self._share(reviewer)

    def take_llm_use(self) -> bool:
        """Whether this service has reviewed with the LLM since the last call, or is doing so
        now; the next call starts afresh. For the check-in of the process's presence: only
        processes drawing on the LLM budget take a share of it, batch items and interactive
        reviews alike."""
        used = self._llm_used or self._llm_in_flight > 0
        self._llm_used = False
        return used

    def llm_pace_rpm(self) -> float | None:
        """The LLM engine's request pace in force (its share of the budget, slowed by 429s);
        None when no LLM engine runs here or nothing limits it."""
        reviewer = self._engines.get("llm")
        scheduler = getattr(reviewer, "scheduler", None)
        if scheduler is None:
            return None
        pace: float | None = scheduler.stats().pace_rpm
        return pace

    def _share(self, reviewer: Reviewer) -> None:
        scheduler = getattr(reviewer, "scheduler", None)
        if scheduler is not None:
            scheduler.share(self._budget_workers)

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        """`strict`: raise the engine's `LLMError` instead of degrading to the rule engine
        (batch jobs retry the item later instead)."""
        started = time.perf_counter()
        name = self.resolve(engine)
        reviewer = self.engine(name)
        raising = getattr(reviewer, "review_or_raise", None) if strict else None
        llm = name == "llm"
        if llm:
            self._llm_used = True
            self._llm_in_flight += 1
        try:
            if raising is not None:
                result: Review = await raising(request, rewrite=rewrite)
            else:
                result = await reviewer.review(request, rewrite=rewrite)
        finally:
            if llm:
                # Also at the end: a review that spanned a check-in drew on the budget after it.
                self._llm_used = True
                self._llm_in_flight -= 1
        self._log(request, result, started)
        return result

    def review_sync(
        self, request: ReviewRequest, *, engine: str = "rules", rewrite: bool = True
    ) -> Review:
        """Blocking review. The rule engine runs inline (pure CPU work, no event loop); other
        engines run on one event loop kept for this service, so their HTTP clients and caches
        live across calls."""
        if self.resolve(engine) == "rules":
            started = time.perf_counter()
            result = self.rules.review_sync(request, rewrite=rewrite)
            self._log(request, result, started)
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.review(request, engine=engine, rewrite=rewrite))

    async def aclose(self) -> None:
        """Close what the engines opened (HTTP clients), from the event loop they ran on."""
        for reviewer in self._engines.values():
            closer = getattr(reviewer, "aclose", None)
            if closer is not None:
                await closer()

    def close(self) -> None:
        """`aclose` for callers of `review_sync`."""
        if self._loop is None:
            return
        self._loop.run_until_complete(self.aclose())
        self._loop.close()
        self._loop = None

    @staticmethod
    def _log(request: ReviewRequest, review: Review, started: float) -> None:
        # Checked first: the arguments (a SHA-256 of the draft among them) cost more than the
        # check, and the API calls this on every request with debug off.
        if not log.is_enabled_for(logging.DEBUG):
            return
        log.debug(
            "review",
            chars=len(request.text),
            draft=fingerprint(request.text),
            kind=request.kind.value,
            language=review.language.value,
            engine=review.engine,
            degraded=review.degraded,
            failed=[r.rule_id for r in review.rules if r.verdict.value == "fail"],
            ms=round((time.perf_counter() - started) * 1000, 3),
        )
