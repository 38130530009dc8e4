"""The one entry point every front end (CLI, eval harness, later the API and batch) calls.

It picks the engine, runs it and measures it. Engines never see the front ends.
"""

from __future__ import annotations

import asyncio
import time

from coach.engines import ENGINES, Reviewer
from coach.engines.rules import RuleEngine
from coach.errors import InputError
from coach.logs import fingerprint, get_logger
from coach.models import Review, ReviewRequest
from coach.rulebook import Rulebook, default_rulebook

__all__ = ["ReviewService"]

log = get_logger("coach.service")


class ReviewService:
    def __init__(self, rulebook: Rulebook | None = None) -> None:
        self.rulebook = rulebook or default_rulebook()
        self._engines: dict[str, Reviewer] = {}
        self.rules = RuleEngine(self.rulebook)

    def engine(self, name: str) -> Reviewer:
        if name not in self._engines:
            if name not in ENGINES:
                raise InputError(
                    f"unknown engine {name!r} (available: {', '.join(sorted(ENGINES))})"
                )
            self._engines[name] = ENGINES[name](self.rulebook)
        return self._engines[name]

    async def review(
        self, request: ReviewRequest, *, engine: str = "rules", rewrite: bool = True
    ) -> Review:
        started = time.perf_counter()
        result = await self.engine(engine).review(request, rewrite=rewrite)
        self._log(request, result, started)
        return result

    def review_sync(
        self, request: ReviewRequest, *, engine: str = "rules", rewrite: bool = True
    ) -> Review:
        """Blocking review. The rule engine runs inline (no event loop: it is pure CPU work)."""
        if engine == "rules":
            started = time.perf_counter()
            result = self.rules.review_sync(request, rewrite=rewrite)
            self._log(request, result, started)
            return result
        return asyncio.run(self.review(request, engine=engine, rewrite=rewrite))

    @staticmethod
    def _log(request: ReviewRequest, review: Review, started: float) -> None:
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
