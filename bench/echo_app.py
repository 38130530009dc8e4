"""The framework ceiling for bench/bench_api.py: a bare Litestar app whose `POST /v1/reviews`
decodes the JSON body and answers it back, with nothing else (no middleware, no logging).

    uvicorn --app-dir bench --factory echo_app:app
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, post


@post("/v1/reviews", status_code=200)
async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return data


def app() -> Litestar:
    return Litestar(route_handlers=[echo], logging_config=None, debug=False)
