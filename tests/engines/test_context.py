"""`context.relationship` and `context.thread` change verdicts where evals/LABELLING.md says so.

- no-cold-pitch: a sales answer fails to a `new` or `met` contact, passes to an `established`
  one, and passes when the thread shows the recipient asked for it.
- give-first: an ordinary ask to an `established` contact passes (the giving is in the history).
"""

from __future__ import annotations

from typing import Any

import pytest

from coach.models import Kind, ReviewRequest, Verdict
from coach.service import ReviewService

SERVICE = ReviewService()
NCP, GF = "no-cold-pitch", "give-first"

SALES_REPLY_EN = (
    "Hi Dana, our Team plan is $49 per seat per month and includes onboarding for up to ten "
    "people. I can send the contract over today and get your team started on Monday."
)
SALES_REPLY_HE = (
    "היי דנה, המסלול העסקי שלנו עולה 49 ₪ לחודש למשתמש וכולל הטמעה לעשרה אנשים. אשמח לשלוח "
    "לך את החוזה עוד היום כדי שתתחילו ביום ראשון."
)
PRICING_REQUEST_EN = (
    "Thanks for the chat yesterday. Could you send me your pricing for a team of ten?"
)
PRICING_REQUEST_HE = "תודה על השיחה אתמול. תוכל לשלוח לי הצעת מחיר לצוות של עשרה אנשים?"

ASK_EN = "Hi Yoav, could you introduce me to your head of procurement? A 15-minute call would help."
ASK_HE = "היי יואב, תוכל להכיר לי את מנהל הרכש שלכם? שיחה של 15 דקות תעזור לי מאוד."


def verdict(text: str, rule_id: str, context: dict[str, Any] | None) -> Verdict:
    request = ReviewRequest.model_validate({"text": text, "kind": Kind.message, "context": context})
    result = SERVICE.review_sync(request, rewrite=False).verdict(rule_id)
    assert result is not None
    return result


SALES = [pytest.param(SALES_REPLY_EN, id="en"), pytest.param(SALES_REPLY_HE, id="he")]


@pytest.mark.parametrize("text", SALES)
@pytest.mark.parametrize("relationship", ["new", "met"])
def test_sales_reply_fails_cold(text: str, relationship: str) -> None:
    assert verdict(text, NCP, {"relationship": relationship}) is Verdict.failed


@pytest.mark.parametrize("text", SALES)
def test_sales_reply_fails_without_context(text: str) -> None:
    assert verdict(text, NCP, None) is Verdict.failed


@pytest.mark.parametrize("text", SALES)
def test_sales_reply_passes_when_established(text: str) -> None:
    assert verdict(text, NCP, {"relationship": "established"}) is Verdict.passed


@pytest.mark.parametrize(
    ("text", "request_text"),
    [
        pytest.param(SALES_REPLY_EN, PRICING_REQUEST_EN, id="en"),
        pytest.param(SALES_REPLY_HE, PRICING_REQUEST_HE, id="he"),
    ],
)
@pytest.mark.parametrize("relationship", [None, "new", "met"])
def test_sales_reply_passes_when_they_asked_for_pricing(
    text: str, request_text: str, relationship: str | None
) -> None:
    context = {
        "relationship": relationship,
        "thread": [
            {"from": "me", "text": "Great meeting you at the logistics expo."},
            {"from": "them", "text": request_text},
        ],
    }
    assert verdict(text, NCP, context) is Verdict.passed
    # Answering what they asked for is not an ask either.
    assert verdict(text, GF, context) is Verdict.passed


@pytest.mark.parametrize("text", SALES)
def test_thread_without_their_request_does_not_excuse_a_pitch(text: str) -> None:
    context = {
        "relationship": "met",
        "thread": [
            {"from": "them", "text": "Nice meeting you at the expo, have a good weekend!"},
        ],
    }
    assert verdict(text, NCP, context) is Verdict.failed


@pytest.mark.parametrize("text", SALES)
def test_my_own_pricing_offer_in_the_thread_is_not_their_request(text: str) -> None:
    context = {
        "relationship": "new",
        "thread": [{"from": "me", "text": "Could I send you our pricing for a team of ten?"}],
    }
    assert verdict(text, NCP, context) is Verdict.failed


@pytest.mark.parametrize("text", [pytest.param(ASK_EN, id="en"), pytest.param(ASK_HE, id="he")])
def test_ask_to_established_contact_passes_give_first(text: str) -> None:
    assert verdict(text, GF, {"relationship": "new"}) is Verdict.failed
    assert verdict(text, GF, {"relationship": "met"}) is Verdict.failed
    assert verdict(text, GF, {"relationship": "established"}) is Verdict.passed


def test_context_does_not_change_rules_it_should_not() -> None:
    """An established relationship does not make a generic, self-centred draft specific."""
    text = (
        "Hi there, hope this finds you well. I have 20 years of experience and our agency won "
        "three awards last year."
    )
    for relationship in ("new", "established"):
        assert verdict(text, "quality-over-quantity", {"relationship": relationship}) is (
            Verdict.failed
        )
        assert verdict(text, "interest-in-them", {"relationship": relationship}) is (Verdict.failed)
