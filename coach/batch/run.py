"""`coach batch`: read the inputs into the store, review every item, write the output.

    inputs ──stream──▶ store (chunks of 500) ──claim──▶ workers ──▶ store ──stream──▶ output

Reading and reviewing overlap: workers start on the first chunk while the rest is read. The
state lives in the store, so running the same command again resumes: finished items are kept
(an item whose input changed is reviewed again), failed items are retried, and the output file
is written at the end from the store, in input order, each item exactly once. Memory stays flat:
at most a chunk of inputs, the items in flight and a page of results are held at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coach.batch.inputs import iter_inputs
from coach.batch.jobs import cli_batch_id, new_item, output_row
from coach.batch.outputs import OutputWriter, open_writer
from coach.batch.summary import Summary, SummaryBuilder, worst_severity
from coach.batch.worker import Worker, WorkerConfig, WorkerStats
from coach.logs import get_logger
from coach.models import Kind, Language, Severity
from coach.service import ReviewService
from coach.store.batches import BatchStore, NewItem

__all__ = ["BatchOptions", "BatchOutcome", "Progress", "run_batch"]

log = get_logger("coach.batch")

#: Items written to the store per transaction while reading the inputs.
CHUNK = 500
#: The tenant `coach batch` files its batches under (the API's tenants never see them).
CLI_TENANT = "cli"


@dataclass(frozen=True)
class BatchOptions:
    inputs: Sequence[Path]
    out: Path
    engine: str = "rules"
    rewrite: bool = True
    kind: Kind = Kind.template
    language: Language | None = None
    column: str | None = None
    concurrency: int = 8
    lease_s: float = 120.0
    retention_s: float | None = None  # delete other batches finished this long ago
    max_attempts: int = 5
    fail_on: Severity | None = None
    worst: int = 10
    #: Extra `coach worker --batch ID` processes beside this one (to use more cores), and
    #: the environment they run with (the store's URL, the budgets, their concurrency).
    helpers: int = 0
    helper_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Progress:
    """What a progress display shows; `update` is called as it changes."""

    read: int = 0
    reading_done: bool = False
    total: int | None = None
    finished: int = 0
    failed: int = 0
    reused: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: str
    summary: Summary
    interrupted: bool = False
    reached_fail_on: bool = False
    stats: WorkerStats | None = None


async def run_batch(
    options: BatchOptions,
    *,
    store: BatchStore,
    service: ReviewService,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> BatchOutcome:
    """Run (or resume) the batch the options describe. Ctrl-C (SIGINT) or SIGTERM — or
    `stop` — ends it cleanly: items in flight are handed back, no output file is written,
    and the next run picks up where this one stopped."""
    batch_id, generation, items = await open_batch(options, store=store, service=service)
    stop = stop or asyncio.Event()
    progress = Progress()
    loop = asyncio.get_running_loop()
    installed = install_signals(loop, stop) if handle_signals else []
    worker = Worker(
        store,
        service,
        WorkerConfig(
            concurrency=options.concurrency,
            lease_s=options.lease_s,
            max_attempts=options.max_attempts,
            batch_id=batch_id,
            poll_s=0.2,
            workers_at_least=1 + options.helpers,
            retention_s=options.retention_s,
        ),
    )
    reading = asyncio.create_task(read_inputs(store, batch_id, items, generation, progress, stop))
    reporter = asyncio.create_task(_report(store, batch_id, worker, progress, on_progress))
    helpers = await _start_helpers(options, batch_id)
    try:
        work = asyncio.create_task(
            worker.run(stop=stop, until_idle=True, inputs_done=lambda: progress.reading_done)
        )
        await asyncio.wait([reading, work], return_when=asyncio.FIRST_EXCEPTION)
        if reading.done() and reading.exception() is not None:
            stop.set()
            await asyncio.gather(work, return_exceptions=True)
            reading.result()  # re-raise the reading error
        await work
        await reading
    finally:
        await _stop_helpers(helpers)
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)
    if stop.is_set():
        log.info("batch_interrupted", batch=batch_id)
        return BatchOutcome(
            batch_id, SummaryBuilder(options.worst).build(), interrupted=True, stats=worker.stats
        )
    progress.total = progress.finished = progress.read
    if on_progress is not None:
        on_progress(progress)
    summary, reached = await write_output(store, batch_id, options)
    return BatchOutcome(batch_id, summary, reached_fail_on=reached, stats=worker.stats)


async def _start_helpers(options: BatchOptions, batch_id: str) -> list[asyncio.subprocess.Process]:
    """`coach worker --batch ID` processes: they claim the batch's items from the same store
    (row leases keep each item to one of them) and stop on SIGTERM, handing back what they
    hold. They run until this process stops them, so a pause in reading the inputs does not
    end them early."""
    env = {**os.environ, **options.helper_env}
    return [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coach",
            "worker",
            "--batch",
            batch_id,
            "--parent",
            str(os.getpid()),
            "--peers",
            str(1 + options.helpers),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for _ in range(options.helpers)
    ]


async def _stop_helpers(helpers: list[asyncio.subprocess.Process]) -> None:
    for process in helpers:
        if process.returncode is None:
            process.terminate()
    for process in helpers:
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def write_output(
    store: BatchStore, batch_id: str, options: BatchOptions
) -> tuple[Summary, bool]:
    """Stream every item's result from the store into the output file (atomically replaced
    at the end) and build the summary on the way; (summary, whether --fail-on was reached)."""
    builder = SummaryBuilder(options.worst)
    writer: OutputWriter = open_writer(options.out)
    reached = False
    try:
        after = -1
        while True:
            page = await store.results_page(batch_id, after_seq=after, with_requests=True)
            if not page:
                break
            for result in page:
                row = output_row(result)
                writer.write(row)
                builder.add(row)
                if options.fail_on is not None and row.review is not None:
                    worst = worst_severity(row.review)
                    if worst is not None and worst.rank >= options.fail_on.rank:
                        reached = True
            after = page[-1].seq
        summary = builder.build()
        writer.close(summary)
    except BaseException:
        writer.abort()
        raise
    return summary, reached


def batch_id_of(options: BatchOptions, *, engine: str, rulebook_version: str) -> str:
    """The batch the command names: the same inputs and review options, the same batch."""
    return cli_batch_id(
        options.inputs,
        {
            "engine": engine,
            "rewrite": options.rewrite,
            "kind": options.kind.value,
            "language": options.language.value if options.language else None,
            "column": options.column,
            "rulebook": rulebook_version,
        },
    )


async def open_batch(
    options: BatchOptions, *, store: BatchStore, service: ReviewService
) -> tuple[str, int, Iterator[NewItem]]:
    """The command's batch (created, or resumed with its failed items re-queued), its new
    generation, and its items to (re-)add. InputError for a bad command, before anything is
    stored."""
    engine = service.resolve(options.engine)
    inputs = iter_inputs(
        options.inputs, column=options.column, kind=options.kind, language=options.language
    )
    batch_id = batch_id_of(options, engine=engine, rulebook_version=service.rulebook.version)
    batch, _created = await store.create_batch(
        CLI_TENANT,
        engine=engine,
        rewrite=options.rewrite,
        source="cli",
        batch_id=batch_id,
        state="open",
    )
    await store.retry_failed(batch_id)
    items = (new_item(item, engine=engine, rewrite=options.rewrite) for item in inputs)
    return batch_id, batch.generation, items


async def read_inputs(
    store: BatchStore,
    batch_id: str,
    items: Iterator[NewItem],
    generation: int,
    progress: Progress,
    stop: asyncio.Event,
) -> None:
    """Add the items to the store in chunks, then seal the batch (sets `progress.total`)."""
    chunk: list[NewItem] = []
    seq = 0
    for item in items:
        if stop.is_set():
            return
        chunk.append(item)
        if len(chunk) >= CHUNK:
            await store.add_items(batch_id, chunk, start=seq, generation=generation)
            seq += len(chunk)
            progress.read = seq
            chunk = []
            await asyncio.sleep(0)  # let the workers run between chunks
    await store.add_items(batch_id, chunk, start=seq, generation=generation)
    progress.read = seq + len(chunk)
    record = await store.seal_batch(batch_id, generation=generation)
    progress.total = record.total
    progress.reading_done = True


async def _report(
    store: BatchStore,
    batch_id: str,
    worker: Worker,
    progress: Progress,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    if on_progress is None:
        return
    while True:
        counts = await store.batch_counts(batch_id)
        progress.finished = counts["done"] + counts["failed"] + counts["cancelled"]
        progress.failed = counts["failed"]
        progress.reused = worker.stats.reused
        on_progress(progress)
        await asyncio.sleep(0.5)


def install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    return installed
