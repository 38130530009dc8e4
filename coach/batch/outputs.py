"""Streaming result writers for `coach batch`: JSONL, CSV and Markdown.

Rows go to a temporary sibling (`<name>.partial`) as they come, flushed every few rows, and
`close` moves the finished file into place with `os.replace` (atomic on one filesystem). So the
target path only ever holds a whole result with each item exactly once, and a crashed or
aborted run leaves the previous result (if any) untouched.

The review text inside these files is the user's own data written to the user's own file;
logs are what must never hold drafts, and nothing here logs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from coach.batch.summary import Summary, escape_markdown, summary_markdown, worst_severity
from coach.errors import InputError
from coach.models import Review, Verdict

__all__ = [
    "CSV_COLUMNS",
    "OutputRow",
    "OutputWriter",
    "open_writer",
    "row_json",
]

#: Rows written between two flushes: bounded loss of buffered output is irrelevant (the partial
#: file is discarded on a crash) but a reader tailing the partial file sees progress.
_FLUSH_EVERY = 64
CSV_COLUMNS = (
    "item",
    "path",
    "row",
    "id",
    "status",
    "score",
    "failed_rules",
    "worst_severity",
    "engine",
    "degraded",
    "summary",
    "rewrite",
    "error",
    "duplicate_of",
)
#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection: a
#: draft or file name like `=HYPERLINK(...)` would execute when the CSV is opened in Excel or
#: Sheets). Such cells get a leading apostrophe, which spreadsheets show as plain text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class OutputRow:
    key: str
    location: dict[str, str | int]
    status: Literal["done", "failed"]
    review: Review | None
    error: str | None = None
    attempts: int = 0
    rewrite_markup: str | None = None
    duplicate_of: str | None = None


class OutputWriter(Protocol):
    def write(self, row: OutputRow) -> None: ...
    def close(self, summary: Summary | None = None) -> None: ...
    def abort(self) -> None: ...


def open_writer(path: Path) -> OutputWriter:
    """A writer for `path`, chosen by its suffix (.jsonl, .csv or .md)."""
    writers: dict[str, type[_AtomicWriter]] = {
        ".jsonl": JsonlWriter,
        ".csv": CsvWriter,
        ".md": MarkdownWriter,
    }
    cls = writers.get(path.suffix.lower())
    if cls is None:
        raise InputError(f"{path}: unknown output format (use .jsonl, .csv or .md)")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder for the output")
    if path.is_dir():
        raise InputError(f"{path}: is a folder")
    return cls(path)


def row_json(row: OutputRow) -> dict[str, Any]:
    """The JSONL object of a row; None fields left out (item and status always present)."""
    data: dict[str, Any] = {
        "item": row.key,
        "location": row.location,
        "status": row.status,
        "attempts": row.attempts,
    }
    if row.review is not None:
        data["review"] = row.review.model_dump(mode="json")
    for name in ("error", "rewrite_markup", "duplicate_of"):
        value = getattr(row, name)
        if value is not None:
            data[name] = value
    return data


class _AtomicWriter:
    """Writes to `<target>.partial`; `close` replaces the target with it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._file: IO[str] | None = self.partial.open("w", encoding="utf-8", newline="")
        self._rows = 0
        self.start()

    @property
    def file(self) -> IO[str]:
        if self._file is None:
            raise RuntimeError(f"{self.path}: the writer is closed")
        return self._file

    def start(self) -> None:
        """Write what precedes the rows."""

    def write(self, row: OutputRow) -> None:
        self.write_row(row)
        self._rows += 1
        if self._rows % _FLUSH_EVERY == 0:
            self.file.flush()

    def write_row(self, row: OutputRow) -> None:
        raise NotImplementedError

    def close(self, summary: Summary | None = None) -> None:
        handle = self.file
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        self._file = None
        self.finish(summary)

    def finish(self, summary: Summary | None) -> None:
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)


class JsonlWriter(_AtomicWriter):
    def write_row(self, row: OutputRow) -> None:
        self.file.write(json.dumps(row_json(row), ensure_ascii=False) + "\n")


def _safe_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


