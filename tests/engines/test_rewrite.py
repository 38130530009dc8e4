"""The structural rewrite, over every case of the dev set and on fresh drafts.

Guarantees from the issue: the rewrite keeps every merge field, name, date and link of the draft
byte-identical, and the rewrite passes the rule engine itself. Each dev case is its own test id,
so a failure names the case to fix.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from coach.engines.rules.analysis import analyse
from coach.engines.rules.rewrite import protected_tokens
from coach.evals.dataset import Case, load_cases
from coach.models import Kind, Language, Review, ReviewRequest, Verdict
from coach.service import ReviewService

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "evals" / "datasets" / "dev.jsonl"

SERVICE = ReviewService()
CASES = load_cases([DEV])
CASE_PARAMS = [pytest.param(case, id=case.id) for case in CASES]

HEBREW_WORD = re.compile("[\u05d0-\u05ea]+")
LATIN_WORD = re.compile("[A-Za-z]+")
SLOT = re.compile(r"\[\[[^\]\n]*\]\]")

_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec"
)
_HE_MONTHS = "ינואר|פברואר|מרץ|אפריל|מאי|יוני|יולי|אוגוסט|ספטמבר|אוקטובר|נובמבר|דצמבר"
#: Our own finders (independent of the engine's) for what the rewrite must keep byte-identical.
_KEEP = [
    re.compile(r"\{\{[^{}\n]+\}\}"),  # {{first_name}}, {{ contact.firstname }}
    re.compile(r"\*\|[A-Za-z0-9_:]+\|\*"),  # *|FNAME|*
    re.compile(r"\{![A-Za-z0-9_.]+\}"),  # {!Contact.FirstName}
    re.compile(r"%[A-Za-z][A-Za-z0-9_]+%"),  # %FIRSTNAME%
    re.compile(r"(?:https?://|www\.)[^\s<>()\"']*[^\s<>()\"'.,;:!?]"),  # links
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # e-mail addresses
    re.compile(r"\b\d{1,2}[/.]\d{1,2}(?:[/.]\d{2,4})?\b|\b\d{4}-\d{2}-\d{2}\b"),  # 14/3, 2026-03-14
    re.compile(rf"\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?\b"),  # March 14
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{_MONTHS})\b"),  # 14 March
    re.compile(rf"\d{{1,2}} ב(?:{_HE_MONTHS})"),  # 14 במרץ
]


@cache
def reviewed(case_id: str) -> Review:
    case = next(c for c in CASES if c.id == case_id)
    return SERVICE.review_sync(case.request())


def rewrite_text(case: Case) -> str:
    rewrite = reviewed(case.id).rewrite
    assert rewrite is not None
    return rewrite.text


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_rewrite_keeps_protected_tokens(case: Case) -> None:
    text = rewrite_text(case)
    tokens = protected_tokens(analyse(case.request()))
    missing = [t for t in tokens if t not in text]
    assert not missing, f"{case.id}: rewrite lost {missing}"


def _kept_tokens(text: str) -> list[str]:
    return sorted({m.group() for pattern in _KEEP for m in pattern.finditer(text)})


KEEP_PARAMS = [pytest.param(c, id=c.id) for c in CASES if _kept_tokens(c.text)]


@pytest.mark.parametrize("case", KEEP_PARAMS)
def test_rewrite_keeps_merge_fields_links_emails_and_dates(case: Case) -> None:
    """Same guarantee, checked with finders of our own (written-out dates like "May 8" too)."""
    text = rewrite_text(case)
    missing = [t for t in _kept_tokens(case.text) if t not in text]
    assert not missing, f"{case.id}: rewrite lost {missing}"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_rewrite_passes_the_engine(case: Case) -> None:
    first = reviewed(case.id)
    request = case.request()
    again = SERVICE.review_sync(
        ReviewRequest(
            text=rewrite_text(case),
            kind=request.kind,
            language=first.language,
            context=request.context,
        ),
        rewrite=False,
    )
    still = [
        f"{r.rule_id} ({r.reason})"
        for r in again.rules
        if r.verdict is Verdict.failed  # every rule that is not not_applicable must pass
    ]
    assert not still, f"{case.id}: the rewrite still fails {still}"


def test_dev_set_is_what_the_rewrite_tests_cover() -> None:
    assert len(CASES) >= 200
    assert len(KEEP_PARAMS) >= 30, "the dev set should exercise merge fields, links and dates"


# ----------------------------------------------------------------------------- fresh drafts

FAILING_EN = (
    "Hi {{first_name}}, I came across {{company}} and would love to connect. Our payroll "
    "platform cuts errors by 40%; see https://payloop.example/demo or write to "
    "sales@payloop.example. Can we book a 20-minute demo on 14/3?"
)
FAILING_HE = (
    "היי {{first_name}}, נתקלתי בפרופיל שלך ואשמח להתחבר. המערכת שלנו חוסכת למשרדים כמו "
    "{{company}} עשר שעות בשבוע, פרטים ב-https://payloop.example/he. מתי נוח לך לשיחה "
    "קצרה ב-14/3?"
)
FAILING_NOTES_HE = (
    "כנס יזמים\n- חילקתי 50 כרטיסי ביקור ואספתי 40 כרטיסים.\n"
    "- עשיתי לכולם את הפיץ' על המערכת שלנו.\n- אוסיף את כולם לרשימת התפוצה."
)
PASSING_EN = (
    "Hi Ruth, I loved your panel at FinTech Week on open banking. What made you move from "
    "compliance into product?"
)


def review(text: str, kind: Kind = Kind.template, *, rewrite: bool = True) -> Review:
    return SERVICE.review_sync(ReviewRequest(text=text, kind=kind), rewrite=rewrite)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        pytest.param(FAILING_EN, Kind.template, id="en"),
        pytest.param(FAILING_HE, Kind.template, id="he"),
        pytest.param(FAILING_NOTES_HE, Kind.meeting_notes, id="he-notes"),
    ],
)
def test_rewrite_is_structural_with_a_note_and_named_changes(text: str, kind: Kind) -> None:
    result = review(text, kind)
    assert result.rewrite is not None
    assert result.rewrite.structural is True
    assert result.rewrite.note.strip()
    failed = {r.rule_id for r in result.rules if r.verdict is Verdict.failed}
    assert failed, "the draft fails rules, so the rewrite has something to change"
    assert result.rewrite.changes
    known = set(SERVICE.rulebook.ids)
    for change in result.rewrite.changes:
        assert change.description.strip()
        assert change.rule_id is None or change.rule_id in known
    named = {c.rule_id for c in result.rewrite.changes if c.rule_id is not None}
    assert named & failed, "the changes name the failed rules they fix"
    assert result.rewrite.text != text


def test_every_failed_rule_of_a_message_is_named_by_a_change() -> None:
    result = review(FAILING_EN)
    assert result.rewrite is not None
    failed = {r.rule_id for r in result.rules if r.verdict is Verdict.failed}
    named = {c.rule_id for c in result.rewrite.changes}
    assert failed <= named, f"not named: {failed - named}"


@pytest.mark.parametrize("text", [FAILING_EN, FAILING_HE])
def test_rewrite_of_fresh_draft_keeps_tokens_and_passes(text: str) -> None:
    result = review(text)
    assert result.rewrite is not None
    for token in _kept_tokens(text):
        assert token in result.rewrite.text, token
    again = review(result.rewrite.text, rewrite=False)
    assert [r.rule_id for r in again.rules if r.verdict is Verdict.failed] == []


@pytest.mark.parametrize("text", [FAILING_EN, FAILING_HE, PASSING_EN])
def test_rewrite_false_gives_no_rewrite(text: str) -> None:
    result = review(text, rewrite=False)
    assert result.rewrite is None
    with_rewrite = review(text)
    assert with_rewrite.rewrite is not None
    # Asking for no rewrite changes nothing else.
    assert result.model_dump(exclude={"rewrite"}) == with_rewrite.model_dump(exclude={"rewrite"})


def _foreign_words(rewrite: str, draft: str, word: re.Pattern[str]) -> list[str]:
    """Words of the other script in the rewrite, outside [[SLOTS]], that the draft lacks."""
    return [w for w in word.findall(SLOT.sub(" ", rewrite)) if w not in draft]


HE_PARAMS = [pytest.param(c, id=c.id) for c in CASES if c.language is Language.he]
EN_PARAMS = [pytest.param(c, id=c.id) for c in CASES if c.language is Language.en]


@pytest.mark.parametrize("case", HE_PARAMS)
def test_hebrew_draft_gets_hebrew_rewrite(case: Case) -> None:
    result = reviewed(case.id)
    assert result.language is Language.he
    assert result.rewrite is not None
    assert HEBREW_WORD.search(result.rewrite.text)
    assert HEBREW_WORD.search(result.rewrite.note)
    for change in result.rewrite.changes:
        assert HEBREW_WORD.search(change.description), change.description
    foreign = _foreign_words(result.rewrite.text, case.text, LATIN_WORD)
    assert not foreign, f"English added to a Hebrew rewrite: {foreign}"


@pytest.mark.parametrize("case", EN_PARAMS)
def test_english_draft_gets_english_rewrite(case: Case) -> None:
    result = reviewed(case.id)
    assert result.rewrite is not None
    assert not HEBREW_WORD.search(result.rewrite.note)
    foreign = _foreign_words(result.rewrite.text, case.text, HEBREW_WORD)
    assert not foreign, f"Hebrew added to an English rewrite: {foreign}"


def test_dev_set_has_both_languages() -> None:
    assert len(HE_PARAMS) >= 50 and len(EN_PARAMS) >= 50
