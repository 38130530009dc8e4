"""coach's ASGI app with the rule engine's sentence memo off, for bench/bench_api.py: the
benchmark sends one message over and over, and the memo would answer every sentence of it
from the previous request, where real traffic mostly brings drafts the server has not seen.

    uvicorn --app-dir bench --factory cold_app:app
"""

from __future__ import annotations

from typing import Any

from coach.asgi import app as coach_app
from coach.engines.rules.lexicon import set_chunk_memo_size


def app() -> Any:
    set_chunk_memo_size(0)
    return coach_app()
