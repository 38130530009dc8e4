"""Findings point at the exact text (code points and UTF-16), only for failed rules; the score
follows the documented formula (coach.engines.rules.engine.score)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coach.engines.rules.engine import SEVERITY_WEIGHT, score
from coach.models import Kind, Review, ReviewRequest, RuleResult, Severity, Verdict
from coach.service import ReviewService

SERVICE = ReviewService()


def utf16_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-16-le")) // 2


FAILING = [
    pytest.param(
        "🎉🎉 Hi Sam! 👋 Our payroll platform 🚀 cuts errors by 40% for restaurants like yours. "
        "Want a 20-minute demo on Thursday? 🙏",
        Kind.message,
        "Our payroll platform",
        id="en-emoji-pitch",
    ),
    pytest.param(
        "היי רונית 👋 המערכת שלנו 🚀 חוסכת למשרדי רואי חשבון עשר שעות בשבוע. "
        "אשמח להראות לך דמו קצר ביום שלישי 🙏",
        Kind.message,
        "המערכת שלנו",
        id="he-emoji-pitch",
    ),
    pytest.param(
        "Hi 👨‍👩‍👧 team! 💼 I came across your profile 😀 and would love to connect. "
        "🤝 Hope this finds you well! 🌟",
        Kind.message,
        None,
        id="en-zwj-emoji-generic",
    ),
    pytest.param(
        "\u200fשלום 🙂,\u200f נתקלתי בפרופיל שלך 👀 ואשמח להתחבר. "
        "\u202bאנחנו עוזרים לעסקים כמו שלך להגדיל מכירות 📈 עם ה-CRM שלנו.\u202c",
        Kind.message,
        "אנחנו עוזרים לעסקים",
        id="he-rtl-marks-mixed",
    ),
    pytest.param(
        "Hi {{first_name}} 👋, we help teams like {{company}} ship 2x faster 🚀 with our CI "
        "platform. Book a demo: https://example.com/demo?ref=📧",
        Kind.template,
        "we help teams like",
        id="en-template-emoji-url",
    ),
    pytest.param(
        "כנס יזמים 🎤\n- חילקתי 50 כרטיסי ביקור 😅 ואספתי 40 כרטיסים.\n"
        "- עשיתי לכולם את הפיץ' 💪 על המערכת שלנו.",
        Kind.meeting_notes,
        "הפיץ'",
        id="he-notes-emoji",
    ),
]


def review(text: str, kind: Kind = Kind.message) -> Review:
    return SERVICE.review_sync(ReviewRequest(text=text, kind=kind), rewrite=False)


@pytest.mark.parametrize(("text", "kind", "pitch"), FAILING)
def test_spans_quote_the_text_in_code_points_and_utf16(
    text: str, kind: Kind, pitch: str | None
) -> None:
    result = review(text, kind)
    assert result.findings, "these drafts fail rules, so they have findings"
    encoded = text.encode("utf-16-le")
    for finding in result.findings:
        span = finding.span
        assert 0 <= span.start < span.end <= len(text)
        assert span.quote == text[span.start : span.end]
        assert span.start_utf16 == utf16_offset(text, span.start)
        assert span.end_utf16 == utf16_offset(text, span.end)
        # What a browser would slice with the UTF-16 offsets is the same quote.
        browser = encoded[2 * span.start_utf16 : 2 * span.end_utf16].decode("utf-16-le")
        assert browser == span.quote


@pytest.mark.parametrize(("text", "kind", "pitch"), FAILING)
def test_findings_only_for_failed_rules(text: str, kind: Kind, pitch: str | None) -> None:
    result = review(text, kind)
    failed = {r.rule_id for r in result.rules if r.verdict is Verdict.failed}
    assert failed
    assert {f.rule_id for f in result.findings} <= failed
    for rule_id in failed:
        assert any(f.rule_id == rule_id for f in result.findings), f"{rule_id} has no finding"
    severity = {r.rule_id: r.severity for r in result.rules}
    for finding in result.findings:
        assert finding.severity is severity[finding.rule_id]
        assert finding.message.strip() and finding.suggestion.strip()


PITCHES = [p for p in FAILING if p.values[2] is not None]


@pytest.mark.parametrize(("text", "kind", "pitch"), PITCHES)
def test_pitch_finding_points_at_the_pitch(text: str, kind: Kind, pitch: str) -> None:
    result = review(text, kind)
    assert result.verdict("no-cold-pitch") is Verdict.failed
    at = text.index(pitch)
    spans = [f.span for f in result.findings if f.rule_id == "no-cold-pitch"]
    assert any(s.start <= at < s.end for s in spans), (pitch, [s.quote for s in spans])


def test_fake_personalisation_finding_points_at_the_merge_fields() -> None:
    text = (
        "Hi {{first_name}} 👋, I came across {{company}} and would love to connect. We help "
        "businesses grow with our marketing services."
    )
    result = review(text, Kind.template)
    assert result.verdict("quality-over-quantity") is Verdict.failed
    quotes = [f.span.quote for f in result.findings if f.rule_id == "quality-over-quantity"]
    assert any("{{company}}" in q or "{{first_name}}" in q for q in quotes), quotes


ALL_PASS = [
    pytest.param(
        "Hi Ruth 👋, I loved your panel at FinTech Week on open banking 🏦, especially the point "
        "about consent fatigue. What made you move from compliance into product?",
        id="en",
    ),
    pytest.param(
        "היי נועה 🙂, כשנפגשנו בכנס הפינטק סיפרת שאתם מתרחבים לאירופה 🇪🇺. "
        "איך מתקדם הגיוס לצוות בברלין?",
        id="he",
    ),
]


@pytest.mark.parametrize("text", ALL_PASS)
def test_all_pass_draft_scores_100_with_no_findings(text: str) -> None:
    result = review(text)
    assert all(r.verdict is not Verdict.failed for r in result.rules), [
        (r.rule_id, r.verdict.value) for r in result.rules
    ]
    assert result.findings == []
    assert result.score == 100


def expected_score(result: Review) -> int:
    """The documented formula: 100 minus, per failed rule, the severity's weight scaled by the
    engine's confidence; rounded and kept within 0..100."""
    penalty = sum(
        SEVERITY_WEIGHT[r.severity] * r.confidence
        for r in result.rules
        if r.verdict is Verdict.failed
    )
    return max(0, min(100, round(100 - penalty)))


