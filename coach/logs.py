"""structlog set-up. Logs carry lengths, hashes and ids, never the text of a draft."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "fingerprint", "get_logger"]


def fingerprint(text: str) -> str:
    """A short, stable id for a draft that does not reveal it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def configure_logging(level: str = "WARNING", *, json: bool = True) -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Resolve sys.stderr at each use, not once: it may be replaced (tests, daemons).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


class _QuietPrintLogger(structlog.PrintLogger):
    """A log line that cannot be written (closed stream, full disk, broken pipe) is dropped:
    logging must never break a review or its fallback."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = failure = fatal = msg


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return _QuietPrintLogger(sys.stderr)


def get_logger(name: str) -> Any:
    # A library must stay quiet until its host configures logging: by default structlog prints
    # every level to stdout, which would corrupt `coach review --format json`.
    if not structlog.is_configured():
        configure_logging()
    return structlog.get_logger(name)
