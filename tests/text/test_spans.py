"""Spans: code-point offsets for Python, UTF-16 offsets for browsers."""

from __future__ import annotations

import pytest
from conftest import ReviewText
from hypothesis import given, settings
from hypothesis import strategies as st

from coach.models import Review
from coach.text import Utf16Index, make_span


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def assert_span_invariants(text: str, review: Review) -> None:
    for finding in review.findings:
        span = finding.span
        assert span.quote == text[span.start : span.end]
        assert span.start_utf16 == utf16_len(text[: span.start])
        assert span.end_utf16 == utf16_len(text[: span.end])


def test_ascii_offsets_are_identical() -> None:
    index = Utf16Index("hello world")
    assert [index(i) for i in range(12)] == list(range(12))


@pytest.mark.parametrize(
    ("emoji", "code_points", "units"),
    [
        ("😀", 1, 2),  # one astral code point
        ("👍🏽", 2, 4),  # thumbs up + skin-tone modifier, both astral
        ("🇮🇱", 2, 4),  # flag: two regional indicators
        ("👩‍💻", 3, 5),  # ZWJ sequence: astral, U+200D (BMP), astral
        ("é", 1, 1),  # BMP: one of each
    ],
)
def test_utf16_offsets_after_emoji(emoji: str, code_points: int, units: int) -> None:
    text = f"a{emoji}b"
    assert len(emoji) == code_points
    index = Utf16Index(text)
    assert index(0) == 0
    assert index(1) == 1
    assert index(1 + code_points) == 1 + units
    assert index(len(text)) == utf16_len(text) == 2 + units


def test_hebrew_is_one_unit_per_code_point() -> None:
    text = "שלום דנה, מה שלומך?"
    index = Utf16Index(text)
    assert [index(i) for i in range(len(text) + 1)] == list(range(len(text) + 1))


def test_mixed_hebrew_emoji_and_english() -> None:
    text = "היי 😀 Dana 👍🏽 שלום 🇮🇱!"
    span = make_span(text, text.index("שלום"), text.index("שלום") + 4)
    assert span.quote == "שלום"
    # Before "שלום": one 😀 (1 extra unit) and 👍🏽 (2 extra units).
    assert span.start == text.index("שלום")
    assert span.start_utf16 == span.start + 3
    assert span.end_utf16 == span.end + 3
    flag = make_span(text, text.index("🇮🇱"), len(text))
    assert flag.quote == "🇮🇱!"
    assert flag.end_utf16 - flag.start_utf16 == 5
    assert flag.end_utf16 == utf16_len(text)


def test_span_covering_an_emoji() -> None:
    text = "x 😀 y"
    span = make_span(text, 2, 3)
    assert (span.start, span.end) == (2, 3)
    assert (span.start_utf16, span.end_utf16) == (2, 4)
    assert span.quote == "😀"


def test_make_span_trims_whitespace_on_both_ends() -> None:
    text = "Hi.  \n Our product is great. \t Bye"
    span = make_span(text, 3, 31)
    assert span.quote == "Our product is great."
    assert span.start == text.index("Our")
    assert span.end == text.index("great.") + len("great.")
    assert span.quote == text[span.start : span.end]


def test_make_span_of_only_whitespace_is_empty() -> None:
    text = "a   b"
    span = make_span(text, 1, 4)
    assert span.quote == ""
    assert span.start == span.end


def test_make_span_trims_unicode_whitespace() -> None:
    text = "\u00a0\u2003שלום\u3000"
    span = make_span(text, 0, len(text))
    assert span.quote == "שלום"


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 2), (0, 6), (6, 6)])
def test_make_span_rejects_offsets_outside_the_text(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="outside text"):
        make_span("hello", start, end)


def test_shared_index_gives_the_same_span() -> None:
    text = "😀 a 👍🏽 b 🇮🇱 c"
    index = Utf16Index(text)
    for start in range(len(text)):
        for end in range(start, len(text) + 1):
            assert make_span(text, start, end, index) == make_span(text, start, end)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data(), text=st.text(max_size=60))
def test_utf16_offsets_property(data: st.DataObject, text: str) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(text)), label="start")
    end = data.draw(st.integers(min_value=start, max_value=len(text)), label="end")
    span = make_span(text, start, end)
    assert start <= span.start <= span.end <= end
    assert span.quote == text[span.start : span.end]
    assert span.quote == span.quote.strip()
    assert span.start_utf16 == len(text[: span.start].encode("utf-16-le")) // 2
    assert span.end_utf16 == len(text[: span.end].encode("utf-16-le")) // 2
    # The raw index agrees for every offset, trimmed or not.
    index = Utf16Index(text)
    assert index(start) == len(text[:start].encode("utf-16-le")) // 2
    assert index(end) == len(text[:end].encode("utf-16-le")) // 2


@settings(max_examples=300, deadline=None, database=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab שלום\n.?😀👍🏽🇮🇱é\u200d")),
        max_size=40,
    ),
    data=st.data(),
)
def test_utf16_offsets_property_emoji_heavy(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(text)), label="start")
    end = data.draw(st.integers(min_value=start, max_value=len(text)), label="end")
    span = make_span(text, start, end)
    assert span.start_utf16 == len(text[: span.start].encode("utf-16-le")) // 2
    assert span.end_utf16 == len(text[: span.end].encode("utf-16-le")) // 2
    assert span.quote == text[span.start : span.end]


def test_review_findings_carry_utf16_spans_with_emoji_and_hebrew(review_text: ReviewText) -> None:
    text = "היי דנה, שמחתי להתחבר! 😀 המערכת שלנו חוסכת חצי מזמן ההטמעה 👍🏽. לשלוח לך מחירון?"
    review = review_text(text)
    assert review.findings, "this pitch should produce findings"
    assert_span_invariants(text, review)
    # The ask comes after two emoji (3 extra UTF-16 units).
    ask = [f.span for f in review.findings if f.span.quote == "לשלוח לך מחירון?"]
    assert ask
    assert all(s.start_utf16 - s.start == 3 for s in ask)


def test_review_findings_carry_utf16_spans_in_english(review_text: ReviewText) -> None:
    text = "Hi 🇮🇱 Dana 😀! Could you introduce me to your head of procurement?"
    review = review_text(text)
    assert review.findings
    assert_span_invariants(text, review)
    assert any(f.span.end_utf16 == utf16_len(text) for f in review.findings)
