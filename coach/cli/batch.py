"""`coach batch` (review a library of templates into one output file) and `coach worker`
(review the store's batch items, as a separate process, any number of them).

Exit codes of `coach batch`: 0 every item reviewed; 1 `--fail-on` reached; 2 a bad command;
3 some items could not be reviewed (their reasons are in the output; run again to retry them);
130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from coach.models import Kind, Language, Severity
from coach.settings import Settings

if TYPE_CHECKING:
    # Imported when used: the batch machinery (store, engines) is not needed to parse options.
    from coach.batch.run import BatchOptions
    from coach.batch.run import Progress as BatchProgress
    from coach.service import ReviewService

__all__ = ["batch", "worker"]

EXIT_FAIL_ON = 1
EXIT_ITEMS_FAILED = 3
EXIT_INTERRUPTED = 130
#: How often a `coach batch` helper checks that the command that started it is still there.
PARENT_POLL_S = 1.0


def _settings(rpm: int | None, tpm: int | None, concurrency: int | None) -> Settings:
    settings = Settings.from_env(os.environ)
    update: dict[str, object] = {}
    if rpm is not None:
        update["llm_rpm"] = rpm
    if tpm is not None:
        update["llm_tpm"] = tpm
    if concurrency is not None:
        update["batch_concurrency"] = concurrency
    # Every item in flight needs a connection: a smaller pool would quietly cap concurrency.
    wanted = concurrency or settings.batch_concurrency
    if wanted > settings.llm_max_connections:
        update["llm_max_connections"] = wanted
    return settings.model_copy(update=update) if update else settings


def _share_out(settings: Settings, workers: int) -> tuple[Settings, dict[str, str]]:
    """Each of `workers` processes gets its share of the concurrency, and the helpers are
    pointed at this store with the same budgets: every worker counts the others in the store
    and paces its calls at its share of them (`coach.batch.presence`)."""
    if workers == 1:
        return settings, {}
    shared = settings.model_copy(
        update={"batch_concurrency": max(1, -(-settings.batch_concurrency // workers))}
    )
    env = {
        "COACH_DATABASE_URL": shared.resolved_database_url,
        "COACH_BATCH_CONCURRENCY": str(shared.batch_concurrency),
        "COACH_LLM_MAX_CONNECTIONS": str(shared.llm_max_connections),
        "COACH_LOG_LEVEL": "WARNING",
    }
    if shared.llm_rpm is not None:
        env["COACH_LLM_RPM"] = str(shared.llm_rpm)
    if shared.llm_tpm is not None:
        env["COACH_LLM_TPM"] = str(shared.llm_tpm)
    return shared, env


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .jsonl, .csv or .md.",
)
@click.option(
    "--engine", type=click.Choice(["rules", "llm", "auto"]), default="rules", show_default=True
)
@click.option("--column", help="The text column of a CSV input.")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in Kind]),
    default=Kind.template.value,
    show_default=True,
    help="Kind of the drafts (JSONL items may set their own).",
)
@click.option("--language", type=click.Choice([lang.value for lang in Language]))
@click.option("--rulebook", type=click.Path(dir_okay=False), help="A rulebook file.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    help="Items reviewed at a time (COACH_BATCH_CONCURRENCY; default 8).",
)
@click.option("--rpm", type=click.IntRange(min=1), help="LLM requests per minute (COACH_LLM_RPM).")
@click.option("--tpm", type=click.IntRange(min=1), help="LLM tokens per minute (COACH_LLM_TPM).")
@click.option(
    "--fail-on",
    type=click.Choice([s.value for s in Severity]),
    help="Exit 1 when an item fails a rule of this severity or worse.",
)
@click.option("--no-rewrite", is_flag=True, help="Skip the rewrites.")
@click.option(
    "--provider-batch",
    is_flag=True,
    help="Send the LLM reviews through the provider's Batch API (OpenAI; half price, hours).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes reviewing the batch (to use more cores); --concurrency, --rpm and --tpm "
    "are shared out among them.",
)
@click.option("--worst", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def batch(
    inputs: tuple[Path, ...],
    out: Path,
    engine: str,
    column: str | None,
    kind: str,
    language: str | None,
    rulebook: str | None,
    concurrency: int | None,
    rpm: int | None,
    tpm: int | None,
    fail_on: str | None,
    no_rewrite: bool,
    provider_batch: bool,
    workers: int,
    worst: int,
    quiet: bool,
) -> None:
    """Review every draft in INPUT... (folders of .txt/.md/.html/.eml, a CSV with --column,
    or JSONL review inputs) into --out. Re-run the same command to resume."""
    from coach.batch.run import BatchOptions
    from coach.rulebook import load_rulebook
    from coach.service import ReviewService

    settings = _settings(rpm, tpm, concurrency)
    settings, helper_env = _share_out(settings, workers)
    options = BatchOptions(
        inputs=list(inputs),
        out=out,
        engine=engine,
        rewrite=not no_rewrite,
        kind=Kind(kind),
        language=Language(language) if language else None,
        column=column,
        concurrency=settings.batch_concurrency,
        lease_s=settings.batch_lease_s,
        max_attempts=settings.batch_max_attempts,
        retention_s=settings.batch_retention_s,
        fail_on=Severity(fail_on) if fail_on else None,
        worst=worst,
        helpers=workers - 1,
        helper_env=helper_env,
    )
    if out.suffix.lower() not in {".jsonl", ".csv", ".md"}:
        raise click.UsageError("--out must end in .jsonl, .csv or .md")
    service = ReviewService(load_rulebook(rulebook), settings)
    if provider_batch and service.resolve(engine) != "llm":
        raise click.UsageError("--provider-batch needs the LLM engine (--engine llm)")
    console = Console(stderr=True, highlight=False)
    code = asyncio.run(_batch(options, service, settings, console, quiet, provider_batch))
    sys.exit(code)


async def _batch(
    options: BatchOptions,
    service: ReviewService,
    settings: Settings,
    console: Console,
    quiet: bool,
    provider_batch: bool,
) -> int:
    from coach.batch.run import BatchOutcome, run_batch
    from coach.batch.summary import render_summary
    from coach.store import open_store

    store = await open_store(settings)
    display = None if quiet else _ProgressDisplay(console)
    try:
        outcome: BatchOutcome
        if provider_batch:
            from coach.batch.provider_run import run_provider_batch

            outcome = await run_provider_batch(
                options,
                store=store,
                service=service,
                settings=settings,
                on_progress=display.update if display else None,
            )
        else:
            outcome = await run_batch(
                options,
                store=store,
                service=service,
                on_progress=display.update if display else None,
            )
    finally:
        if display is not None:
            display.stop()
        await service.aclose()
        await store.close()
    if outcome.interrupted:
        console.print(
            "coach: interrupted; nothing was lost — run the same command again to resume",
            style="yellow",
        )
        return EXIT_INTERRUPTED
    if not quiet:
        render_summary(outcome.summary, console)
        console.print(f"wrote {options.out}")
    if outcome.reached_fail_on:
        return EXIT_FAIL_ON
    if outcome.summary.failed:
        console.print(
            f"coach: {outcome.summary.failed} item(s) could not be reviewed; "
            "run the same command again to retry them",
            style="yellow",
        )
        return EXIT_ITEMS_FAILED
    return 0


class _ProgressDisplay:
    """A rich progress bar: items finished of items read, rate, ETA and failures."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]reviewing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7} items/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failures]}"),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task("batch", total=None, rate="-", failures="")
        # Started at the first update: a bad command (found while opening the batch) then
        # prints its one `coach: error:` line and no empty progress bar before it.
        self.started = False

    def update(self, state: BatchProgress) -> None:
        elapsed = max(1e-6, time.monotonic() - state.started)
        failures = f"[red]{state.failed} failed" if state.failed else ""
        if state.reused:
            failures += f" [dim]{state.reused} identical"
        if not self.started:
            self.started = True
            self.progress.start()
        self.progress.update(
            self.task,
            total=state.total if state.total is not None else max(state.read, 1),
            completed=state.finished,
            rate=f"{state.finished / elapsed:.1f}",
            failures=failures,
        )

    def stop(self) -> None:
        if self.started:
            self.progress.stop()


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    help="Items reviewed at a time (COACH_BATCH_CONCURRENCY; default 8).",
)
@click.option("--batch", "batch_id", help="Only this batch.")
@click.option("--once", is_flag=True, help="Exit when no item is left instead of waiting.")
@click.option("--rpm", type=click.IntRange(min=1), help="LLM requests per minute (COACH_LLM_RPM).")
@click.option("--tpm", type=click.IntRange(min=1), help="LLM tokens per minute (COACH_LLM_TPM).")
# `coach batch --workers N` starts its helpers with this: they stop when it is gone, even if it
# was killed with SIGKILL and could not stop them itself.
@click.option("--parent", type=int, hidden=True)
# ...and the number of workers it started together, so each paces at its share from the start.
@click.option("--peers", type=click.IntRange(min=1), default=1, hidden=True)
def worker(
    concurrency: int | None,
    batch_id: str | None,
    once: bool,
    rpm: int | None,
    tpm: int | None,
    parent: int | None,
    peers: int,
) -> None:
    """Review batch items from the store (COACH_DATABASE_URL) until SIGTERM or Ctrl-C, and
    deliver webhook events. Run as many as you like, on any machine that reaches the
    database."""
    settings = _settings(rpm, tpm, concurrency)
    asyncio.run(
        _worker(settings, concurrency or settings.batch_concurrency, batch_id, once, parent, peers)
    )


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once this process's parent is no longer `parent` (it exited or was killed:
    the orphan is re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(PARENT_POLL_S)


async def _worker(
    settings: Settings,
    concurrency: int,
    batch_id: str | None,
    once: bool,
    parent: int | None,
    peers: int = 1,
) -> None:
    from coach.batch.background import BackgroundWorkers
    from coach.logs import configure_logging
    from coach.service import ReviewService
    from coach.store import open_store

    configure_logging(settings.log_level)
    store = await open_store(settings)
    service = ReviewService(settings=settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    workers = BackgroundWorkers(
        store,
        service,
        settings,
        concurrency=concurrency,
        batch_id=batch_id,
        workers_at_least=peers,
    )
    watch = asyncio.create_task(_orphaned(parent, stop)) if parent is not None else None
    try:
        await workers.run(stop=stop, until_idle=once)
    finally:
        if watch is not None:
            watch.cancel()
        await service.aclose()
        await store.close()
