"""The end-of-run summary: counts, rule tallies, the bounded worst list, failures."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from coach.batch.outputs import OutputRow
from coach.batch.summary import (
    Summary,
    SummaryBuilder,
    escape_markdown,
    render_summary,
    summary_markdown,
)
from coach.models import Kind, Review, ReviewRequest, RuleResult, Severity, Verdict
from coach.service import ReviewService

BAD = "Could you introduce me to your head of procurement?"
GOOD = (
    "Hi Dana, I enjoyed your talk on onboarding at DevDays. "
    "How are you measuring time-to-value now?"
)


@pytest.fixture(scope="module")
def reviews() -> dict[str, Review]:
    service = ReviewService()
    return {
        name: service.review_sync(ReviewRequest(text=text, kind=Kind.message))
        for name, text in (("bad", BAD), ("good", GOOD))
    }


def done(key: str, review: Review, duplicate_of: str | None = None) -> OutputRow:
    return OutputRow(key, {"path": key}, "done", review, attempts=1, duplicate_of=duplicate_of)


def with_score(review: Review, score: int, errors: int) -> Review:
    """A copy of `review` with `score` and `errors` failed error-level rules."""
    rules = [
        RuleResult(rule_id=f"r{i}", verdict=Verdict.failed, confidence=1, reason="x", severity=sev)
        for i, sev in enumerate([Severity.error] * errors + [Severity.warning])
    ]
    return review.model_copy(update={"score": score, "rules": rules})


def test_counts_rules_and_failures(reviews: dict[str, Review]) -> None:
    builder = SummaryBuilder(worst=2)
    builder.add(done("a", reviews["bad"]))
    builder.add(done("b", reviews["good"]))
    builder.add(done("c", reviews["bad"], duplicate_of="a"))
    for n in range(4):
        builder.add(OutputRow(f"f{n}", {"path": f"f{n}"}, "failed", None, error="timeout"))
    summary = builder.build()
    assert (summary.total, summary.done, summary.failed, summary.reused) == (7, 3, 4, 1)
    assert summary.failures == [("f0", "timeout"), ("f1", "timeout")]  # first N only
    failed_bad = {r.rule_id for r in reviews["bad"].rules if r.verdict is Verdict.failed}
    by_rule = {r.rule_id: r for r in summary.rules}
    assert set(by_rule) == {r.rule_id for r in reviews["bad"].rules}
    for rule_id in failed_bad:
        assert by_rule[rule_id].failed >= 2
    for count in summary.rules:
        assert count.failed + count.passed + count.not_applicable == 3
    failed_counts = [r.failed for r in summary.rules]
    assert failed_counts == sorted(failed_counts, reverse=True)
    assert [w.key for w in summary.worst] == ["a", "c"]  # same score: by key
    assert summary.worst[0].failed_rules
    assert summary.worst[0].worst_severity in {"error", "warning", "suggestion"}
    assert summary.mean_score is not None


def test_worst_list_is_bounded_and_ordered(reviews: dict[str, Review]) -> None:
    base = reviews["bad"]
    rng = random.Random(7)
    cases = [(f"k{n:04d}", rng.randint(0, 100), rng.randint(0, 3)) for n in range(600)]
    builder = SummaryBuilder(worst=10)
    for key, score, errors in cases:
        builder.add(done(key, with_score(base, score, errors)))
    assert len(builder._heap) == 10  # the heap never grows past N
    expected = sorted(cases, key=lambda c: (c[1], -c[2], c[0]))[:10]
    assert [(w.key, w.score) for w in builder.build().worst] == [(k, s) for k, s, _ in expected]
    worst = builder.build().worst[0]
    assert worst.worst_severity == ("error" if expected[0][2] else "warning")


def test_rendering_shows_keys_and_errors_only(reviews: dict[str, Review]) -> None:
    builder = SummaryBuilder()
    builder.add(done("tpl/a_b*.txt", reviews["bad"]))
    builder.add(OutputRow("x.jsonl:line=3", {}, "failed", None, error="invalid JSON"))
    summary = builder.build()
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_summary(summary, console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "tpl/a_b*.txt" in shown and "invalid JSON" in shown
    assert BAD not in shown and "procurement" not in shown
    text = summary_markdown(summary)
    assert text.startswith("## Summary")
    assert "tpl/a\\_b\\*.txt" in text
    assert "| rule | failed | passed | n/a |" in text
    assert "procurement" not in text


def test_empty_summary() -> None:
    summary = SummaryBuilder().build()
    assert summary == Summary(0, 0, 0, 0, [], [], [], 0, None)
    assert "- items: 0" in summary_markdown(summary)


def test_escape_markdown() -> None:
    assert escape_markdown("a_[b](c)|`d`\nx") == "a\\_\\[b\\]\\(c\\)\\|\\`d\\` x"
