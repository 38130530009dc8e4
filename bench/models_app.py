"""A bare Litestar `POST /v1/reviews` with coach's request and response models and nothing
else (no middleware, no logging), for bench/bench_layers.py: the framework's cost for the real
shapes (the request validated into `ReviewCreate`, a `Review` serialised back). The review is
computed once, on the first request.

    uvicorn --app-dir bench --factory models_app:app
"""

from __future__ import annotations

from litestar import Litestar, post

from coach.api.schemas import ReviewCreate
from coach.models import Review
from coach.service import ReviewService

_service = ReviewService()
_answer: list[Review] = []


@post("/v1/reviews", status_code=200)
async def create(data: ReviewCreate) -> Review:
    if not _answer:
        _answer.append(await _service.review(data.to_request()))
    return _answer[0]


def app() -> Litestar:
    return Litestar(route_handlers=[create], logging_config=None, debug=False)
