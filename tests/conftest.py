"""Shared fixtures: a review service, a CLI runner and request builders."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from coach.cli.main import main
from coach.models import Context, Kind, Language, Review, ReviewRequest
from coach.service import ReviewService

REPO = Path(__file__).resolve().parent.parent
DEV_DATASET = REPO / "evals" / "datasets" / "dev.jsonl"

#: Drafts whose verdicts the tests rely on (checked in the tests that use them).
BAD_DRAFT = "Could you introduce me to your head of procurement?"
GOOD_DRAFT = (
    "Hi Dana, I enjoyed your talk on onboarding at DevDays. "
    "How are you measuring time-to-value now?"
)
PRICING_ANSWER = (
    "Thanks for asking! Our plan costs $40 a seat per month, and I can send the full pricing sheet."
)


def make_request(
    text: str,
    *,
    kind: Kind | str = Kind.message,
    language: Language | str | None = None,
    **context: Any,
) -> ReviewRequest:
    """A ReviewRequest; keyword arguments beyond kind/language become the context."""
    return ReviewRequest(
        text=text,
        kind=Kind(kind),
        language=Language(language) if language is not None else None,
        context=Context.model_validate(context) if context else None,
    )


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


class RunCli(Protocol):
    def __call__(self, argv: list[str], stdin: bytes | None = None) -> CliResult: ...


ReviewText = Callable[..., Review]


@pytest.fixture(scope="session")
def service() -> ReviewService:
    return ReviewService()


@pytest.fixture
def review_text(service: ReviewService) -> ReviewText:
    """Review a text with the default rulebook: `review_text(text, kind=..., relationship=...)`."""

    def run(text: str, **kwargs: Any) -> Review:
        return service.review_sync(make_request(text, **kwargs))

    return run


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # sys.exit("message") exits 1


class _FakeStdin(io.TextIOWrapper):
    def __init__(self, data: bytes, tty: bool) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run `coach.cli.main.main(argv)` in-process; returns the exit code, stdout and stderr.

    `stdin` is fed as bytes; without it stdin looks like a terminal (no piped input).
    """

    def run(argv: list[str], stdin: bytes | None = None) -> CliResult:
        fake = _FakeStdin(stdin if stdin is not None else b"", tty=stdin is None)
        monkeypatch.setattr(sys, "stdin", fake)
        capsys.readouterr()
        try:
            main(argv)
        except SystemExit as exc:
            code = _exit_code(exc.code)
        else:  # pragma: no cover - main always exits
            code = 0
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
