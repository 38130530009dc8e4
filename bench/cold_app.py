"""coach's ASGI app reviewing every request as a draft it has not seen, for bench/bench_api.py
and bench/bench_sse.py: the benchmarks send one message over and over, and the rule engine's
sentence memo would answer every sentence of it from the previous request, where real traffic
mostly brings drafts the server has not seen. The memo is emptied before each review, not
turned off: within the review, the rewrite's self-check still finds the draft's sentences, as
it does on a real server.

    uvicorn --app-dir bench --factory cold_app:app
"""

from __future__ import annotations

import os
from typing import Any

from coach.engines.rules.lexicon import forget_chunks
from coach.models import Review, ReviewRequest
from coach.service import ReviewService
from coach.settings import Settings


class UnseenDrafts(ReviewService):
    """A ReviewService that forgets the drafts it has seen before each review."""

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        forget_chunks()
        return await super().review(request, engine=engine, rewrite=rewrite, strict=strict)


def app() -> Any:
    from coach.api import create_app

    settings = Settings.from_env(os.environ)
    return create_app(settings, service=UnseenDrafts(settings=settings))
