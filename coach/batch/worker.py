"""The batch worker: claims items from the store, reviews them, writes results — any number of
them, in one process or many, on one machine or several.

One loop per worker keeps at most `concurrency` items in flight: it claims only as many items
as it has free slots (so no claimed item waits unleased-but-idle), reviews each in its own task
and renews the leases of the items in flight every third of the lease, so a slow review is
never taken over by another worker while this one still works on it. A worker that dies (even
SIGKILL) simply stops renewing: its leases expire and the items are claimed again.

Retries: an LLM failure that a later attempt may cure (rate limits, timeouts, provider errors,
output that did not validate) puts the item back with a growing delay (`not_before`); after
`max_attempts` attempts the item is failed with its reason. Failures no retry can cure
(refusal, content filter, quota) fail at once. Nothing is dropped: every item ends done or
failed with a reason, and failed items can be re-queued.

Identical drafts are reviewed once per batch: an item whose draft (and engine and rewrite
setting) matches one already done copies that review (`duplicate_of` names the original), and
two identical items in one worker share one review, even when the copy was claimed before the
original's review was stored and starts after it.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from coach.batch.presence import PRESENCE_S, process_presence
from coach.errors import CoachError, LLMError, first_validation_error
from coach.logs import get_logger
from coach.models import Review, ReviewRequest
from coach.service import ReviewService
from coach.store.batches import BatchStore, ClaimedItem

__all__ = ["RETRYABLE_CODES", "Worker", "WorkerConfig", "WorkerStats", "retry_delay"]

log = get_logger("coach.batch.worker")

#: How often a worker deletes the batches past their retention (COACH_BATCH_RETENTION_DAYS).
PURGE_EVERY_S = 3600.0

#: Share of the review deadline an LLM review may spend waiting for the rate budget.
BUDGET_WAIT_SHARE = 0.5

#: LLM failures a later attempt may cure; the others fail the item at once.
RETRYABLE_CODES = frozenset(
    {"timeout", "rate_limited", "provider_error", "invalid_output", "llm_error", "internal_error"}
)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 8
    lease_s: float = 120.0
    max_attempts: int = 5
    poll_s: float = 0.5
    batch_id: str | None = None  # only this batch (`coach batch`); None: every batch
    presence_s: float = PRESENCE_S  # check-ins that share the rate budget between workers
    workers_at_least: int = 1  # workers started together with this one (`--workers N`)
    retention_s: float | None = None  # delete batches finished this long ago (None: keep)


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    reused: int = 0
    lost: int = 0  # results not written because the lease had moved on
    in_flight: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def retry_delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempt + 1`: 2, 4, 8 … capped at 5 minutes, ±25 % jitter."""
    base = min(300.0, 2.0**attempt)
    return base * (0.75 + 0.5 * (rng or random).random())


def machine() -> str:
    """Where this process's pid means something: the hostname and, on Linux, the pid
    namespace (containers on one host may share a hostname, never a pid namespace)."""
    host = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return host
    return f"{host}/{namespace.removeprefix('pid:[').removesuffix(']')}"


