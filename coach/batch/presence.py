"""A running worker's presence in the store, and the share of the rate budget it implies.

Every worker checks in when it starts, again every `every_s` seconds, and checks out when it
stops; each check-in says whether it has been reviewing with the LLM and returns how many
workers of the same pool are (itself included), and the worker paces its model calls at that
share of COACH_LLM_RPM / TPM (`ReviewService.share_llm_budget`). Idle workers take no share.
So ten `coach worker` processes on three machines together stay within one key's limit, and a
worker that is killed stops counting after `ttl_s` (then the others speed up again).

API processes answer interactive LLM reviews from the same budget, so they count too: one that
runs the in-process worker counts its interactive reviews in that worker's check-in (they share
the `ReviewService`, which tells whether it used the LLM), and one with an LLM but no worker
checks in on its own. Either way a process has one presence (`process_presence`), not two.

Between a new worker's start and the others' next check-in the budget is briefly overspent
(at most `every_s` seconds of one worker's share); the scheduler's 5 % margin and its 429
handling absorb that.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from types import TracebackType

from coach.errors import CoachError
from coach.logs import get_logger
from coach.service import ReviewService
from coach.settings import Settings
from coach.store.workers import WorkerStore

__all__ = ["PRESENCE_S", "Presence", "budget_pool", "process_presence"]

log = get_logger("coach.batch.presence")

#: Seconds between check-ins; a worker not seen for three of them no longer counts.
PRESENCE_S = 5.0
_TTL_CHECK_INS = 3


def budget_pool(settings: Settings) -> str:
    """Workers that draw on the same budget: the same endpoint and model (providers limit
    each model of a key separately). A hash, so the store holds no endpoint names."""
    endpoint = settings.llm_base_url or f"{settings.llm_provider}:default"
    raw = f"{endpoint.rstrip('/')}\n{settings.llm_model or ''}"
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


class Presence:
    """`async with Presence(...)`: checked in for the body's duration, refreshed meanwhile;
    `on_count(n)` hears the number of workers in the pool (at least `at_least`) after every
    check-in."""

    def __init__(
        self,
        store: WorkerStore,
        owner: str,
        *,
        pool: str,
        on_count: Callable[[int], None],
        every_s: float = PRESENCE_S,
        at_least: int = 1,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._owner = owner
        self._pool = pool
        self._on_count = on_count
        self._every_s = every_s
        # Workers known to share the budget from the start (`coach batch --workers N` starts
        # them together), so the share is right before the others have checked in.
        self._at_least = at_least
        self._active = active
        self._task: asyncio.Task[None] | None = None
        self.count = 1

    async def __aenter__(self) -> Presence:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Check in now and keep checking in (for owners that are no `async with` block, such
        as an app's lifespan)."""
        await self._check_in()
        self._task = asyncio.create_task(self._refresh())

    async def stop(self) -> None:
        """Stop checking in and check out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._store.check_out(self._owner)
        except CoachError as error:  # the row expires on its own
            log.warning("check_out_failed", error=str(error))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self._check_in()

    async def _check_in(self) -> None:
        try:
            count = await self._store.check_in(
                self._owner,
                pool=self._pool,
                ttl_s=self._every_s * _TTL_CHECK_INS,
                active=self._active(),
            )
        except CoachError as error:  # keep the last count; the database may come back
            log.warning("check_in_failed", error=str(error))
            return
        count = max(count, self._at_least)
        if count != self.count:
            log.info("workers_in_pool", workers=count)
        self.count = count
        self._on_count(count)


def process_presence(
    store: WorkerStore,
    service: ReviewService,
    owner: str,
    *,
    every_s: float | None = None,
    at_least: int = 1,
) -> Presence:
    """The presence of a process that reviews with `service`: a batch worker, or an API process
    without COACH_WORKER_IN_PROCESS. Active while the service reviews with the LLM (batch items
    and interactive reviews alike: `ReviewService.take_llm_use`), paced at its share of the
    budget meanwhile."""
    return Presence(
        store,
        owner,
        pool=budget_pool(service.settings),
        on_count=service.share_llm_budget,
        # Looked up at each call rather than bound as the default, so tests can shorten it.
        every_s=PRESENCE_S if every_s is None else every_s,
        at_least=at_least,
        active=service.take_llm_use,
    )
