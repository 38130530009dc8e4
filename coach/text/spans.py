"""Spans: code-point offsets (Python) and UTF-16 offsets (browsers) for the same text."""

from __future__ import annotations

from coach.models import Span

__all__ = ["Utf16Index", "make_span"]


class Utf16Index:
    """Converts code-point offsets into UTF-16 code-unit offsets for one text.

    Characters outside the Basic Multilingual Plane (most emoji) are one code point but two
    UTF-16 units; everything else is one of each. Built once per text, O(1) per lookup.
    """

    __slots__ = ("_prefix",)

    def __init__(self, text: str) -> None:
        prefix = [0]
        extra = 0
        if text.isascii():
            self._prefix: list[int] | None = None
            return
        for ch in text:
            if ord(ch) > 0xFFFF:
                extra += 1
            prefix.append(extra)
        self._prefix = prefix

    def __call__(self, offset: int) -> int:
        if self._prefix is None:
            return offset
        return offset + self._prefix[offset]


def make_span(text: str, start: int, end: int, index: Utf16Index | None = None) -> Span:
    """A span over `text[start:end]`, with whitespace trimmed from both ends."""
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"span {start}:{end} outside text of length {len(text)}")
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    utf16 = index or Utf16Index(text)
    return Span(
        start=start,
        end=end,
        start_utf16=utf16(start),
        end_utf16=utf16(end),
        quote=text[start:end],
    )
