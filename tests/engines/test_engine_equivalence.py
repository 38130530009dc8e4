"""Speed work on the rule engine must not change a byte of its output.

- Every review of the dev and held-out sets (and the examples, as each kind) is compared with
  its JSON captured before the speed work (tests/engines/data/reviews.jsonl.gz). Regenerate it
  only for a deliberate behaviour change:
  `.venv/bin/python tests/engines/test_engine_equivalence.py --write`.
- `Lexicon.scan` is compared with a naive scan that tries every pattern at every position of
  the text, on the dev texts and on generated English and Hebrew drafts with merge fields.
- On generated drafts, the whole review with the fast scan is compared with the review with
  the naive scan.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coach.engines.rules import analysis as analysis_module
from coach.engines.rules import checks, rewrite
from coach.engines.rules.analysis import analyse
from coach.engines.rules.lexicon import (
    Lexicon,
    chunk_local,
    forget_chunks,
    lexicon,
    set_chunk_memo_size,
)
from coach.evals.dataset import load_cases
from coach.models import Kind, Language, ReviewRequest
from coach.rulebook import BUILTIN_RULE_IDS
from coach.service import ReviewService
from coach.text import merge_fields

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO / "evals" / "datasets"
FIXTURE = Path(__file__).resolve().parent / "data" / "reviews.jsonl.gz"


def _requests() -> Iterator[tuple[str, ReviewRequest]]:
    cases = load_cases(
        [DATASETS / "dev.jsonl", DATASETS / "holdout.jsonl"], known_rules=set(BUILTIN_RULE_IDS)
    )
    for case in cases:
        yield case.id, case.request()
    for path in sorted((REPO / "examples").glob("*.txt")):
        for kind in Kind:
            yield f"{path.name}/{kind.value}", ReviewRequest(text=path.read_text(), kind=kind)


def _reviews(service: ReviewService) -> Iterator[dict[str, str]]:
    for name, request in _requests():
        yield {
            "id": name,
            "rewrite": service.review_sync(request).model_dump_json(),
            "plain": service.review_sync(request, rewrite=False).model_dump_json(),
        }


@cache
def _expected() -> dict[str, dict[str, str]]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as handle:
        return {row["id"]: row for row in map(json.loads, handle)}


def test_every_review_is_byte_identical_to_the_captured_one() -> None:
    expected = _expected()
    seen = 0
    for row in _reviews(ReviewService()):
        want = expected[row["id"]]
        assert row["rewrite"] == want["rewrite"], row["id"]
        assert row["plain"] == want["plain"], row["id"]
        seen += 1
    assert seen == len(expected)


# --- the scan against a naive one ----------------------------------------------------------------


def naive_scan(lex: Lexicon, text: str) -> dict[str, list[tuple[int, int]]]:
    """Every pattern's full regex at every position (the dispatch keys only skip positions where
    a pattern cannot match); patterns without a key ran with finditer before the speed work,
    which can differ from every position when their matches overlap, so they still do here."""
    always = set(lex._always)
    found: dict[str, list[tuple[int, int]]] = {}
    for index, signal in enumerate(lex._signals):
        if index in always:
            spans = [m.span() for m in signal.regex.finditer(text)]
        else:
            spans = [m.span(1) for m in _everywhere(signal.regex).finditer(text)]
        found.setdefault(signal.category, []).extend(s for s in spans if s[1] > s[0])
    selected: dict[str, list[tuple[int, int]]] = {}
    for category, hits in found.items():
        kept: list[tuple[int, int]] = []
        for begin, end in sorted(hits, key=lambda s: (s[0], -s[1])):
            if not kept or begin >= kept[-1][1]:
                kept.append((begin, end))
        if kept:
            selected[category] = kept
    return selected


def naive_scan_lazily(
    lex: Lexicon, text: str
) -> tuple[dict[str, list[tuple[int, int]]], dict[str, Callable[[], list[tuple[int, int]]]]]:
    """What analyse calls, scanning everything now and naively."""
    return naive_scan(lex, text), {}


@cache
def _everywhere(regex: re.Pattern[str]) -> re.Pattern[str]:
    """The match at every position, overlapping or not: a lookahead consumes nothing."""
    return re.compile(f"(?=({regex.pattern}))", regex.flags)


@cache
def _dev_texts() -> list[tuple[Language, str]]:
    texts = []
    for _name, request in _requests():
        language = request.language or analyse(request).language
        texts.append((language, analyse(request).masked))
    return texts


def test_scan_matches_the_naive_scan_on_every_dev_text() -> None:
    for language, masked in _dev_texts()[::2]:
        lex = lexicon(language)
        assert lex.scan(masked) == naive_scan(lex, masked)


# --- generated drafts ----------------------------------------------------------------------------

_FIELDS = ["{{first_name}}", "{{ company }}", "%FIRSTNAME%", "*|FNAME|*", "[First Name]"]
_PUNCT = [".", ",", "!", "?", ":", " -", "\n", "\n\n", "\n- ", "…", "'s", '"', "(", ")", "$30", "%"]


@cache
def _phrases(language: Language) -> list[list[str]]:
    """The dev texts of a language as word lists: runs of their words make drafts that hit the
    lexicon, in new orders and with new neighbours."""
    return [masked.split(" ") for lang, masked in _dev_texts() if lang is language]


@st.composite
def _run(draw: st.DrawFn, language: Language) -> str:
    words = draw(st.sampled_from(_phrases(language)))
    start = draw(st.integers(0, len(words) - 1))
    return " ".join(words[start : start + draw(st.integers(1, 10))])


def _drafts(language: Language) -> st.SearchStrategy[str]:
    piece = st.one_of(
        _run(language),
        _run(language).map(str.capitalize),
        st.sampled_from(_FIELDS),
        st.sampled_from(_PUNCT),
        st.sampled_from(["https://example.com/pricing", "dana@example.com", "12/3", "3pm"]),
    )
    return st.lists(st.tuples(piece, st.sampled_from([" ", " ", "", "\n"])), max_size=25).map(
        lambda parts: "".join(p + sep for p, sep in parts)
    )


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@pytest.mark.parametrize("language", [Language.en, Language.he])
def test_scan_matches_the_naive_scan_on_generated_drafts(language: Language) -> None:
    lex = lexicon(language)

    @_SETTINGS
    @given(_drafts(language))
    def check(text: str) -> None:
        expected = naive_scan(lex, text)
        assert lex.scan(text) == expected  # the chunk memo holds other drafts' chunks
        assert lex.scan(text) == expected  # and now this one's
        lex._chunks.clear()
        assert lex.scan(text) == expected  # and none

    check()


_SEPARATORS = [" ", "  ", "\n", "\n\n", "\n- ", " \n", ".\n", "! ", "? ", "… ", ", ", ""]


@pytest.mark.parametrize("language", [Language.en, Language.he])
def test_scan_of_chunks_met_before_in_other_contexts(language: Language) -> None:
    """The rewrite's case: the draft's sentences again, dropped, reordered, joined otherwise,
    next to new ones."""
    lex = lexicon(language)
    draft = st.lists(_drafts(language), min_size=1, max_size=5)

    @_SETTINGS
    @given(draft, st.data())
    def check(pieces: list[str], data: st.DataObject) -> None:
        first = " ".join(pieces)
        assert lex.scan(first) == naive_scan(lex, first)
        for _ in range(3):
            order = data.draw(st.permutations(pieces))
            kept = order[: data.draw(st.integers(1, len(order)))]
            seps = data.draw(st.lists(st.sampled_from(_SEPARATORS), min_size=len(kept)))
            text = "".join(p.strip() + s for p, s in zip(kept, seps, strict=False))
            assert lex.scan(text) == naive_scan(lex, text)

    check()


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        # Matches across a sentence cut, then the same sentences where they do not continue.
        (Language.en, ["See you Jan. 5 then.", "See you Jan.", "Jan. 5 then."]),
        (Language.en, ["Still doing it. By hand?", "Still doing it. Not by hand.", "By hand?"]),
        (Language.en, ["Me:\nintro to Dana", "Me:", "intro to Dana"]),
        (Language.he, ["אני מכיר אותו. מישהו שצריך עזרה", "אני מכיר אותו.", "מישהו שצריך עזרה"]),
        (Language.he, ["זה 200 לחודש\nבערך", "זה 200 לחודש", "זה 200 לחודש שלם"]),
        (Language.en, ["A lone \ud800 surrogate. Our demo"]),
    ],
)
def test_scan_of_sentences_that_a_match_crossed_before(
    language: Language, texts: list[str]
) -> None:
    lex = lexicon(language)
    lex._chunks.clear()
    for text in texts:
        assert lex.scan(text) == naive_scan(lex, text), text


@pytest.mark.parametrize(
    ("pattern", "local"),
    [
        (r"(?<!\w)(?:how are you\??)(?!\w)", True),  # a "?" may end a match, not cross a cut
        (r"(?<!\w)(?:our (?:\w{1,25} ){0,2}tool)(?!\w)", True),
        (r"(?<![א-ת\w])[ובלמכשה]{0,3}(?:מכיר (?:\S{1,25} )?מישהו)(?![א-ת])", False),
        (r"(?<!\w)(?:jan\.? \d{1,2})(?!\w)", False),  # "Jan. 5" is two sentences
        (r"(?<!\w)(?:still doing .{0,20} by hand)(?!\w)", False),
        (r"(?<!\w)(?:me\s*:)(?!\w)", False),  # \s takes line breaks
        (r"(?<!\w)(?:^hi)(?!\w)", False),
        (r"(?:בחודש)(?= |$|[.,!])", False),  # sees past a cut
        (r"(?<!\w)(?:our tools?)(?! (?:you|team))", False),
        (r"(?<!\w)(?:demos?)\b", True),
    ],
)
def test_chunk_local(pattern: str, local: bool) -> None:
    assert chunk_local(pattern) is local


@pytest.mark.parametrize("language", [Language.en, Language.he])
@pytest.mark.parametrize("kind", list(Kind))
def test_review_with_fast_scan_matches_review_with_naive_scan(
    language: Language, kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ReviewService()

    @_SETTINGS
    @given(_drafts(language))
    def check(text: str) -> None:
        if not text.strip():
            return
        request = ReviewRequest(text=text, kind=kind)
        fast = service.review_sync(request).model_dump_json()
        with monkeypatch.context() as patch:
            patch.setattr(Lexicon, "scan_lazily", naive_scan_lazily)
            slow = service.review_sync(request).model_dump_json()
        assert fast == slow

    check()


def test_analysis_of_dev_texts_is_unchanged_by_the_fast_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _name, request in list(_requests())[::5]:
        fast = analyse(request)
        with monkeypatch.context() as patch:
            patch.setattr(Lexicon, "scan_lazily", naive_scan_lazily)
            slow = analysis_module.analyse(request)
        categories = fast.lexicon.categories
        assert [fast.of(c) for c in categories] == [slow.of(c) for c in categories]
        assert (fast.sentences, fast.masked) == (slow.sentences, slow.masked)


def _write() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    rows = list(_reviews(ReviewService()))
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    # mtime=0: the same reviews give the same bytes, so a rewrite shows no spurious diff.
    FIXTURE.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"{len(rows)} reviews -> {FIXTURE}")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()


# --- helpers rewritten for speed, against their former code -----------------------------------


def _mid_sentence_before(text: str, start: int) -> bool:
    before = text[:start].split()
    last = before[-1].strip(",.;:!?()[]'\"") if before else ""
    return any(c.isalpha() for c in last) and set(last) != {"x"}


@_SETTINGS
@given(st.lists(st.sampled_from([*"ab xX,.\n\t'\"()", "xxxx", "Dana"])).map("".join), st.data())
def test_mid_sentence_matches_its_former_code(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text)))
    assert checks._mid_sentence(text, start) == _mid_sentence_before(text, start)


_ALL_SYNTAXES = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in merge_fields._SYNTAXES))


@_SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                *_FIELDS,
                *["{!Contact.FirstName}", "[[DETAIL: their news]]", "{", "[", "%", "*|", "}"],
                *["]", "|*", "% off", "30%", "Dana", " ", "\n", "x", "[Name] ", "{{a}}"],
            ]
        ),
        max_size=12,
    ).map("".join)
)
def test_merge_fields_match_one_regex_of_every_syntax(text: str) -> None:
    fields = merge_fields.find_merge_fields(text)
    assert [(f.start, f.end, f.syntax) for f in fields] == [
        (m.start(), m.end(), m.lastgroup)
        for m in _ALL_SYNTAXES.finditer(text)
        if m.lastgroup == "slot" or merge_fields.normalise_field_name(m.group())
    ]


def test_the_sentence_memo_can_be_bounded_or_turned_off_without_changing_results() -> None:
    lex = lexicon(Language.en)
    texts = [r.text for _, r in _requests() if r.language in (None, Language.en)][:20]
    expected = [lex.scan(text) for text in texts]
    try:
        set_chunk_memo_size(3)
        assert len(lex._chunks) <= 3
        assert [lex.scan(text) for text in texts] == expected and len(lex._chunks) <= 3
        set_chunk_memo_size(0)  # off: every draft scanned as unseen
        assert [lex.scan(text) for text in texts] == expected and not lex._chunks
    finally:
        set_chunk_memo_size()
    assert [lex.scan(text) for text in texts] == expected and lex._chunks


def test_forgetting_the_memo_keeps_results_and_lets_a_rewrite_reuse_its_draft(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the benchmarks measure as an unseen draft: the memo emptied before the review but
    on during it, so the rewrite's self-check finds the draft's sentences (a memo turned off
    scans them again)."""
    service = ReviewService()
    request = ReviewRequest(
        text="Hi Dana,\n\nI loved your talk on churn last week. Would you have 15 minutes "
        "for a quick call so I can show you our platform? We help companies like yours.",
        kind=Kind.message,
    )
    expected = service.review_sync(request, rewrite=True).model_dump()
    lex = lexicon(Language.en)
    scanned: list[int] = []
    real_match = lex._match

    def counting(text: str, folded: str, chunks: list[tuple[int, int]], *rest: Any) -> None:
        scanned.append(len(chunks))
        real_match(text, folded, chunks, *rest)

    monkeypatch.setattr(lex, "_match", counting)
    try:
        set_chunk_memo_size(0)
        assert service.review_sync(request, rewrite=True).model_dump() == expected
        turned_off = sum(scanned)
        set_chunk_memo_size()
        forget_chunks()
        assert not lex._chunks
        scanned.clear()
        assert service.review_sync(request, rewrite=True).model_dump() == expected
        forgotten = sum(scanned)
    finally:
        set_chunk_memo_size()
    assert lex._chunks and 0 < forgotten < turned_off


#: `checks._PROPER` as first written, with its look-behinds before the capital.
_PROPER_BEFORE = re.compile(r"(?<![.!?:]\s)(?<!^)(?<![\w'’])[A-Z][a-z]+(?:[A-Z][a-z]+)*")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="AaBbZz .!?:\n\t'’-_1é", max_size=40))
def test_the_proper_noun_pattern_finds_what_it_found_with_its_look_behinds_first(
    text: str,
) -> None:
    spans = [m.span() for m in checks._PROPER.finditer(text)]
    assert spans == [m.span() for m in _PROPER_BEFORE.finditer(text)]


#: `rewrite._DATE` as first written, with a word boundary before each alternative.
_DATE_BEFORE = re.compile(
    r"\b\d{1,2}[/.]\d{1,2}(?:[/.]\d{2,4})?\b|\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}(?::\d{2})?\s?(?:am|pm)\b",
    re.I,
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789/.-: apmAPMx\n٣", max_size=24))
def test_the_date_pattern_finds_what_it_found_with_its_word_boundaries_first(text: str) -> None:
    spans = [m.span() for m in rewrite._DATE.finditer(text)]
    assert spans == [m.span() for m in _DATE_BEFORE.finditer(text)]
