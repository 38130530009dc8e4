"""Sentence splitting and masking keep offsets into the original; language detection."""

from __future__ import annotations

import pytest

from coach.models import Language
from coach.text import Sentence, detect_language, find_merge_fields, mask, split_sentences


def sentences_of(text: str) -> list[Sentence]:
    return split_sentences(mask(text, find_merge_fields(text)))


def originals(text: str) -> list[str]:
    return [text[s.start : s.end] for s in sentences_of(text)]


def test_offsets_point_into_the_original() -> None:
    text = "Hi Dana. I loved your talk!  Are you hiring?\nThanks"
    sentences = sentences_of(text)
    assert originals(text) == ["Hi Dana.", "I loved your talk!", "Are you hiring?", "Thanks"]
    for i, s in enumerate(sentences):
        assert s.index == i
        assert s.text == text[s.start : s.end]
        assert len(s.text) == s.end - s.start


def test_masked_sentence_has_the_length_of_the_original_slice() -> None:
    text = "Hi {{first_name}}. See https://acme.io/pricing now! Mail me at a.b@acme.io."
    for s in sentences_of(text):
        assert len(s.text) == s.end - s.start
        assert s.text != text[s.start : s.end] or "{{" not in text[s.start : s.end]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "I met Dr. Cohen at the expo. She was great.",
            ["I met Dr. Cohen at the expo.", "She was great."],
        ),
        (
            "We talked about tools, e.g. Figma and Miro. Then lunch.",
            ["We talked about tools, e.g. Figma and Miro.", "Then lunch."],
        ),
        (
            "Ask Mr. Levi, i.e. the CFO. Done.",
            ["Ask Mr. Levi, i.e. the CFO.", "Done."],
        ),
        (
            "Acme Inc. is hiring. J. R. Smith leads it.",
            ["Acme Inc. is hiring.", "J. R. Smith leads it."],
        ),
    ],
)
def test_abbreviations_do_not_end_a_sentence(text: str, expected: list[str]) -> None:
    assert originals(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "See https://example.com/a.b?c=d. Thanks!",
            ["See https://example.com/a.b?c=d.", "Thanks!"],
        ),
        (
            "Read www.acme.co.il/blog/post.html first! It is short.",
            ["Read www.acme.co.il/blog/post.html first!", "It is short."],
        ),
        (
            "Write to dana.cohen@acme.co.il. She answers.",
            ["Write to dana.cohen@acme.co.il.", "She answers."],
        ),
    ],
)
def test_urls_and_emails_are_not_split(text: str, expected: list[str]) -> None:
    assert originals(text) == expected


def test_question_and_exclamation_runs() -> None:
    text = "Really?! Wow... Are you sure?"
    assert originals(text) == ["Really?!", "Wow...", "Are you sure?"]
    assert [s.is_question for s in sentences_of(text)] == [False, False, True]


def test_newline_bullets_are_one_sentence_each() -> None:
    text = (
        "Notes:\n- met Dana at the expo\n• she runs a bakery\n* wants a second shop\n\n- send intro"
    )
    sentences = sentences_of(text)
    assert [text[s.start : s.end] for s in sentences] == [
        "Notes:",
        "met Dana at the expo",
        "she runs a bakery",
        "wants a second shop",
        "send intro",
    ]
    assert sentences[1].start == text.index("met")


def test_hebrew_sentences() -> None:
    text = "שלום דנה. ראיתי את ההרצאה שלך! מה התוכניות לשנה הבאה?"
    sentences = sentences_of(text)
    assert [text[s.start : s.end] for s in sentences] == [
        "שלום דנה.",
        "ראיתי את ההרצאה שלך!",
        "מה התוכניות לשנה הבאה?",
    ]
    assert sentences[-1].is_question


def test_mixed_hebrew_and_english_sentences() -> None:
    text = "היי, ראיתי את הפוסט שלך ב-LinkedIn. Great stuff! איך הולך עם ה-MVP?"
    assert originals(text) == [
        "היי, ראיתי את הפוסט שלך ב-LinkedIn.",
        "Great stuff!",
        "איך הולך עם ה-MVP?",
    ]


def test_only_whitespace_gives_no_sentences() -> None:
    assert split_sentences(" \n\t \n") == []


def test_mask_keeps_length_and_blanks_links_emails_and_fields() -> None:
    text = "Hi {{ first_name }}, pricing at https://acme.io/pricing or sales@acme.io. Bye *|FNAME|*"
    masked = mask(text, find_merge_fields(text))
    assert len(masked) == len(text)
    for secret in ("{{", "first_name", "https", "acme.io/pricing", "sales@acme.io", "FNAME"):
        assert secret not in masked
    # The word before the link is untouched, and so is the punctuation after the e-mail.
    assert masked.startswith("Hi ")
    assert "pricing at " in masked
    assert masked[text.index("acme.io.") + len("acme.io")] == "."
    # Whitespace inside a field stays whitespace; everything else becomes "x".
    field = text[3 : 3 + len("{{ first_name }}")]
    assert masked[3 : 3 + len(field)] == "".join(" " if c.isspace() else "x" for c in field)
    url = "https://acme.io/pricing"
    start = text.index(url)
    assert masked[start : start + len(url)] == "x" * len(url)


def test_mask_leaves_plain_text_unchanged() -> None:
    text = "שלום! We met at the expo. 50% off is not a field."
    assert mask(text, find_merge_fields(text)) == text


def test_mask_with_astral_characters_keeps_offsets() -> None:
    text = "😀 see https://x.io/a 👍🏽 ok"
    masked = mask(text, [])
    assert len(masked) == len(text)
    assert masked.index("ok") == text.index("ok")
    assert masked.startswith("😀 see x")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hi Dana, how was the conference?", Language.en),
        ("היי דנה, איך היה הכנס?", Language.he),
        ("היי דנה, ראיתי את הפוסט שלך ב-LinkedIn על Salesforce ו-HubSpot", Language.he),
        ("שמחתי לפגוש אותך ב-AWS Summit, נשמע ש-Monday.com עובדים על משהו מעניין", Language.he),
        ("Hi Dana, we loved the שקשוקה at the meetup last week", Language.en),
        ("Thanks so much for the intro to Yossi, todah רבה and see you soon", Language.en),
        ("12345 !!! 😀", Language.en),
    ],
)
def test_detect_language(text: str, language: Language) -> None:
    assert detect_language(text) is language


def test_hebrew_draft_with_a_link_is_hebrew() -> None:
    # The threshold is low on purpose so that links and brand names do not flip a Hebrew draft.
    text = "היי דנה, ראיתי את הכתבה: https://www.calcalist.co.il/technology/article/networking-2024"
    assert detect_language(text) is Language.he
