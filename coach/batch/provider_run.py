"""`coach batch --provider-batch`: the same batch in the store, reviewed through the provider's
Batch API instead of one call per item.

The provider job's state (chunk files, file ids, batch ids, what was merged) is saved in the
batch's row, so running the same command again after a crash or Ctrl-C resumes polling and
never submits twice. Results are merged into the store with `settle_item`, which only changes
an item still open: merging a chunk twice is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from coach.batch.provider import ProviderBatch, ProviderItem
from coach.batch.run import (
    BatchOptions,
    BatchOutcome,
    Progress,
    install_signals,
    open_batch,
    read_inputs,
    write_output,
)
from coach.batch.summary import SummaryBuilder
from coach.engines.llm.engine import LLMEngine
from coach.logs import get_logger
from coach.models import ReviewRequest
from coach.service import ReviewService
from coach.settings import Settings
from coach.store.batches import BatchStore

__all__ = ["StoreProviderState", "run_provider_batch"]

log = get_logger("coach.batch.provider")


class StoreProviderState:
    """`ProviderState` kept in the batch's row."""

    def __init__(self, store: BatchStore, batch_id: str) -> None:
        self.store = store
        self.batch_id = batch_id

    async def load(self) -> dict[str, Any] | None:
        return await self.store.load_provider_state(self.batch_id)

    async def save(self, state: dict[str, Any]) -> None:
        await self.store.save_provider_state(self.batch_id, state)


async def run_provider_batch(
    options: BatchOptions,
    *,
    store: BatchStore,
    service: ReviewService,
    settings: Settings,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    poll_interval_s: float = 30.0,
    handle_signals: bool = True,
) -> BatchOutcome:
    engine = service.engine("llm")
    if not isinstance(engine, LLMEngine):  # pragma: no cover - the registry's llm engine
        raise TypeError("--provider-batch needs the LLM engine")
    batch_id, generation, items = await open_batch(options, store=store, service=service)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = install_signals(loop, stop) if handle_signals else []
    progress = Progress()
    job = ProviderBatch(
        engine,
        StoreProviderState(store, batch_id),
        rewrite=options.rewrite,
        workdir=settings.data_dir / "provider-batches" / batch_id,
        poll_interval_s=poll_interval_s,
    )

    def report(counts: dict[str, int]) -> None:
        progress.total = counts.get("total", progress.total)
        progress.finished = counts.get("completed", 0) + counts.get("failed", 0)
        progress.failed = counts.get("failed", 0)
        if on_progress is not None:
            on_progress(progress)

    async def lookup(custom_id: str) -> ReviewRequest | None:
        raw = await store.item_request(batch_id, int(custom_id))
        return ReviewRequest.model_validate_json(raw) if raw else None

    async def work() -> None:
        await read_inputs(store, batch_id, items, generation, progress, stop)
        await job.submit(_open_items(store, batch_id))
        await job.wait(progress=report)
        async for result in job.results(lookup):
            await store.settle_item(
                batch_id,
                int(result.custom_id),
                result=result.review.model_dump_json() if result.review else None,
                error=result.error,
            )
        await store.maybe_finish(batch_id)

    task = asyncio.create_task(work())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("provider_batch_interrupted", batch=batch_id)
            return BatchOutcome(batch_id, SummaryBuilder(options.worst).build(), interrupted=True)
        task.result()
    finally:
        stopper.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
    summary, reached = await write_output(store, batch_id, options)
    return BatchOutcome(batch_id, summary, reached_fail_on=reached)


async def _open_items(store: BatchStore, batch_id: str) -> AsyncIterator[ProviderItem]:
    after = 0
    while True:
        page = await store.pending_requests(batch_id, after_id=after)
        if not page:
            return
        for item_id, _key, request in page:
            yield ProviderItem(str(item_id), ReviewRequest.model_validate_json(request))
        after = page[-1][0]