class CsvWriter(_AtomicWriter):
    def start(self) -> None:
        self._csv = csv.writer(self.file)
        self._csv.writerow(CSV_COLUMNS)

    def write_row(self, row: OutputRow) -> None:
        review = row.review
        cells: dict[str, str] = {
            "item": _safe_cell(row.key),
            "path": _safe_cell(str(row.location.get("path", ""))),
            # a CSV row number, or the line of a JSONL item
            "row": str(row.location.get("row", row.location.get("line", ""))),
            "id": _safe_cell(str(row.location.get("id", ""))),
            "status": row.status,
            "error": _safe_cell(row.error or ""),
            "duplicate_of": _safe_cell(row.duplicate_of or ""),
        }
        if review is not None:
            severity = worst_severity(review)
            cells |= {
                "score": str(review.score),
                "failed_rules": ";".join(
                    r.rule_id for r in review.rules if r.verdict is Verdict.failed
                ),
                "worst_severity": severity.value if severity else "",
                "engine": review.engine,
                "degraded": "true" if review.degraded else "false",
                "summary": _safe_cell(review.summary),
                "rewrite": _safe_cell(review.rewrite.text if review.rewrite else ""),
            }
        self._csv.writerow([cells.get(name, "") for name in CSV_COLUMNS])


class MarkdownWriter(_AtomicWriter):
    """Item sections stream to the partial file; on close the final file is built as title,
    summary, then a streamed copy of the sections (the summary is only known at the end)."""

    TITLE = "# coach batch review\n\n"

    def write_row(self, row: OutputRow) -> None:
        self.file.write(item_markdown(row))

    def finish(self, summary: Summary | None) -> None:
        final = self.path.with_name(self.path.name + ".partial.final")
        try:
            with final.open("w", encoding="utf-8", newline="") as out:
                out.write(self.TITLE)
                if summary is not None:
                    out.write(summary_markdown(summary) + "\n")
                out.write("## Items\n\n")
                with self.partial.open(encoding="utf-8", newline="") as sections:
                    shutil.copyfileobj(sections, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(final, self.path)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        self.partial.unlink(missing_ok=True)

    def abort(self) -> None:
        super().abort()
        with contextlib.suppress(OSError):
            self.path.with_name(self.path.name + ".partial.final").unlink(missing_ok=True)


def _longest_backticks(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside `text`."""
    return "`" * max(3, _longest_backticks(text) + 1)


def _code(text: str) -> str:
    """`text` as an inline code span (merge fields stay readable, nothing is interpreted)."""
    ticks = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def item_markdown(row: OutputRow) -> str:
    out = [f"### {escape_markdown(row.key)}", ""]
    if row.status == "failed" or row.review is None:
        out += [f"- status: failed after {row.attempts} attempt(s)"]
        out += [f"- error: {escape_markdown(row.error or 'unknown')}", "", ""]
        return "\n".join(out)
    review = row.review
    engine = review.engine + (" (degraded)" if review.degraded else "")
    out.append(f"- score: **{review.score}** · engine: {engine}")
    if row.duplicate_of is not None:
        out.append(f"- same draft as {escape_markdown(row.duplicate_of)} (reviewed once)")
    failed = [r for r in review.rules if r.verdict is Verdict.failed]
    if failed:
        out.append("- failed rules:")
        for result in failed:
            out.append(f"  - **{escape_markdown(result.rule_id)}** ({result.severity.value})")
            for finding in review.findings:
                if finding.rule_id != result.rule_id:
                    continue
                quote = " ".join(finding.span.quote.split())
                message = escape_markdown(finding.message)
                out.append(f"    - {_code(quote)}: {message}" if quote else f"    - {message}")
    else:
        out.append("- failed rules: none")
    if review.rewrite is not None:
        fence = _fence(review.rewrite.text)
        out += ["", "Rewrite:", "", f"{fence}text", review.rewrite.text, fence]
    if row.rewrite_markup is not None:
        fence = _fence(row.rewrite_markup)
        out += ["", "Rewrite (HTML):", "", f"{fence}html", row.rewrite_markup, fence]
    out += ["", ""]
    return "\n".join(out)