def default_owner() -> str:
    return f"{machine()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_gone(owner: str) -> bool:
    """Whether `owner` (a `default_owner`) was a process of this machine (and pid namespace)
    that no longer exists. Unknown owners, other machines and live processes (even another
    user's) are not gone: their leases run out on their own."""
    where, _, rest = owner.partition(":")
    pid, _, _ = rest.partition(":")
    if where != machine() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class Worker:
    def __init__(
        self,
        store: BatchStore,
        service: ReviewService,
        config: WorkerConfig,
        *,
        owner: str | None = None,
        on_change: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.config = config
        self.owner = owner or default_owner()
        self.stats = WorkerStats()
        self._on_change = on_change
        self._flight: dict[int, ClaimedItem] = {}
        self._shared: dict[tuple[str, str], asyncio.Future[tuple[str, str]]] = {}
        # Reviews done, kept in `_shared` for copies claimed before they were stored: the
        # number of claims started when each was stored, the key and its future.
        self._stored: list[tuple[int, tuple[str, str], asyncio.Future[tuple[str, str]]]] = []
        self._claims = 0  # claims started
        self._touched: set[str] = set()
        self._settled_at = 0.0
        self._purged_at = -PURGE_EVERY_S

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        until_idle: bool = False,
        inputs_done: Callable[[], bool] = lambda: True,
    ) -> None:
        """Work until `stop` is set, or (`until_idle`) until no item in scope is left open
        and `inputs_done()` says no more will be added. On the way out, items still in flight
        are cancelled and handed back (their attempt does not count)."""
        presence = process_presence(
            self.store,
            self.service,
            self.owner,
            every_s=self.config.presence_s,
            at_least=self.config.workers_at_least,
        )
        async with presence:
            await self._work(stop or asyncio.Event(), until_idle, inputs_done)

    async def _work(
        self, stop: asyncio.Event, until_idle: bool, inputs_done: Callable[[], bool]
    ) -> None:
        await self._end_dead_leases()
        tasks: set[asyncio.Task[None]] = set()
        renewer = asyncio.create_task(self._renew_leases())
        try:
            # Claim in small groups rather than one slot at a time: each claim is a write
            # transaction of several statements, and refilling slots one by one made claiming
            # a large share of a busy worker's CPU. Waiting for a few slots to free costs little
            # idle time next to a model call's latency.
            group = max(1, self.config.concurrency // 8)
            while not stop.is_set():
                free = self._slots() - len(tasks)
                claimed: list[ClaimedItem] = []
                if free >= group or (free > 0 and not tasks):
                    self._claims += 1
                    claimed = await self.store.claim(
                        self.owner,
                        limit=free,
                        lease_s=self.config.lease_s,
                        max_attempts=self.config.max_attempts,
                        batch_id=self.config.batch_id,
                        # A lease of ours that ran out during a stall of this loop is not
                        # claimed again beside the review still in flight; renewal resumes it.
                        exclude=tuple(self._flight),
                    )
                for item in claimed:
                    self._flight[item.id] = item
                    task = asyncio.create_task(self._run_item(item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                self._forget_stored()
                if (
                    len(claimed) >= free
                    and time.monotonic() - self._settled_at >= self.config.poll_s
                ):
                    # Busy with a long queue: still finish the batches whose last item is done
                    # (and send their webhooks) now, not when the whole queue has drained.
                    await self._settle()
                if len(claimed) < free:
                    # The queue is draining: settle the batches this worker touched.
                    await self._settle()
                    if (
                        until_idle
                        and not tasks
                        and inputs_done()
                        and not await self.store.open_items(self.config.batch_id)
                    ):
                        break
                    await self._wait(stop, tasks)
                elif not claimed:
                    await self._wait(stop, tasks)
        finally:
            renewer.cancel()
            pending = [self._flight[i] for i in list(self._flight)]
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.store.release(pending)
                await self._settle()
            except CoachError as exc:  # the database is gone: the leases will expire instead
                log.warning("release_failed", error=str(exc))
            await asyncio.gather(renewer, return_exceptions=True)

    def _slots(self) -> int:
        """Items in flight at most: the concurrency, but no more LLM reviews than the rate
        budget serves within half the review deadline. Waiting for the budget counts against
        the deadline, so with a small budget (a low-tier key, many workers sharing one) a full
        concurrency would only make items time out in the queue and be retried."""
        pace = self.service.llm_pace_rpm()
        if pace is None:
            return self.config.concurrency
        served = int(pace / 60 * self.service.settings.llm_deadline_s * BUDGET_WAIT_SHARE)
        return max(1, min(self.config.concurrency, served))

    async def _end_dead_leases(self) -> None:
        """A worker of this machine that was killed (a `coach batch` SIGKILLed, say) left
        leases that would keep its items for up to a whole lease: end them at once, so a
        re-run resumes without waiting."""
        try:
            owners = await self.store.lease_owners(self.config.batch_id)
            dead = {o for o in owners if o != self.owner and owner_gone(o)}
            if dead:
                ended = await self.store.end_leases_of(dead)
                log.info("dead_worker_leases_ended", workers=len(dead), items=ended)
        except CoachError as exc:  # the leases will run out instead
            log.warning("dead_lease_check_failed", error=str(exc))

    async def _wait(self, stop: asyncio.Event, tasks: set[asyncio.Task[None]]) -> None:
        """Sleep until a slot frees, `stop` is set, or the poll interval passes."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        waiters += list(tasks)
        done, _ = await asyncio.wait(
            waiters, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiters[0] not in done:
            waiters[0].cancel()

    async def _settle(self) -> None:
        self._settled_at = time.monotonic()
        touched, self._touched = self._touched, set()
        for batch_id in touched:
            await self.store.maybe_finish(batch_id)
        await self._purge()

    async def _purge(self) -> None:
        """Delete the batches past their retention, at most once per `PURGE_EVERY_S`: drafts
        and results are kept only as long as the configuration says."""
        retention = self.config.retention_s
        if not retention or time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        try:
            while purged := await self.store.purge_finished(
                older_than_s=retention, keep=self.config.batch_id
            ):
                log.info("batches_purged", batches=len(purged))
        except CoachError as exc:  # try again at the next round
            log.warning("purge_failed", error=str(exc))

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            items = list(self._flight.values())
            try:
                await self.store.extend_leases(items, lease_s=self.config.lease_s)
            except CoachError as exc:
                log.warning("lease_renewal_failed", error=str(exc), items=len(items))

    # -- one item --------------------------------------------------------------------------

    async def _run_item(self, item: ClaimedItem) -> None:
        self.stats.in_flight += 1
        try:
            await self._process(item)
        except asyncio.CancelledError:
            raise
        except CoachError as exc:  # the store failed: leave the lease to expire
            log.error("item_store_error", item=item.id, error=str(exc))
        finally:
            self.stats.in_flight -= 1
            self._flight.pop(item.id, None)
            self._touched.add(item.batch_id)
            if self._on_change is not None:
                self._on_change(self.stats)

    async def _process(self, item: ClaimedItem) -> None:
        if item.request is None:
            await self._fail(item, item.error or "input: unreadable item", final=True)
            return
        try:
            request = ReviewRequest.model_validate_json(item.request)
        except ValidationError as exc:
            await self._fail(item, f"input: {first_validation_error(exc)}", final=True)
            return
        key = (item.batch_id, item.draft_hash)
        if (shared := self._shared.get(key)) is not None:
            try:
                origin, review_json = await asyncio.shield(shared)
            except Exception:
                pass  # the first one failed: review this one on its own below
            else:
                await self._complete(item, review_json, duplicate_of=origin)
                return
        # Registered before the first await, so an identical item claimed meanwhile waits for
        # this one instead of reviewing the same draft again.
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._shared[key] = future
        try:
            found = item.reuse
            if found is not None:
                future.set_result(found)
                await self._complete(item, found[1], duplicate_of=found[0])
                return
            review = await self._review(item, request)
            if review is None:
                future.set_exception(_Unshared())
                return
            review_json = review.model_dump_json()
            future.set_result((item.key, review_json))
            await self._complete(item, review_json, duplicate_of=None)
        finally:
            if not future.done():
                future.set_exception(_Unshared())
            if future.exception() is None and self._shared.get(key) is future:
                # A claim that read the store before this review was stored may have taken a
                # copy of it (its `reuse` empty) whose task starts only now: it must still find
                # this review here, or it reviews the same draft again.
                self._stored.append((self._claims, key, future))
            elif self._shared.get(key) is future:
                del self._shared[key]

    def _forget_stored(self) -> None:
        """Drop the stored reviews no copy can still miss: every claim started after one was
        stored found it in the store, and the copies of the claims before have had their
        first step (they look in `_shared` before anything else) by the time a second claim
        after it has returned."""
        keep = []
        for claims, key, future in self._stored:
            if claims < self._claims - 1:
                if self._shared.get(key) is future:
                    del self._shared[key]
            else:
                keep.append((claims, key, future))
        self._stored = keep

    async def _review(self, item: ClaimedItem, request: ReviewRequest) -> Review | None:
        try:
            return await self.service.review(
                request, engine=item.engine, rewrite=item.rewrite, strict=True
            )
        except LLMError as exc:
            reason = f"{exc.code}: {exc}"
            final = exc.code not in RETRYABLE_CODES or item.attempts >= self.config.max_attempts
            await self._fail(item, reason, final=final)
        except CoachError as exc:  # e.g. the LLM engine is not configured on this worker
            await self._fail(item, f"config: {exc}", final=True)
        except Exception as exc:  # a bug: record it, never lose the item
            log.error("item_crashed", item=item.id, error=type(exc).__name__)
            final = item.attempts >= self.config.max_attempts
            await self._fail(item, f"internal_error: {type(exc).__name__}", final=final)
        return None

    async def _complete(
        self, item: ClaimedItem, review_json: str, *, duplicate_of: str | None
    ) -> None:
        if await self.store.complete_item(item, review_json, duplicate_of=duplicate_of):
            self.stats.done += 1
            if duplicate_of is not None:
                self.stats.reused += 1
        else:
            self.stats.lost += 1

    async def _fail(self, item: ClaimedItem, reason: str, *, final: bool) -> None:
        retry_at = None
        if not final:
            retry_at = datetime.now(UTC) + timedelta(seconds=retry_delay(item.attempts))
        if not await self.store.fail_item(item, reason, retry_at=retry_at):
            self.stats.lost += 1
            return
        code = reason.split(":", 1)[0]
        self.stats.failures[code] = self.stats.failures.get(code, 0) + 1
        if final:
            self.stats.failed += 1
        else:
            self.stats.retried += 1
        log.info("item_failed", item=item.id, batch=item.batch_id, code=code, final=final)


class _Unshared(Exception):
    """The review an identical in-flight item waited for did not happen."""
