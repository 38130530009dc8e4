"""Masking and sentence splitting that keep offsets into the original text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coach.text.merge_fields import MergeField

__all__ = ["URL", "Sentence", "mask", "split_off_lead", "split_sentences"]

#: Links and e-mail addresses; trailing punctuation is not part of a link.
URL = re.compile(
    r"(?:https?://|www\.)[^\s<>()\"']*[^\s<>()\"'.,;:!?]|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", re.I
)
_LINK = re.compile(r"(?:https?://|www\.)[^\s<>()\"']*[^\s<>()\"'.,;:!?]", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_ABBREVIATIONS = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Inc|Ltd|Co|Corp|St|vs|etc|e\.g|i\.e|approx|Jr|Sr|No|a\.m|p\.m)\.|\b[A-Z]\.|\b[ap]\.)$"
)
# Sentence ends: terminal punctuation (with closing quotes/brackets) then whitespace, or a line
# break. Bulleted notes are one sentence per line. The pattern starts with a character class so
# the regex engine can skip ahead in C; the whitespace rule is checked in split_sentences.
_BOUNDARY = re.compile(r"[.!?…\n][\"'”’)\]]*\s*")


@dataclass(frozen=True, slots=True)
class Sentence:
    index: int
    start: int
    end: int
    text: str  # masked text of the sentence, same length as the original slice

    @property
    def is_question(self) -> bool:
        return self.text.rstrip().endswith("?")


def mask(text: str, merge_fields: list[MergeField], fill: str = "x") -> str:
    """`text` with URLs, e-mail addresses and merge fields blanked out, same length.

    Lexicons then never match inside a link ("…/pricing") or a field name, and offsets found in
    the masked text are offsets in the original. `fill=""` removes them instead (the result is
    then shorter), for counting letters.
    """
    spans = [(f.start, f.end) for f in merge_fields]
    lowered = text.lower()
    if "http" in lowered or "www." in lowered:
        spans += [m.span() for m in _LINK.finditer(text)]
    if "@" in text:
        spans += [m.span() for m in _EMAIL.finditer(text)]
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        # Letters become "x", so a masked field still reads as a word ("Hi xxxx,").
        for i in range(start, end):
            chars[i] = fill if not chars[i].isspace() else chars[i]
    return "".join(chars)


def split_sentences(masked: str) -> list[Sentence]:
    sentences: list[Sentence] = []
    start = 0

    def emit(end: int) -> None:
        nonlocal start
        raw = masked[start:end]
        stripped = raw.strip(" \t\r\n-•*·–")
        if stripped:
            left = start + raw.index(stripped)
            sentences.append(Sentence(len(sentences), left, left + len(stripped), stripped))

    for match in _BOUNDARY.finditer(masked):
        token = match.group()
        newline = "\n" in token
        if not newline and match.end() < len(masked) and not token[-1].isspace():
            continue  # "3.5", "x.com": punctuation inside a word
        if not newline and _ABBREVIATIONS.search(
            masked, max(start, match.start() - 8), match.start() + 1
        ):
            continue
        cut = match.start() if token[0] == "\n" else match.start() + len(token.rstrip())
        emit(cut)
        start = match.end()
    emit(len(masked))
    return sentences


def split_off_lead(masked: str, sentences: list[Sentence], lead_end: int) -> list[Sentence]:
    """Split the first sentence at `lead_end` (the end of a greeting such as "Hi Dana,"), so a
    finding on the sentence after it does not highlight the greeting too."""
    if not sentences or not sentences[0].start < lead_end < sentences[0].end:
        return sentences
    first = sentences[0]
    rest_text = masked[lead_end : first.end]
    stripped = rest_text.lstrip()
    if not stripped:
        return sentences
    rest_start = lead_end + (len(rest_text) - len(stripped))
    head = Sentence(0, first.start, lead_end, masked[first.start : lead_end])
    tail = Sentence(1, rest_start, first.end, masked[rest_start : first.end])
    others = [Sentence(s.index + 1, s.start, s.end, s.text) for s in sentences[1:]]
    return [head, tail, *others]
