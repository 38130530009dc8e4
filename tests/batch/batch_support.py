"""Helpers for the batch core tests: items to store, a counting fake server, store rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from coach.batch.jobs import draft_hash
from coach.engines.rules import RuleEngine
from coach.models import Review, ReviewRequest
from coach.rulebook import Rulebook
from coach.scheduler import Scheduler
from coach.service import ReviewService
from coach.settings import Settings
from coach.store import NewItem, SqlStore
from coach.store.schema import batch_items
from tools.fake_openai import MODEL_ID
from tools.fake_openai.process import start

__all__ = [
    "MODEL_ID",
    "REPO",
    "CountingServer",
    "counting_server",
    "item_rows",
    "new_items",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]


def new_items(
    n: int, *, prefix: str = "item", text: str = "Draft number {i}: can we talk?"
) -> list[NewItem]:
    """`n` readable items with distinct drafts (`text` is formatted with `i`)."""
    out = []
    for i in range(n):
        request = ReviewRequest(text=text.format(i=i)).model_dump_json()
        out.append(
            NewItem(
                key=f"{prefix}-{i:04d}",
                location={"id": f"{prefix}-{i:04d}"},
                request=request,
                draft_hash=draft_hash(request, engine="rules", rewrite=True),
            )
        )
    return out


async def item_rows(store: SqlStore, batch_id: str) -> list[dict[str, Any]]:
    """Every item row of the batch (state, attempts, lease…), in seq order."""
    async with store._engine.connect() as conn:
        rows = await conn.execute(
            select(batch_items)
            .where(batch_items.c.batch_id == batch_id)
            .order_by(batch_items.c.seq)
        )
        return [dict(r._mapping) for r in rows]


def wait_for(check: Callable[[], bool], *, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


@dataclass
class CountingServer:
    """The fake OpenAI server with its access log kept: one line per chat completion it
    answered (written after the latency, before the answer is sent), so `completions()` counts
    the reviews performed, including those whose client died waiting."""

    base_url: str
    log: Path

    def completions(self) -> int:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return sum(1 for line in text.splitlines() if "POST /v1/chat/completions 200" in line)

    def env(self) -> dict[str, str]:
        return {"COACH_LLM_BASE_URL": self.base_url, "COACH_LLM_MODEL": MODEL_ID}


@contextmanager
def counting_server(log: Path, *args: str) -> Iterator[CountingServer]:
    """`python -m tools.fake_openai` (not quiet: its access log goes to `log`)."""
    server = start(*args, access_log=log)
    try:
        yield CountingServer(server.base_url, log)
    finally:
        server.stop()


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


#: An LLM that is configured but never called (`FakeLLM` answers instead).
LLM_SETTINGS = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_rpm=600)


class FakeLLM:
    """Stands in for the LLM engine: the rule engine's review labelled "llm", after `hold`
    (when set) is released; a real `Scheduler`, so the service's budget share reaches it."""

    name = "llm"

    def __init__(self, rulebook: Rulebook, settings: Settings) -> None:
        self.scheduler = Scheduler.from_settings(settings)
        self.rules = RuleEngine(rulebook)
        self.hold: asyncio.Event | None = None
        self.in_flight = 0

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        self.in_flight += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            review = self.rules.review_sync(request, rewrite=rewrite)
            return review.model_copy(update={"engine": "llm"})
        finally:
            self.in_flight -= 1


def llm_of(service: ReviewService) -> FakeLLM:
    engine = service.engine("llm")
    assert isinstance(engine, FakeLLM)
    return engine


def workers_of(service: ReviewService) -> int:
    """How many workers the service's LLM engine shares the budget with."""
    return llm_of(service).scheduler.stats().workers
