"""Streaming readers for `coach batch`: folders of drafts, CSV columns, JSONL review inputs.

`iter_inputs` yields one `InputItem` at a time and never holds a whole folder, CSV or JSONL
file in memory, so a run over hundreds of thousands of templates keeps a flat footprint.

Two kinds of problem are told apart:
- the command is wrong (a path that does not exist, a CSV without `--column`, a column that is
  not in the header, a file type we cannot read): `InputError`, raised before the first item;
- one item is unusable (empty, undecodable, too long, an invalid JSONL line): the item is still
  yielded, with `request=None` and a one-line `error`, so the run reports it instead of losing
  it. Errors name files, lines, rows and fields, never the draft text.

The text of a draft is passed through byte for byte (after decoding): merge fields such as
`{{first_name}}`, `*|FNAME|*` or `%FIRSTNAME%` reach the engine exactly as written.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from hashlib import blake2b
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coach.batch.html import html_to_text, rewrite_markup
from coach.errors import InputError, first_validation_error
from coach.models import MAX_TEXT_CHARS, Kind, Language, ReviewRequest

__all__ = ["DRAFT_SUFFIXES", "InputItem", "item_rewrite_markup", "iter_inputs"]

#: Files a folder walk picks up (case-insensitive); anything else in a folder is skipped.
DRAFT_SUFFIXES = frozenset({".txt", ".md", ".html", ".htm", ".eml"})
_HTML_SUFFIXES = frozenset({".html", ".htm"})
#: A plain-text draft longer than this many bytes cannot fit MAX_TEXT_CHARS (UTF-8 uses at most
#: 4 bytes a code point, plus a BOM), so it is rejected without being read.
_MAX_TEXT_BYTES = MAX_TEXT_CHARS * 4 + 3
#: HTML and e-mail carry markup, styles and attachments around the text; past this size the
#: file is refused rather than read into memory.
_MAX_MARKUP_BYTES = 10 * 1024 * 1024
#: csv's default field limit (128 KiB) would raise mid-file on one oversized cell and stop the
#: run; with a higher limit that cell becomes an item error ("too long") like any other.
_CSV_FIELD_LIMIT = 16 * 1024 * 1024
_JSONL_FIELDS = frozenset({"id", "text", "kind", "language", "context"})


@dataclass(frozen=True)
class InputItem:
    key: str
    location: dict[str, str | int]
    request: ReviewRequest | None
    markup: str | None = None
    error: str | None = None


def iter_inputs(
    paths: Sequence[Path],
    *,
    column: str | None = None,
    kind: Kind = Kind.template,
    language: Language | None = None,
) -> Iterator[InputItem]:
    """Every item of `paths`, in a stable order. Problems with the command itself raise
    `InputError` here, before the first item is read."""
    _check_paths(paths, column)
    return _generate(list(paths), column, kind, language)


def item_rewrite_markup(item: InputItem, rewritten_text: str) -> str | None:
    """The original markup of an HTML item with `rewritten_text` written into it; None for
    items that are not HTML. An e-mail's subject line leads the reviewed text but is not part
    of the HTML body, so it is taken off the rewrite first."""
    if item.markup is None or item.request is None:
        return None
    body = html_to_text(item.markup)
    text = rewritten_text
    if item.request.text != body:
        subject = item.request.text[: len(item.request.text) - len(body)].strip()
        if subject and text.lstrip().startswith(subject):
            text = text.lstrip()[len(subject) :].lstrip()
    return rewrite_markup(item.markup, text)


def _check_paths(paths: Sequence[Path], column: str | None) -> None:
    resolved: list[tuple[Path, Path]] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix == ".csv":
                _csv_header(path, column)
            elif suffix != ".jsonl" and suffix not in DRAFT_SUFFIXES:
                raise InputError(
                    f"{path}: cannot read {suffix or 'files without a suffix'} "
                    "(expected .txt, .md, .html, .htm, .eml, .csv, .jsonl or a folder)"
                )
        elif not path.is_dir():
            raise InputError(f"{path}: not a file or folder")
        real = path.resolve()
        for other, other_real in resolved:
            # Overlapping arguments would review (and key) the same file twice.
            if real == other_real or other_real in real.parents or real in other_real.parents:
                raise InputError(f"{path}: overlaps {other}, given before it")
        resolved.append((path, real))


def _csv_header(path: Path, column: str | None) -> None:
    if column is None:
        raise InputError(f"{path}: a CSV input needs --column (the column holding the text)")
    try:
        with _open_csv(path) as handle:
            header = next(csv.reader(handle), None)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV header ({exc})") from None
    if header is None:
        raise InputError(f"{path}: the CSV file is empty")
    if column not in header:
        shown = ", ".join(repr(name) for name in header[:20])
        raise InputError(f"{path}: no column {column!r} in the header (columns: {shown})")


def _open_csv(path: Path) -> io.TextIOWrapper:
    # surrogateescape: an undecodable byte becomes an item error for its row instead of
    # stopping the whole file at that point.
    return io.TextIOWrapper(
        path.open("rb"), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )


def _generate(
    paths: list[Path], column: str | None, kind: Kind, language: Language | None
) -> Iterator[InputItem]:
    for path in paths:
        if path.is_dir():
            for file in _walk(path):
                yield _read_file(file, kind, language)
            continue
        suffix = path.suffix.lower()
        if suffix == ".csv":
            assert column is not None  # checked by _check_paths
            yield from _read_csv(path, column, kind, language)
        elif suffix == ".jsonl":
            yield from _read_jsonl(path, kind, language)
        else:
            yield _read_file(path, kind, language)


def _walk(folder: Path) -> Iterator[Path]:
    """Draft files under `folder`, depth first in name order, one directory listed at a time.
    Hidden files and folders are skipped; symlinked folders are not followed (no loops)."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list: {exc.strerror or type(exc).__name__}") from None
    for entry in entries:
        path = folder / entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif entry.is_file() and path.suffix.lower() in DRAFT_SUFFIXES:
            yield path


