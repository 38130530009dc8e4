"""coach's ASGI app with the review taken out, for bench/bench_api.py: every request runs the
whole API (routing, the request model, the log line, metrics, the rate limiter, the request id,
the Review's serialisation) but gets a review computed once, on the first request, instead of
running the engine. Its rate is the most any engine could reach behind this API: what the API
costs on its own next to the bare echo.

    uvicorn --app-dir bench --factory api_only_app:app

Benchmark only: it answers every draft with the review of the first one it saw.
"""

from __future__ import annotations

import os
from typing import Any

from coach.models import Review, ReviewRequest
from coach.service import ReviewService
from coach.settings import Settings


class PrecomputedReviews(ReviewService):
    """A ReviewService whose review costs nothing after the first."""

    _answer: Review | None = None

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        if self._answer is None:
            self._answer = await super().review(
                request, engine=engine, rewrite=rewrite, strict=strict
            )
        return self._answer


def app() -> Any:
    from coach.api import create_app

    settings = Settings.from_env(os.environ)
    return create_app(settings, service=PrecomputedReviews(settings=settings))
