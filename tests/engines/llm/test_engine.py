"""The LLM engine end to end against a respx-mocked endpoint: validation and re-anchoring,
usage and cost, retries and the deadline, named failures with fallback, the rewrite check,
and the review cache."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from llm_fakes import (
    ASK_DRAFT,
    CHAT_URL,
    DEFAULT_RULE_IDS,
    MODEL,
    FakeSleep,
    completion,
    copy_prompts,
    custom_rulebook,
    error,
    finding,
    fresh_logging,
    make_engine,
    make_request,
    make_settings,
    mock_llm,
    review_body,
    run_review,
    run_reviews,
    sent,
    verdict,
)

from coach.engines.llm.cache import MemoryCache
from coach.engines.llm.call import CallStats, Completion, ModelCaller
from coach.engines.llm.client import make_client
from coach.engines.rules import RuleEngine
from coach.errors import ConfigError
from coach.models import Kind, Review, ReviewRequest, Verdict
from coach.rulebook import default_rulebook

QUOTE = "introduce me to your head of procurement"


@pytest.fixture(autouse=True)
def _live_logging() -> Iterator[None]:
    with fresh_logging():
        yield


def rules_review(request: ReviewRequest, *, rewrite: bool = True) -> Review:
    return RuleEngine(default_rulebook()).review_sync(request, rewrite=rewrite)


def assert_degraded(review: Review, code: str, request: ReviewRequest) -> None:
    assert review.engine == "rules"
    assert review.degraded is True
    assert review.degraded_reason is not None
    assert review.degraded_reason.startswith(f"{code}: "), review.degraded_reason
    assert all(r.source == "rules" for r in review.rules)
    expected = rules_review(request)
    assert [(r.rule_id, r.verdict) for r in review.rules] == [
        (r.rule_id, r.verdict) for r in expected.rules
    ]


def utf16(text: str, index: int) -> int:
    return len(text[:index].encode("utf-16-le")) // 2


# --- success ---------------------------------------------------------------------------------


def test_success_is_the_models_review() -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        review = run_review(make_engine(), request)
    assert route.call_count == 1
    assert review.engine == "llm" and not review.degraded and review.degraded_reason is None
    assert [r.rule_id for r in review.rules] == DEFAULT_RULE_IDS
    assert all(r.source == "llm" for r in review.rules)
    assert review.verdict("give-first") is Verdict.failed
    assert review.verdict("no-cold-pitch") is Verdict.passed
    assert review.summary == "The draft asks for an intro and offers nothing."
    assert review.suggestions.questions == ["How is the new team settling in?"]
    assert review.rewrite is not None and review.rewrite.structural is False
    assert review.rewrite.text == "Hi Dana, how is the procurement reorganisation going?"
    assert MODEL in review.rewrite.note
    assert review.score < 100
    (only,) = review.findings
    assert only.rule_id == "give-first"
    assert ASK_DRAFT[only.span.start : only.span.end] == QUOTE == only.span.quote


def test_findings_are_reanchored_with_our_offsets_including_utf16() -> None:
    draft = f"היי דנה 👋 Could you {QUOTE}? 🙏 תודה רבה"
    body = review_body(
        findings=[
            # Offsets a model might invent are ignored; ours come from the quote.
            finding("give-first", "תודה רבה", start=0, end=3),
            finding("give-first", QUOTE, start=999, end=1000),
        ]
    )
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(draft, language="he"))
    assert [f.span.quote for f in review.findings] == [QUOTE, "תודה רבה"]  # sorted by position
    for item in review.findings:
        start = draft.index(item.span.quote)
        assert (item.span.start, item.span.end) == (start, start + len(item.span.quote))
        assert item.span.start_utf16 == utf16(draft, item.span.start)
        assert item.span.end_utf16 == utf16(draft, item.span.end)
    quote, hebrew = review.findings
    assert quote.span.start_utf16 == quote.span.start + 1  # one emoji before it
    assert hebrew.span.start_utf16 == hebrew.span.start + 2  # two emoji before it
    assert (
        draft.encode("utf-16-le")[hebrew.span.start_utf16 * 2 : hebrew.span.end_utf16 * 2].decode(
            "utf-16-le"
        )
        == "תודה רבה"
    )


def test_unknown_rule_ids_are_dropped() -> None:
    rules = [verdict(rule_id) for rule_id in DEFAULT_RULE_IDS]
    rules[1] = verdict("give-first", "fail")
    rules.append(verdict("made-up-rule", "fail"))
    body = review_body(
        rules=rules, findings=[finding("made-up-rule", QUOTE), finding("give-first", QUOTE)]
    )
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    assert [r.rule_id for r in review.rules] == DEFAULT_RULE_IDS
    assert [f.rule_id for f in review.findings] == ["give-first"]
    assert review.verdict("made-up-rule") is None


def test_findings_whose_quote_is_not_in_the_draft_are_dropped() -> None:
    body = review_body(
        findings=[
            finding("give-first", "please buy our enterprise plan"),
            finding("give-first", QUOTE),
            finding("give-first", "   "),
        ]
    )
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    assert [f.span.quote for f in review.findings] == [QUOTE]


def test_a_quote_differing_in_case_and_spacing_is_found_and_quoted_from_the_draft() -> None:
    body = review_body(findings=[finding("give-first", "COULD YOU   introduce\nme")])
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    (only,) = review.findings
    assert only.span.quote == "could you introduce me"
    assert ASK_DRAFT[only.span.start : only.span.end] == "could you introduce me"


def test_a_repeated_quote_points_at_successive_occurrences() -> None:
    draft = "Could you call me? Thanks. Could you call me?"
    body = review_body(
        findings=[
            finding("give-first", "Could you call me?"),
            finding("give-first", "Could you call me?"),
        ]
    )
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(draft))
    assert [f.span.start for f in review.findings] == [0, draft.rindex("Could")]


def test_findings_for_rules_that_did_not_fail_are_dropped() -> None:
    body = review_body(findings=[finding("no-cold-pitch", QUOTE), finding("give-first", QUOTE)])
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    assert [f.rule_id for f in review.findings] == ["give-first"]


def test_missing_verdicts_are_filled_from_the_rule_engine_and_marked() -> None:
    request = make_request(ASK_DRAFT)
    body = review_body(rules=[verdict("no-cold-pitch", "pass")], findings=[])
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(), request)
    ours = {r.rule_id: r for r in rules_review(request).rules}
    assert [r.rule_id for r in review.rules] == DEFAULT_RULE_IDS
    for result in review.rules:
        if result.rule_id == "no-cold-pitch":
            assert result.source == "llm"
        else:
            assert result.source == "rules"
            assert result.verdict is ours[result.rule_id].verdict
            assert result.reason == ours[result.rule_id].reason
    assert review.verdict("give-first") is Verdict.failed  # the rule engine's call


def test_the_rulebook_in_force_decides_which_verdicts_count() -> None:
    draft = "Hi Sam, let's leverage synergies. Could you " + QUOTE + "?"
    rules = [verdict(rule_id) for rule_id in DEFAULT_RULE_IDS]  # includes the disabled rule
    rules.append(verdict("no-buzzwords", "fail", "Synergy-speak."))
    body = review_body(rules=rules, findings=[finding("no-buzzwords", "leverage synergies")])
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(rulebook=custom_rulebook()), make_request(draft))
    assert [r.rule_id for r in review.rules] == [*DEFAULT_RULE_IDS[:4], "no-buzzwords"]
    assert review.verdict("volunteer-to-lead") is None
    buzz = next(r for r in review.rules if r.rule_id == "no-buzzwords")
    assert (buzz.verdict, buzz.source) == (Verdict.failed, "llm")
    assert [f.span.quote for f in review.findings] == ["leverage synergies"]
    assert review.rulebook_version == "acme-7+default@2026.11.1"


def test_a_verdict_for_a_rule_that_does_not_apply_to_the_kind_is_not_taken() -> None:
    rules = [verdict(rule_id) for rule_id in DEFAULT_RULE_IDS[:4]]
    rules.append(verdict("no-buzzwords", "fail"))
    body = review_body(rules=rules, findings=[])
    request = make_request("Met Sam; she leads synergies at Acme.", kind=Kind.meeting_notes)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        review = run_review(make_engine(rulebook=custom_rulebook()), request)
    buzz = next(r for r in review.rules if r.rule_id == "no-buzzwords")
    assert (buzz.verdict, buzz.source) == (Verdict.not_applicable, "rules")


def test_confidence_is_clamped_and_a_blank_reason_is_replaced() -> None:
    request = make_request(ASK_DRAFT)
    rules = [verdict(rule_id) for rule_id in DEFAULT_RULE_IDS]
    rules[0] = {**verdict("no-cold-pitch", "pass", "   "), "confidence": 7.5}
    rules[1] = {**verdict("give-first", "fail"), "confidence": -2}
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(review_body(rules=rules)))
        review = run_review(make_engine(), request)
    pitch, give = review.rules[0], review.rules[1]
    assert (pitch.confidence, give.confidence) == (1.0, 0.0)
    assert pitch.reason == rules_review(request).rules[0].reason
    assert pitch.source == "llm"


# --- usage -----------------------------------------------------------------------------------


def test_usage_reports_tokens_calls_latency_and_cost() -> None:
    response = completion(prompt_tokens=1200, completion_tokens=300, cached_tokens=1024)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=response)
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    usage = review.usage
    assert usage is not None
    assert (usage.model, usage.prompt_version) == (MODEL, "v1")
    assert (usage.tokens_in, usage.tokens_out, usage.tokens_cached) == (1200, 300, 1024)
    assert usage.calls == 1
    assert usage.latency_ms > 0
    assert usage.cache_hit is False
    # gpt-4o-mini: $0.15 / 1M input, $0.075 / 1M cached input, $0.60 / 1M output.
    expected = ((1200 - 1024) * 0.15 + 1024 * 0.075 + 300 * 0.60) / 1_000_000
    assert usage.cost_usd == pytest.approx(expected, abs=1e-6)


def test_cost_is_null_for_a_model_without_a_price() -> None:
    settings = make_settings(llm_model="mystery-model-9000")
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        review = run_review(make_engine(settings), make_request(ASK_DRAFT))
    assert sent(route)["model"] == "mystery-model-9000"
    assert review.usage is not None
    assert review.usage.model == "mystery-model-9000"
    assert review.usage.tokens_in == 1200
    assert review.usage.cost_usd is None


def test_cost_uses_a_configured_price_table(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  house-model: {input: 1.0, cached_input: 0.5, output: 2.0}\n")
    settings = make_settings(llm_model="house-model", llm_prices_file=prices)
    response = completion(prompt_tokens=1000, completion_tokens=500, cached_tokens=0)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=response)
        review = run_review(make_engine(settings), make_request(ASK_DRAFT))
    assert review.usage is not None
    assert review.usage.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1_000_000)


# --- retries and the deadline ----------------------------------------------------------------


def test_429_with_retry_after_waits_that_long_then_succeeds() -> None:
    sleep = FakeSleep()
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[error(429, "rate_limit_exceeded", retry_after="2"), completion()]
        )
        review = run_review(engine, make_request(ASK_DRAFT))
    assert sleep.waits == [2.0]
    assert route.call_count == 2
    assert review.engine == "llm" and not review.degraded
    assert review.usage is not None and review.usage.calls == 2


def test_retry_after_ms_is_honoured_and_wins_over_retry_after() -> None:
    sleep = FakeSleep()
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[
                error(429, "rate_limit_exceeded", retry_after_ms="1500"),
                error(503, retry_after_ms="250", retry_after="7"),
                completion(),
            ]
        )
        review = run_review(engine, make_request(ASK_DRAFT))
    assert sleep.waits == [1.5, 0.25]
    assert route.call_count == 3
    assert review.engine == "llm"


def test_retry_after_as_an_http_date_is_honoured() -> None:
    sleep = FakeSleep()
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=4)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(
            side_effect=[error(429, "rate_limit_exceeded", retry_after=when), completion()]
        )
        review = run_review(engine, make_request(ASK_DRAFT))
    (wait,) = sleep.waits
    assert 2.0 < wait <= 4.0
    assert review.engine == "llm"


def test_a_retry_after_beyond_the_deadline_is_not_waited_for() -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=1.0), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[error(429, "rate_limit_exceeded", retry_after="30"), completion()]
        )
        review = run_review(engine, request)
    assert sleep.waits == []
    assert route.call_count == 1
    assert_degraded(review, "rate_limited", request)


def test_429s_that_outlast_the_attempts_degrade_to_rate_limited() -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=3)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            return_value=error(429, "rate_limit_exceeded", retry_after="1")
        )
        review = run_review(engine, request)
    assert route.call_count == 3
    assert sleep.waits == [1.0, 1.0]
    assert_degraded(review, "rate_limited", request)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff_up_to_the_attempt_limit(status: int) -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=30), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=error(status))
        review = run_review(engine, request)
    assert route.call_count == 4
    assert len(sleep.waits) == 3
    # Exponential backoff with jitter: each wait is within its growing ceiling.
    for attempt, wait in enumerate(sleep.waits, start=1):
        assert 0 <= wait <= 0.5 * 2 ** (attempt - 1)
    assert_degraded(review, "provider_error", request)
    assert review.usage is not None and review.usage.calls == 4


def test_5xx_until_the_deadline_degrades_within_the_deadline() -> None:
    # Real sleeps: the deadline, not the attempt limit, ends this one.
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=0.6, llm_max_attempts=10))
    started = time.monotonic()
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=error(500))
        review = run_review(engine, request)
    elapsed = time.monotonic() - started
    assert elapsed < 0.6 + 0.5
    assert 1 <= route.call_count < 10
    assert_degraded(review, "provider_error", request)


def test_a_server_that_hangs_is_cut_at_the_deadline() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return completion()

    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=0.3, llm_timeout_s=30))
    started = time.monotonic()
    with mock_llm() as router:
        router.post(CHAT_URL).mock(side_effect=hang)
        review = run_review(engine, request)
    assert time.monotonic() - started < 2.0
    assert_degraded(review, "timeout", request)


def test_a_timeout_is_retried_then_degrades_to_timeout() -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=3)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=httpx.ReadTimeout("slow"))
        review = run_review(engine, request)
    assert route.call_count == 3
    assert len(sleep.waits) == 2
    assert_degraded(review, "timeout", request)


def test_a_timeout_then_success_is_the_models_review() -> None:
    sleep = FakeSleep()
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=3)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=[httpx.ReadTimeout("slow"), completion()])
        review = run_review(engine, make_request(ASK_DRAFT))
    assert route.call_count == 2 and len(sleep.waits) == 1
    assert review.engine == "llm"


def test_connection_errors_are_retried_then_degrade() -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=3)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=httpx.ConnectError("refused"))
        review = run_review(engine, request)
    assert route.call_count == 3
    assert_degraded(review, "provider_error", request)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_is_not_retried(status: int) -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=[error(status, "bad_request"), completion()])
        review = run_review(engine, request)
    assert route.call_count == 1
    assert sleep.waits == []
    assert_degraded(review, "provider_error", request)
    assert review.degraded_reason is not None and str(status) in review.degraded_reason


def test_insufficient_quota_is_not_retried() -> None:
    sleep = FakeSleep()
    request = make_request(ASK_DRAFT)
    engine = make_engine(make_settings(llm_deadline_s=10), sleep=sleep, max_attempts=4)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[error(429, "insufficient_quota", retry_after="1"), completion()]
        )
        review = run_review(engine, request)
    assert route.call_count == 1
    assert sleep.waits == []
    assert_degraded(review, "insufficient_quota", request)


# --- invalid output, refusal, truncation, content filter -------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param('{"rules": [', id="not-json"),
        pytest.param('{"rules": "all good"}', id="wrong-shape"),
        pytest.param("Sure! Here is the review: ...", id="prose"),
    ],
)
def test_invalid_json_gets_exactly_one_repair_call(bad: str) -> None:
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[
                completion(bad, prompt_tokens=1000, completion_tokens=50, cached_tokens=0),
                completion(prompt_tokens=1100, completion_tokens=300, cached_tokens=1024),
            ]
        )
        review = run_review(make_engine(), make_request(ASK_DRAFT))
    assert route.call_count == 2
    first, second = sent(route, 0)["messages"], sent(route, 1)["messages"]
    assert second[: len(first)] == first
    assert len(second) == len(first) + 2
    assert second[-2] == {"role": "assistant", "content": bad}
    assert second[-1]["role"] == "user"
    assert "not valid JSON" in second[-1]["content"]
    assert sent(route, 1)["response_format"] == sent(route, 0)["response_format"]
    assert review.engine == "llm" and not review.degraded
    assert review.usage is not None
    assert review.usage.calls == 2
    assert (review.usage.tokens_in, review.usage.tokens_out) == (2100, 350)
    assert review.usage.tokens_cached == 1024


def test_invalid_twice_degrades_to_invalid_output_after_two_calls() -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion("not json at all"))
        review = run_review(make_engine(), request)
    assert route.call_count == 2
    assert_degraded(review, "invalid_output", request)
    assert review.usage is not None and review.usage.calls == 2


@pytest.mark.parametrize(
    ("response", "code"),
    [
        pytest.param(completion(refusal="I can't help with that."), "refusal", id="refusal"),
        pytest.param(completion('{"rules": [', finish_reason="length"), "truncated", id="length"),
        pytest.param(completion("", finish_reason="content_filter"), "content_filter", id="filter"),
    ],
)
def test_named_failures_degrade_without_retry_or_repair(
    response: httpx.Response, code: str
) -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=response)
        review = run_review(make_engine(), request)
    assert route.call_count == 1
    assert_degraded(review, code, request)


def test_a_degraded_review_keeps_the_rewrite_flag_and_the_rule_engines_rewrite() -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=error(400))
        with_rewrite = run_review(make_engine(), request)
        without = run_review(make_engine(), request, rewrite=False)
    assert with_rewrite.rewrite is not None and with_rewrite.rewrite.structural is True
    assert without.rewrite is None


# --- the rewrite check -----------------------------------------------------------------------

TEMPLATE = (
    "Hi {{first_name}}, I read your post https://example.com/onboarding on 14/03 and loved it. "
    f"Could you {QUOTE}?"
)


def _rewritten(draft: str, rewrite: str, **context: Any) -> Review:
    body = review_body(rewrite=rewrite)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=completion(body))
        return run_review(make_engine(), make_request(draft, **context))


def test_rewrite_check_reports_a_lost_merge_field_link_and_date() -> None:
    review = _rewritten(TEMPLATE, "Hi there, how is your week going?", kind=Kind.template)
    assert review.rewrite is not None and review.rewrite.check is not None
    check = review.rewrite.check
    assert check.passes is False
    assert check.missing == ["{{first_name}}", "https://example.com/onboarding", "14/03"]


def test_rewrite_check_reports_a_lost_recipient_name() -> None:
    draft = f"Hi Dana Levi, I loved your post on 14/03. Could you {QUOTE}?"
    rewrite = "Hi Dana, I loved your post on 14/03. How is the new team going?"
    review = _rewritten(draft, rewrite, recipient={"name": "Dana Levi"})
    assert review.rewrite is not None and review.rewrite.check is not None
    assert review.rewrite.check.missing == ["Dana Levi"]
    assert review.rewrite.check.passes is False


def test_rewrite_check_reports_rules_the_rewrite_still_fails() -> None:
    rewrite = (
        "Hi {{first_name}}, https://example.com/onboarding 14/03: our CRM cuts onboarding "
        "time in half. Can I send you pricing?"
    )
    review = _rewritten(TEMPLATE, rewrite, kind=Kind.template)
    assert review.rewrite is not None and review.rewrite.check is not None
    check = review.rewrite.check
    assert "no-cold-pitch" in check.failing_rules
    assert check.missing == []
    assert check.passes is False


def test_rewrite_check_passes_a_good_rewrite_that_keeps_everything() -> None:
    rewrite = (
        "Hi {{first_name}}, I read your post https://example.com/onboarding on 14/03 and loved "
        "it. How are you measuring onboarding success now? Happy to share our checklist if useful."
    )
    review = _rewritten(TEMPLATE, rewrite, kind=Kind.template)
    assert review.rewrite is not None and review.rewrite.check is not None
    assert review.rewrite.check.passes is True
    assert review.rewrite.check.failing_rules == [] and review.rewrite.check.missing == []


def test_rewrite_false_sends_rewrite_no_and_returns_no_rewrite() -> None:
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())  # it rewrites anyway
        no = run_review(make_engine(), make_request(ASK_DRAFT), rewrite=False)
        yes = run_review(make_engine(), make_request(ASK_DRAFT), rewrite=True)
    no_user, yes_user = sent(route, 0)["messages"][-1], sent(route, 1)["messages"][-1]
    assert "Rewrite: no" in no_user["content"] and "Rewrite: yes" not in no_user["content"]
    assert "Rewrite: yes" in yes_user["content"] and "Rewrite: no" not in yes_user["content"]
    assert no.rewrite is None
    assert yes.rewrite is not None
    assert no.engine == yes.engine == "llm"


# --- the cache -------------------------------------------------------------------------------


def test_a_cache_hit_makes_no_call_and_says_so() -> None:
    engine = make_engine()
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        first, second = run_reviews(engine, [request, request])
    assert route.call_count == 1
    assert first.usage is not None and second.usage is not None
    assert first.usage.cache_hit is False
    assert second.usage.cache_hit is True
    assert second.usage.tokens_in == first.usage.tokens_in
    assert second.model_dump(exclude={"usage"}) == first.model_dump(exclude={"usage"})


def _variant(name: str, tmp_path: Path, cache: MemoryCache) -> tuple[Any, ReviewRequest]:
    request = make_request(ASK_DRAFT)
    if name == "same":
        return make_engine(cache=cache), request
    if name == "rulebook":
        return make_engine(rulebook=custom_rulebook(), cache=cache), request
    if name == "prompt":
        prompts = copy_prompts(tmp_path)
        system = prompts / "review/v1/system.md"
        system.write_text(system.read_text("utf-8").replace("networking coach", "coach"))
        return make_engine(make_settings(prompts_dir=prompts), cache=cache), request
    if name == "model":
        return make_engine(make_settings(llm_model="gpt-4.1-mini"), cache=cache), request
    if name == "temperature":
        return make_engine(make_settings(llm_temperature=0.9), cache=cache), request
    if name == "context":
        return make_engine(cache=cache), make_request(ASK_DRAFT, relationship="established")
    if name == "kind":
        return make_engine(cache=cache), make_request(ASK_DRAFT, kind=Kind.template)
    if name == "draft":
        return make_engine(cache=cache), make_request(ASK_DRAFT + " ")
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("name", "calls"),
    [
        ("same", 1),
        ("rulebook", 2),
        ("prompt", 2),
        ("model", 2),
        ("temperature", 2),
        ("context", 2),
        ("kind", 2),
        ("draft", 2),
    ],
)
def test_what_the_cache_key_covers(name: str, calls: int, tmp_path: Path) -> None:
    cache = MemoryCache(size=16, ttl=60)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        run_review(make_engine(cache=cache), make_request(ASK_DRAFT))
        engine, request = _variant(name, tmp_path, cache)
        review = run_review(engine, request)
    assert route.call_count == calls
    assert review.usage is not None and review.usage.cache_hit is (calls == 1)


def test_the_rewrite_flag_is_part_of_the_key() -> None:
    engine = make_engine()
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())

        async def both() -> tuple[Review, Review]:
            try:
                return (
                    await engine.review(request, rewrite=True),
                    await engine.review(request, rewrite=False),
                )
            finally:
                await engine.aclose()

        with_rewrite, without = asyncio.run(both())
    assert route.call_count == 2
    assert with_rewrite.rewrite is not None and without.rewrite is None


def test_a_degraded_review_is_not_cached() -> None:
    engine = make_engine(make_settings(llm_max_attempts=1))
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=[error(500), completion(), completion()])
        degraded, fresh, cached = run_reviews(engine, [request, request, request])
    assert degraded.degraded and degraded.engine == "rules"
    assert fresh.engine == "llm" and not fresh.degraded
    assert route.call_count == 2
    assert cached.usage is not None and cached.usage.cache_hit is True


def test_a_zero_size_cache_stores_nothing() -> None:
    engine = make_engine(make_settings(cache_size=0))
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        run_reviews(engine, [request, request])
    assert route.call_count == 2


def test_the_persistent_cache_survives_a_new_engine_and_is_encrypted(tmp_path: Path) -> None:
    canary = "Hi Noa, canary-7f3e2 here: could you " + QUOTE + "?"
    settings = make_settings(cache_dir=tmp_path / "cache", cache_key=Fernet.generate_key().decode())
    request = make_request(canary)
    body = review_body(findings=[finding("give-first", "canary-7f3e2 here")])
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion(body))
        first = run_review(make_engine(settings), request)
        assert route.call_count == 1
        second = run_review(make_engine(settings), request)  # a new instance, new memory
        assert route.call_count == 1
    assert first.engine == second.engine == "llm"
    assert second.usage is not None and second.usage.cache_hit is True
    assert second.findings == first.findings
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files, "the persistent cache wrote nothing"
    for path in files:
        data = path.read_bytes()
        assert b"canary-7f3e2" not in data
        assert canary.encode() not in data
        assert b"give-first" not in data  # the whole review is encrypted, not just the draft
        assert "canary" not in str(path)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_the_persistent_cache_under_another_key_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    request = make_request(ASK_DRAFT)
    one = make_settings(cache_dir=tmp_path, cache_key=Fernet.generate_key().decode())
    two = make_settings(cache_dir=tmp_path, cache_key=Fernet.generate_key().decode())
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        run_review(make_engine(one), request)
        review = run_review(make_engine(two), request)
    assert route.call_count == 2
    assert review.engine == "llm" and review.usage is not None and not review.usage.cache_hit


def test_cache_dir_without_cache_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COACH_CACHE_KEY"):
        make_engine(make_settings(cache_dir=tmp_path))


def test_an_invalid_cache_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COACH_CACHE_KEY"):
        make_engine(make_settings(cache_dir=tmp_path, cache_key="not-a-fernet-key"))


# --- never a crash ---------------------------------------------------------------------------


def test_an_unexpected_exception_in_the_transport_degrades() -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(side_effect=RuntimeError("boom"))
        review = run_review(make_engine(), request)
    assert_degraded(review, "internal_error", request)
    assert review.degraded_reason is not None
    assert "RuntimeError" in review.degraded_reason
    assert "boom" not in review.degraded_reason  # class names only, never messages


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(200, text="<html>gateway</html>"), id="html"),
        pytest.param(httpx.Response(200, json={"choices": []}), id="no-choices"),
        pytest.param(httpx.Response(200, json={"choices": [{"index": 0}]}), id="no-message"),
        pytest.param(httpx.Response(200, json=[1, 2, 3]), id="a-list"),
    ],
)
def test_a_malformed_200_degrades(response: httpx.Response) -> None:
    request = make_request(ASK_DRAFT)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=response)
        review = run_review(make_engine(), request)
    assert review.degraded and review.engine == "rules"
    assert review.degraded_reason is not None


class _ExplodingCaller(ModelCaller):
    async def complete(
        self, request: dict[str, Any], *, deadline: float, stats: CallStats
    ) -> Completion:
        stats.calls += 1
        raise KeyError("surprise")


def test_an_unexpected_exception_in_the_caller_degrades_to_internal_error() -> None:
    request = make_request(ASK_DRAFT)
    settings = make_settings()
    engine = make_engine(settings, caller=_ExplodingCaller(make_client(settings), max_attempts=1))
    review = run_review(engine, request)
    assert_degraded(review, "internal_error", request)
    assert review.usage is not None and review.usage.calls == 1


class _FullDisk(io.StringIO):
    """A stderr whose writes fail, like a full disk or a closed pipe."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_a_failing_log_stream_never_breaks_a_review(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fallback logs a warning; a logging failure must not turn a fallback into a crash.
    request = make_request(ASK_DRAFT)
    monkeypatch.setattr(sys, "stderr", _FullDisk())
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=error(400))
        review = run_review(make_engine(), request)
    assert_degraded(review, "provider_error", request)
