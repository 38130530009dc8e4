"""The `coach` command. Every error is one line on stderr and a non-zero exit:
2 for bad input or usage, 1 when a review reaches `--fail-on`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console

from coach.cli.batch import batch, worker
from coach.cli.eval_compare import compare
from coach.cli.keys import keys
from coach.cli.serve import serve
from coach.errors import CoachError, InputError, first_validation_error
from coach.logs import configure_logging
from coach.models import (
    MAX_TEXT_CHARS,
    Context,
    Kind,
    Language,
    Relationship,
    ReviewRequest,
    Severity,
)
from coach.settings import Settings

__all__ = ["cli", "main"]

EXIT_FAIL_ON = 1
EXIT_USAGE = 2


def _die(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"coach: error: {message}", err=True)
    sys.exit(code)


def read_draft(source: str, stdin: IO[bytes] | None = None) -> str:
    """The draft from a file or stdin ("-"), as text; InputError on anything unusable."""
    if source == "-":
        data = (stdin or sys.stdin.buffer).read()
        where = "stdin"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{source}: is a directory") from None
        except OSError as exc:
            raise InputError(f"{source}: {exc.strerror}") from None
        where = source
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not valid UTF-8 (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise InputError(f"{where}: the draft is empty or whitespace only")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"{where}: the draft has {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return text


def _load_context(path: str | None, relationship: str | None) -> Context | None:
    data: dict[str, Any] = {}
    if path:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"context file {path}: cannot read ({exc.__class__.__name__})"
            ) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"context file {path}: invalid JSON at line {exc.lineno}") from None
        if not isinstance(data, dict):
            raise InputError(f"context file {path}: expected a JSON object")
    if relationship:
        data["relationship"] = relationship
    if not data:
        return None
    try:
        return Context.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"context: {first_validation_error(exc)}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coach")
def cli() -> None:
    """coach: reviews networking outreach drafts against a rulebook of giving first."""
    configure_logging("WARNING")


@cli.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--kind", type=click.Choice([k.value for k in Kind]), default="message", show_default=True
)
@click.option("--relationship", type=click.Choice([r.value for r in Relationship]))
@click.option(
    "--language", type=click.Choice([lang.value for lang in Language]), help="Detected when absent."
)
@click.option(
    "--context",
    "context_file",
    type=click.Path(dir_okay=False),
    help="JSON file with the review context (recipient, thread, notes).",
)
@click.option("--rulebook", type=click.Path(dir_okay=False), help="A rulebook file (see README).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--fail-on",
    type=click.Choice([s.value for s in Severity]),
    help="Exit 1 when a finding reaches this severity.",
)
@click.option("--no-rewrite", is_flag=True, help="Skip the rewrite.")
@click.option(
    "--engine",
    type=click.Choice(["rules", "llm", "auto"]),
    default="rules",
    show_default=True,
    help="rules: offline. llm: the configured model. auto: the model when one is configured.",
)
def review(
    source: str,
    kind: str,
    relationship: str | None,
    language: str | None,
    context_file: str | None,
    rulebook: str | None,
    fmt: str,
    fail_on: str | None,
    no_rewrite: bool,
    engine: str,
) -> None:
    """Review one draft from FILE, or from stdin when FILE is '-' or absent."""
    from coach.rulebook import load_rulebook
    from coach.service import ReviewService

    if source == "-" and sys.stdin.isatty():
        raise click.UsageError("give a FILE, or pipe the draft into stdin")
    text = read_draft(source)
    book = load_rulebook(rulebook)
    request = ReviewRequest(
        text=text,
        kind=Kind(kind),
        language=Language(language) if language else None,
        context=_load_context(context_file, relationship),
    )
    service = ReviewService(book, Settings.from_env(os.environ))
    try:
        result = service.review_sync(request, engine=engine, rewrite=not no_rewrite)
    finally:
        service.close()
    if fmt == "json":
        click.echo(result.model_dump_json(indent=2))
    else:
        render_console = Console(highlight=False, soft_wrap=False)
        from coach.cli.render import render_review

        render_review(render_console, text, result)
    if fail_on:
        threshold = Severity(fail_on).rank
        failing = [
            r for r in result.rules if r.verdict.value == "fail" and r.severity.rank >= threshold
        ]
        if failing:
            sys.exit(EXIT_FAIL_ON)


@cli.group(name="eval")
def eval_group() -> None:
    """Measure an engine against labelled datasets."""


EXIT_HARNESS = 1
EXIT_THRESHOLD = 3


@eval_group.command("run")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="JSONL dataset; repeat for several.",
)
@click.option("--engine", type=click.Choice(["rules", "llm"]), default="rules", show_default=True)
@click.option("--rulebook", type=click.Path(dir_okay=False))
@click.option("--prompt", "prompt_version", help="LLM prompt version (default: the setting).")
@click.option("--model", help="LLM model (default: COACH_LLM_MODEL).")
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option(
    "--rpm",
    type=click.IntRange(1),
    help="Requests per minute budget for the LLM calls (default: COACH_LLM_RPM).",
)
@click.option(
    "--tpm",
    type=click.IntRange(1),
    help="Tokens per minute budget for the LLM calls (default: COACH_LLM_TPM).",
)
@click.option(
    "--max-cost",
    type=click.FloatRange(0),
    help="Budget in USD: stop before the estimated spend would exceed it (rows left: 'budget').",
)
@click.option("--rewrite", is_flag=True, help="Ask for rewrites too (recorded in rows.jsonl).")
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Re-run only the rows of --out that errored (or are missing).",
)
@click.option(
    "--replay",
    is_flag=True,
    help="Answer only from recorded model responses; a miss exits 1 (never calls the network).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Recorded model responses (default: COACH_DATA_DIR/eval-cache).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Run directory: manifest.json, rows.jsonl, report.json, report.md, predictions.jsonl.",
)
@click.option(
    "--thresholds",
    type=click.Path(dir_okay=False),
    help="Gate file (e.g. evals/thresholds.yaml): exit 3 when a minimum is missed.",
)
@click.option(
    "--judge",
    "use_judge",
    is_flag=True,
    help="LLM judge (prompts/judge/): its kappa against the labels on the original drafts, "
    "then the share of rewrites passing each rule (needs the LLM configured).",
)
def eval_run(
    datasets: tuple[str, ...],
    engine: str,
    rulebook: str | None,
    prompt_version: str | None,
    model: str | None,
    repeat: int,
    concurrency: int,
    rpm: int | None,
    tpm: int | None,
    max_cost: float | None,
    rewrite: bool,
    retry_errors: bool,
    replay: bool,
    cache_dir: str | None,
    out: str,
    thresholds: str | None,
    use_judge: bool,
) -> None:
    """Review every case (× --repeat) and report per-rule precision, recall, F1 and accuracy.

    Exit codes: 0 pass; 1 harness error (a --replay miss, a bad thresholds file, a crash);
    2 bad input or usage; 3 a threshold of --thresholds missed.
    """
    import asyncio
    from datetime import UTC, datetime

    from coach.engines.llm.cache import MemoryCache
    from coach.evals.cache import RecordingCaller, Recordings
    from coach.evals.dataset import load_cases
    from coach.evals.report import print_table, progress, write_markdown
    from coach.evals.runner import (
        ReplayMissError,
        build_result,
        dataset_hashes,
        git_commit,
        read_rows,
        run_rows,
        write_manifest,
        write_report,
        write_rows,
    )
    from coach.evals.thresholds import check, load_thresholds
    from coach.rulebook import load_rulebook
    from coach.service import ReviewService

    book = load_rulebook(rulebook)
    cases = load_cases([Path(d) for d in datasets], known_rules=set(book.ids))
    out_dir = Path(out)
    gate = None
    if thresholds:
        try:
            gate = load_thresholds(Path(thresholds), engine)
        except CoachError as exc:
            _die(str(exc), EXIT_HARNESS)
        if gate is None:
            click.echo(f"coach: note: {thresholds} has no {engine} section; not gated", err=True)

    kept: dict[tuple[str, int], Any] = {}
    if retry_errors:
        if not (out_dir / "rows.jsonl").is_file():
            raise InputError(f"--retry-errors: {out_dir / 'rows.jsonl'} does not exist")
        kept = {(r.case_id, r.repeat): r for r in read_rows(out_dir) if r.error is None}
    todo = [(c, k) for c in cases for k in range(repeat) if (c.id, k) not in kept]

    settings = Settings.from_env(os.environ)
    updates: dict[str, Any] = {}
    if model:
        updates["llm_model"] = model
    if prompt_version:
        updates["llm_prompt_version"] = prompt_version
    if rpm is not None:
        updates["llm_rpm"] = rpm
    if tpm is not None:
        updates["llm_tpm"] = tpm
    settings = settings.model_copy(update=updates)
    service = ReviewService(book, settings)
    reviewer: Any = service.rules
    model_name: str | None = None
    prompt_info: dict[str, str] | None = None
    judge: Any = None
    caller: Any = None
    client: Any = None
    scheduler: Any = None
    if engine == "llm" or use_judge:
        from coach.engines.llm.call import ModelCaller
        from coach.engines.llm.client import make_client
        from coach.scheduler import Scheduler

        flag = "--engine llm" if engine == "llm" else "--judge"
        if not settings.llm_model:
            raise InputError(f"{flag} needs a model: --model or COACH_LLM_MODEL")
        if not replay:
            service.resolve("llm")  # a clear error when nothing can be called
        # One scheduler for the engine and the judge: they share the provider's budget.
        scheduler = Scheduler.from_settings(settings)
        client = None if replay else make_client(settings, scheduler=scheduler)
        inner = (
            None if client is None else ModelCaller(client, max_attempts=settings.llm_max_attempts)
        )
        directory = Path(cache_dir) if cache_dir else settings.data_dir / "eval-cache"
        caller = RecordingCaller(Recordings(directory), inner, replay=replay)
    if use_judge:
        from coach.engines.llm.judge import Judge

        judge = Judge(settings, book, caller=caller)
    if engine == "llm":
        from coach.engines.llm.engine import LLMEngine

        # A fallback per case would flood stderr under the progress bar: rows.jsonl records
        # each degraded review as an error row with its code instead.
        configure_logging("ERROR")
        # The engine's own review cache is off: repeats must reach the (recording) caller.
        reviewer = LLMEngine(
            book,
            settings,
            client=client,
            cache=MemoryCache(0, 0),
            caller=caller,
            scheduler=scheduler,
        )
        model_name = reviewer.model
        prompt_info = {"version": reviewer.prompt.version, "digest": reviewer.prompt.digest}

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()

    judged: Any = None

    def merged(fresh: list[Any]) -> list[Any]:
        new = {(r.case_id, r.repeat): r for r in fresh}
        return [
            new.get((c.id, k)) or kept[(c.id, k)]
            for c in cases
            for k in range(repeat)
            if (c.id, k) in new or (c.id, k) in kept
        ]

    async def run() -> list[Any]:
        nonlocal judged
        try:
            with progress(len(todo), f"{engine} eval") as bar:
                fresh = await run_rows(
                    todo,
                    reviewer,
                    engine=engine,
                    concurrency=concurrency,
                    max_cost=max_cost,
                    rewrite=rewrite,
                    replay=replay,
                    on_row=lambda _row: bar.advance(bar.task_ids[0]),
                )
            if judge is not None:
                from coach.evals.judging import JudgeRun

                by_id = {c.id: c for c in cases}
                rewrites = [
                    (by_id[r.case_id], r.repeat, r.rewrite)
                    for r in merged(fresh)
                    if r.error is None and r.rewrite is not None
                ]
                judged = await JudgeRun(judge, concurrency=concurrency, replay=replay).run(
                    cases, rewrites
                )
            return fresh
        finally:
            closer = getattr(reviewer, "aclose", None)
            if closer is not None:
                await closer()
            elif client is not None:
                await client.close()
            configure_logging("WARNING")  # as the command group set it

    from coach.evals.judging import JudgeReplayMiss

    try:
        fresh = asyncio.run(run())
    except (ReplayMissError, JudgeReplayMiss) as exc:
        _die(str(exc), EXIT_HARNESS)
    rows = merged(fresh)
    result = build_result(
        rows,
        engine=engine,
        rulebook_version=book.version,
        datasets=list(datasets),
        seconds=time.perf_counter() - started,
    )
    if judge is not None and judged is not None:
        from coach.evals.judging import judge_summary

        result.judge = judge_summary(
            judged,
            model=judge.model,
            prompt={"version": judge.prompt.version, "digest": judge.prompt.digest},
            has_rewrites=rewrite,
        )
    write_rows(out_dir, rows)
    write_manifest(
        out_dir,
        {
            "git_commit": git_commit(),
            "datasets": dataset_hashes(datasets),
            "engine": engine,
            "model": model_name,
            "prompt": prompt_info,
            "rulebook_version": book.version,
            "parameters": {
                "repeat": repeat,
                "concurrency": concurrency,
                "max_cost": max_cost,
                "rewrite": rewrite,
                "replay": replay,
                "judge": use_judge,
                "retried_rows": len(todo) if retry_errors else None,
                **(
                    {
                        "temperature": settings.llm_temperature,
                        "max_tokens": settings.llm_max_tokens,
                        "response_format": settings.llm_response_format,
                        "rpm": settings.llm_rpm,
                        "tpm": settings.llm_tpm,
                    }
                    if engine == "llm" or use_judge
                    else {}
                ),
            },
            "started": started_at,
            "ended": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    report = write_report(result, out_dir)
    write_markdown(result, out_dir / "report.md")
    print_table(Console(highlight=False), result)
    click.echo(f"report: {report}")
    if gate is not None:
        misses = check(result, gate)
        for miss in misses:
            click.echo(f"coach: threshold missed: {miss}", err=True)
        if misses:
            sys.exit(EXIT_THRESHOLD)
        click.echo(f"thresholds: pass ({thresholds})")


@cli.command("rules")
@click.option("--rulebook", type=click.Path(dir_okay=False))
@click.option(
    "--language",
    type=click.Choice([lang.value for lang in Language]),
    default="en",
    show_default=True,
)
def rules_cmd(rulebook: str | None, language: str) -> None:
    """List the rules in force."""
    from coach.rulebook import load_rulebook

    book = load_rulebook(rulebook)
    lang = Language(language)
    click.echo(f"rulebook {book.version}")
    for rule in book.rules:
        state = "" if rule.enabled else " (disabled)"
        title, principle = rule.title.get(lang), rule.principle.get(lang)
        click.echo(f"- {rule.id} [{rule.severity.value}]{state}: {title} — {principle}")


cli.add_command(serve)
cli.add_command(batch)
cli.add_command(worker)
cli.add_command(keys)
eval_group.add_command(compare)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="coach", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _die(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        _die("aborted", 130)
    except CoachError as exc:
        _die(str(exc))
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