def _request(
    text: str, kind: Kind, language: Language | None
) -> tuple[ReviewRequest | None, str | None]:
    try:
        return ReviewRequest(text=text, kind=kind, language=language), None
    except ValidationError as exc:
        return None, first_validation_error(exc)


def _read_file(path: Path, kind: Kind, language: Language | None) -> InputItem:
    key = path.as_posix()
    location: dict[str, str | int] = {"path": key}

    def failed(error: str) -> InputItem:
        return InputItem(key, location, None, error=error)

    suffix = path.suffix.lower()
    limit = _MAX_TEXT_BYTES if suffix in (".txt", ".md") else _MAX_MARKUP_BYTES
    try:
        size = path.stat().st_size
        if size > limit:
            return failed(
                f"the file has {size} bytes; too long (the text limit is "
                f"{MAX_TEXT_CHARS} characters)"
            )
        if suffix == ".eml":
            with path.open("rb") as handle:
                message = email.message_from_binary_file(handle, policy=email.policy.default)
            return _from_email(key, location, message, kind, language)
        data = path.read_bytes()
    except OSError as exc:
        return failed(f"cannot read the file: {exc.strerror or type(exc).__name__}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return failed(f"not valid UTF-8 (bad byte at offset {exc.start})")
    markup = None
    if suffix in _HTML_SUFFIXES:
        markup, text = text, html_to_text(text)
    request, error = _request(text, kind, language)
    return InputItem(key, location, request, markup=markup, error=error)


def _from_email(
    key: str,
    location: dict[str, str | int],
    message: Any,
    kind: Kind,
    language: Language | None,
) -> InputItem:
    if not isinstance(message, EmailMessage):  # policy.default always builds EmailMessage
        return InputItem(key, location, None, error="not an e-mail message")
    part = message.get_body(preferencelist=("plain", "html"))
    if not isinstance(part, EmailMessage):
        return InputItem(key, location, None, error="the e-mail has no text or HTML body")
    try:
        body = part.get_content()
        subject = str(message.get("subject") or "").strip()
    except (LookupError, UnicodeError, ValueError) as exc:
        return InputItem(
            key, location, None, error=f"cannot decode the e-mail: {type(exc).__name__}"
        )
    if not isinstance(body, str):
        return InputItem(key, location, None, error="the e-mail body is not text")
    markup = None
    if part.get_content_subtype() == "html":
        markup, body = body, html_to_text(body)
    text = f"{subject}\n\n{body}" if subject and body.strip() else body
    request, error = _request(text, kind, language)
    return InputItem(key, location, request, markup=markup, error=error)


def _read_csv(
    path: Path, column: str, kind: Kind, language: Language | None
) -> Iterator[InputItem]:
    name = path.as_posix()
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with _open_csv(path) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        index = header.index(column)
        row = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The file's structure is broken from here on; no row boundary to resume at.
                raise InputError(f"{name}: line {reader.line_num}: malformed CSV ({exc})") from None
            if not cells:
                continue  # a blank line is not a row (as in csv.DictReader)
            row += 1
            key = f"{name}:row={row}"
            location: dict[str, str | int] = {"path": name, "row": row}
            cell = cells[index] if index < len(cells) else ""
            if _undecodable(cell):
                yield InputItem(key, location, None, error=f"column {column!r}: not valid UTF-8")
            elif not cell.strip():
                yield InputItem(key, location, None, error=f"column {column!r} is empty")
            else:
                request, error = _request(cell, kind, language)
                yield InputItem(key, location, request, error=error)


def _undecodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_jsonl(path: Path, kind: Kind, language: Language | None) -> Iterator[InputItem]:
    name = path.as_posix()
    # 64-bit digests of the ids seen: duplicate ids must not give two items the same key, and
    # digests keep that check at a few bytes per line rather than the ids themselves.
    seen: set[int] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            key = f"{name}:line={number}"
            location: dict[str, str | int] = {"path": name, "line": number}
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield InputItem(key, location, None, error=f"not valid UTF-8 (byte {exc.start})")
                continue
            except json.JSONDecodeError as exc:
                yield InputItem(
                    key, location, None, error=f"invalid JSON: {exc.msg} (column {exc.colno})"
                )
                continue
            if not isinstance(data, dict):
                yield InputItem(key, location, None, error="not a JSON object")
                continue
            ident = data.get("id")
            if ident is not None:
                if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
                    yield InputItem(key, location, None, error="id: must be a non-empty string")
                    continue
                ident = str(ident)
                digest = int.from_bytes(blake2b(ident.encode(), digest_size=8).digest(), "big")
                if digest in seen:
                    yield InputItem(key, location, None, error="id: repeats an earlier line's id")
                    continue
                seen.add(digest)
                key = f"{name}:id={ident}"
                location = {"path": name, "id": ident, "line": number}
            yield _jsonl_item(key, location, data, kind, language)


def _jsonl_item(
    key: str,
    location: dict[str, str | int],
    data: dict[str, Any],
    kind: Kind,
    language: Language | None,
) -> InputItem:
    unknown = sorted(set(data) - _JSONL_FIELDS)
    if unknown:
        field = unknown[0][:40]
        return InputItem(key, location, None, error=f"unknown field {field!r}")
    fields = {k: v for k, v in data.items() if k != "id"}
    fields.setdefault("kind", kind)
    if language is not None:
        fields.setdefault("language", language)
    try:
        request = ReviewRequest.model_validate(fields)
    except ValidationError as exc:
        return InputItem(key, location, None, error=first_validation_error(exc))
    return InputItem(key, location, request)
