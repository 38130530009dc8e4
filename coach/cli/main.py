"""The `coach` command. Every error is one line on stderr and a non-zero exit:
2 for bad input or usage, 1 when a review reaches `--fail-on`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console

from coach.cli.keys import keys
from coach.cli.serve import serve
from coach.errors import CoachError, InputError
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
        err = exc.errors()[0]
        raise InputError(f"context: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


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


@eval_group.command("run")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="JSONL dataset; repeat for several.",
)
@click.option("--engine", type=click.Choice(["rules"]), default="rules", show_default=True)
@click.option("--rulebook", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for report.json, report.md and predictions.jsonl.",
)
def eval_run(datasets: tuple[str, ...], engine: str, rulebook: str | None, out: str) -> None:
    """Review every case and report per-rule precision, recall, F1 and accuracy."""
    from coach.evals.dataset import load_cases
    from coach.evals.report import print_table, write_markdown
    from coach.evals.runner import run_eval, write_report
    from coach.rulebook import load_rulebook
    from coach.service import ReviewService

    book = load_rulebook(rulebook)
    cases = load_cases([Path(d) for d in datasets], known_rules=set(book.ids))
    result = run_eval(cases, ReviewService(book), engine=engine, datasets=list(datasets))
    report = write_report(result, Path(out))
    write_markdown(result, Path(out) / "report.md")
    print_table(Console(highlight=False), result)
    click.echo(f"report: {report}")


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
cli.add_command(keys)


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