@pytest.mark.parametrize(("text", "kind", "pitch"), FAILING)
def test_failing_draft_scores_lower_by_the_formula(
    text: str, kind: Kind, pitch: str | None
) -> None:
    result = review(text, kind)
    assert result.score < 100
    assert result.score == expected_score(result)


def test_more_failures_cost_more() -> None:
    one = review(
        "Hi Ruth, I loved your panel at FinTech Week on open banking. What made you move from "
        "compliance into product? Could you introduce me to your head of procurement?"
    )
    many = review(
        "Hi there, I came across your profile. Our payroll platform cuts errors by 40%. "
        "Want a 20-minute demo on Thursday?"
    )
    n_one = sum(r.verdict is Verdict.failed for r in one.rules)
    n_many = sum(r.verdict is Verdict.failed for r in many.rules)
    assert 0 < n_one < n_many
    assert many.score < one.score < 100


def _result(rule_id: str, verdict: Verdict, severity: Severity, confidence: float) -> RuleResult:
    return RuleResult(
        rule_id=rule_id, verdict=verdict, confidence=confidence, reason="r", severity=severity
    )


def test_score_formula_directly() -> None:
    assert SEVERITY_WEIGHT[Severity.error] > SEVERITY_WEIGHT[Severity.warning]
    assert SEVERITY_WEIGHT[Severity.warning] > SEVERITY_WEIGHT[Severity.suggestion] > 0
    passed = [_result("a", Verdict.passed, Severity.error, 0.9)]
    assert score(passed) == 100
    not_applicable = [_result("a", Verdict.not_applicable, Severity.error, 1.0)]
    assert score(not_applicable) == 100
    one_error = [_result("a", Verdict.failed, Severity.error, 1.0)]
    assert score(one_error) == 100 - SEVERITY_WEIGHT[Severity.error]
    half = [_result("a", Verdict.failed, Severity.warning, 0.5)]
    assert score(half) == round(100 - SEVERITY_WEIGHT[Severity.warning] * 0.5)
    zero_confidence = [_result("a", Verdict.failed, Severity.error, 0.0)]
    assert score(zero_confidence) == 100
    many = [_result(str(i), Verdict.failed, Severity.error, 1.0) for i in range(10)]
    assert score(many) == 0


_PIECES = [
    "Hi Dana,",
    "היי דנה,",
    "👋",
    "🎉🎉",
    "👨‍👩‍👧",
    "\u200f",
    "Our CRM platform cuts onboarding time in half.",
    "המערכת שלנו חוסכת חצי מזמן ההטמעה.",
    "Can we hop on a quick call this week?",
    "תוכל להכיר לי את מנהל הרכש שלכם?",
    "I came across your profile and would love to connect.",
    "נתקלתי בפרופיל שלך ואשמח להתחבר.",
    "I have 15 years of experience and our agency won three awards.",
    "{{first_name}}",
    "{{company}}",
    "https://example.com/x",
    "\n",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8))
def test_spans_hold_for_any_mix_of_scripts_and_emoji(pieces: list[str]) -> None:
    text = " ".join(pieces)
    if not text.strip():
        return
    for kind in (Kind.message, Kind.template):
        result = review(text, kind)
        failed = {r.rule_id for r in result.rules if r.verdict is Verdict.failed}
        for finding in result.findings:
            span = finding.span
            assert finding.rule_id in failed
            assert span.quote == text[span.start : span.end]
            assert span.start_utf16 == utf16_offset(text, span.start)
            assert span.end_utf16 == utf16_offset(text, span.end)
