"""One pass over a draft: sentences, merge fields and every lexicon hit, with offsets."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from coach.engines.rules.lexicon import Lexicon, lexicon
from coach.models import Kind, Language, ReviewRequest
from coach.text import MergeField, Sentence, find_merge_fields, mask, split_sentences
from coach.text.language import detect_language
from coach.text.segment import split_off_lead

__all__ = ["Analysis", "Hit", "analyse"]

# Pitch-like categories that a sincere disclaimer ("no pitch, just…") neutralises where they
# overlap it. Selling elsewhere in the draft still counts.
_DISCLAIMABLE = ("pitch", "business_ask", "ask")


@dataclass(frozen=True, slots=True)
class Hit:
    category: str
    start: int
    end: int
    sentence: int


@dataclass
class Analysis:
    request: ReviewRequest
    text: str
    masked: str
    language: Language
    kind: Kind
    lexicon: Lexicon
    sentences: list[Sentence]
    merge_fields: list[MergeField]
    hits: dict[str, list[Hit]] = field(default_factory=dict)
    #: Categories scanned only when first read (Lexicon.scan_lazily).
    pending: dict[str, Callable[[], list[Hit]]] = field(default_factory=dict, repr=False)

    def of(self, category: str) -> list[Hit]:
        hits = self.hits.get(category)
        if hits is None:
            finish = self.pending.pop(category, None)
            if finish is None:
                return []
            hits = self.hits[category] = finish()
        return hits

    def count(self, category: str) -> int:
        return len(self.of(category))

    def in_sentence(self, category: str, sentence: int) -> bool:
        return any(hit.sentence == sentence for hit in self.of(category))

    def sentences_with(self, *categories: str) -> set[int]:
        return {hit.sentence for c in categories for hit in self.of(c)}

    def search(self, category: str, text: str) -> bool:
        """Whether `category` matches in a text other than the draft (thread, notes)."""
        pattern = self.lexicon.signals.get(category)
        return bool(pattern and pattern.search(text))


def _sentence_of(starts: list[int], offset: int) -> int:
    """The sentence holding `offset`; an offset between sentences belongs to the previous one."""
    return max(0, bisect_right(starts, offset) - 1)


def analyse(request: ReviewRequest) -> Analysis:
    text = request.text
    merge_fields = find_merge_fields(text)
    language = request.language or detect_language(text, merge_fields)
    lex = lexicon(language)
    masked = mask(text, merge_fields)
    sentences = split_sentences(masked)
    greeting = re.match(lex.phrase("layout", "greeting"), masked, re.IGNORECASE)
    if greeting and greeting.group().rstrip().endswith((",", "!", ".")):
        sentences = split_off_lead(masked, sentences, greeting.end())
    analysis = Analysis(
        request=request,
        text=text,
        masked=masked,
        language=language,
        kind=request.kind,
        lexicon=lex,
        sentences=sentences,
        merge_fields=merge_fields,
    )
    starts = [s.start for s in sentences]

    def hits(category: str, spans: list[tuple[int, int]]) -> list[Hit]:
        return [Hit(category, start, end, _sentence_of(starts, start)) for start, end in spans]

    found, pending = lex.scan_lazily(masked)
    for category, spans in found.items():
        analysis.hits[category] = hits(category, spans)
    for category, finish in pending.items():
        analysis.pending[category] = partial(lambda c, f: hits(c, f()), category, finish)
    _apply_disclaimers(analysis)
    return analysis


def _apply_disclaimers(analysis: Analysis) -> None:
    disclaimers = analysis.of("disclaimer")
    if not disclaimers:
        return
    for category in _DISCLAIMABLE:
        kept = [
            hit
            for hit in analysis.of(category)
            if not any(
                d.start <= hit.start < d.end or hit.start <= d.start < hit.end for d in disclaimers
            )
        ]
        if kept:
            analysis.hits[category] = kept
        else:
            analysis.hits.pop(category, None)
