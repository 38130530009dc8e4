"""Verdicts of the offline rule engine, rule by rule, in English and Hebrew.

Every expected verdict below follows evals/LABELLING.md, not the engine's current output: a
failing test here is an engine (lexicon or check) mistake to fix in coach/, not a test to relax.
Drafts are written for these tests (they are not copies of dataset lines). Each case asserts
only the rules whose verdict is clear-cut under the labelling guide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from coach.models import Kind, Language, Review, ReviewRequest, Verdict
from coach.rulebook import Rulebook, default_rulebook
from coach.service import ReviewService

NCP = "no-cold-pitch"
GF = "give-first"
IIT = "interest-in-them"
QOQ = "quality-over-quantity"
VTL = "volunteer-to-lead"

PASS, FAIL, NA = Verdict.passed, Verdict.failed, Verdict.not_applicable

HEBREW = re.compile("[\u05d0-\u05ea]")
LATIN = re.compile("[A-Za-z]")
# Rewrite slots and merge fields are allowed to carry Latin letters in a Hebrew text.
SLOTS = re.compile(r"\[\[[^\]]*\]\]|\{\{[^}]*\}\}")

SERVICE = ReviewService()


@dataclass(frozen=True)
class Draft:
    id: str
    text: str
    language: Language
    expected: dict[str, Verdict]
    kind: Kind = Kind.message
    context: dict[str, Any] | None = field(default=None)

    def request(self) -> ReviewRequest:
        # The language is left to detection on purpose: mixed Hebrew/English must come out "he".
        return ReviewRequest.model_validate(
            {"text": self.text, "kind": self.kind, "context": self.context}
        )


NEW = {"relationship": "new"}
MET = {"relationship": "met"}

DRAFTS: list[Draft] = [
    # ---------------------------------------------------------------- English: no-cold-pitch
    Draft(
        "en-cold-pitch-demo",
        "Hi Sam, I run partnerships at Payloop. Our payroll platform cuts payroll errors by 40% "
        "for restaurants like yours. Would you be open to a 20-minute demo on Thursday?",
        Language.en,
        {NCP: FAIL, GF: FAIL, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "en-negation-not-selling-but",
        "Hi Sam, I'm not trying to sell you anything, but our scheduling platform has saved "
        "clinics like yours 10 hours a week. Happy to set you up with a free trial.",
        Language.en,
        {NCP: FAIL, IIT: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "en-sincere-no-pitch-congrats",
        "Hi Sam, no pitch, just wanted to congratulate you on closing the Series A for Loomwork! "
        "I remember you sketching the first version on a napkin at the Haifa founders' dinner.",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "en-sincere-no-pitch-short",
        "No pitch, just wanted to congratulate you on the Series A for Loomwork! Three years of "
        "late nights paid off.",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        context=MET,
    ),
    Draft(
        "en-pitch-question",
        "Hi Lior, are you tired of losing clients to cheaper competitors? What if you could win "
        "them back in a week? Our retention playbook shows you how.",
        Language.en,
        {NCP: FAIL, IIT: FAIL, QOQ: FAIL},
        context=NEW,
    ),
    Draft(
        "en-pitch-question-double-leads",
        "Want to double your leads by March? Still chasing referrals by hand?",
        Language.en,
        {NCP: FAIL, IIT: FAIL},
        context=NEW,
    ),
    # ------------------------------------------------------------------ English: interest
    Draft(
        "en-interest-panel-question",
        "Hi Ruth, I loved your panel at FinTech Week on open banking, especially the point about "
        "consent fatigue. What made you move from compliance into product?",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "en-self-focus-credentials",
        "Hello Ron, a little about me: I have 20 years of experience in brand strategy, I've "
        "written three books and I was named one of Forbes' top marketers. I founded Brandcraft "
        "in 2015.",
        Language.en,
        {GF: PASS, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft("en-empty-thanks", "Thanks!", Language.en, {IIT: FAIL, QOQ: FAIL, VTL: NA}),
    # ------------------------------------------------------------------- English: quality
    Draft(
        "en-generic-connect",
        "Hi there, I came across your profile and would love to connect. Always looking to grow "
        "my network with like-minded professionals. Hope this finds you well!",
        Language.en,
        {NCP: PASS, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    # ------------------------------------------------------------------ English: give-first
    Draft(
        "en-ask-intro-no-offer",
        "Hi Tal, could you introduce me to your head of partnerships at Vireo? I'd also love 15 "
        "minutes of your time next week to pick your brain about fundraising.",
        Language.en,
        {GF: FAIL, IIT: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "en-ask-with-offer",
        "Hi Ben, here's the grant-application checklist I mentioned at Tuesday's climate-tech "
        "meetup; it saved us weeks on the Horizon submission. If you have time later this month, "
        "I'd love your advice on our seed deck.",
        Language.en,
        {NCP: PASS, GF: PASS, QOQ: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "en-give-intro-candidate",
        "Hi Maya, I saw you're hiring a head of growth at Tessellate. I know a strong candidate "
        "from my old team who scaled our self-serve funnel, and I'm happy to introduce you if "
        "that helps.",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=NEW,
    ),
    Draft(
        "en-free-trial-is-not-giving",
        "Hi Omer, we'd love to offer you a free 30-day trial of our invoicing app. Can we set up "
        "a call on Tuesday to get you started?",
        Language.en,
        {NCP: FAIL, GF: FAIL},
        context=NEW,
    ),
    # ------------------------------------------------------------------- English: templates
    Draft(
        "en-template-fake-personalisation",
        "Hi {{first_name}}, I help companies like {{company}} grow revenue with our outbound "
        "lead engine. Worth a quick 15-minute call this week?",
        Language.en,
        {NCP: FAIL, GF: FAIL, QOQ: FAIL, VTL: NA},
        kind=Kind.template,
    ),
    Draft(
        "en-template-mailchimp-fake",
        "Hi *|FNAME|*, we help businesses like *|COMPANY|* save 10 hours a week with our "
        "scheduling app. Book a demo here.",
        Language.en,
        {NCP: FAIL, QOQ: FAIL},
        kind=Kind.template,
    ),
    Draft(
        "en-template-salesforce-fake",
        "Dear {!Contact.FirstName}, {!Account.Name} could cut its cloud bill by 30% with our "
        "cost optimisation suite. Reply to book your free audit.",
        Language.en,
        {NCP: FAIL, QOQ: FAIL},
        kind=Kind.template,
    ),
    Draft(
        "en-template-percent-fake",
        "Hello %FIRSTNAME%, as a leader at %COMPANY% you know how hard hiring is. Our recruiting "
        "platform fills roles 2x faster. Can I send you pricing?",
        Language.en,
        {NCP: FAIL, QOQ: FAIL},
        kind=Kind.template,
    ),
    Draft(
        "en-template-recent-milestone",
        "Hi {{first_name}}, congrats on {{recent_milestone}}! I'd love to hear what's next for "
        "the team after that.",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        kind=Kind.template,
    ),
    Draft(
        "en-template-topic-spaced-field",
        "Hi {{ contact.firstname }}, your talk on {{topic}} at last week's meetup stuck with me. "
        "How did you get the team to adopt it?",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        kind=Kind.template,
    ),
    Draft(
        "en-template-bracket-recent-post",
        "Hi [First Name], I read [Their Recent Post] and it changed how I think about churn. "
        "What prompted you to write it?",
        Language.en,
        {NCP: PASS, IIT: PASS, QOQ: PASS},
        kind=Kind.template,
    ),
    # --------------------------------------------------------------- English: meeting notes
    Draft(
        "en-notes-learned-and-intro",
        "Coffee with Dana Levi (Brightline Logistics)\n"
        "- She runs ops for a 40-truck cold-chain fleet; biggest challenge: driver turnover.\n"
        "- She's looking for a good HR consultant and wants to expand into Haifa next year.\n"
        "- Ideal referral for her: grocery chains with their own distribution.\n"
        "Next step: I'll introduce her to Moshe (HR consultant) and send her the "
        "driver-retention report.",
        Language.en,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        kind=Kind.meeting_notes,
    ),
    Draft(
        "en-notes-pitched-and-collected",
        "Tech meetup, Thursday\n"
        "- Collected 40 business cards, handed out all of mine.\n"
        "- Gave everyone my pitch about our analytics platform, pushed the annual plan to three "
        "people.\n"
        "- Will add everyone to the newsletter.",
        Language.en,
        {NCP: FAIL, GF: FAIL, IIT: FAIL, QOQ: FAIL, VTL: NA},
        kind=Kind.meeting_notes,
    ),
    # ------------------------------------------------------------ English: volunteer-to-lead
    Draft(
        "en-volunteer-dodge",
        "Hi Karen, thanks for asking about the membership chair role in our chapter for next "
        "year. Honestly I'm swamped at work, so maybe someone else could take it this time.",
        Language.en,
        {NCP: PASS, VTL: FAIL},
    ),
    Draft(
        "en-volunteer-vague",
        "Hey all, happy to help the association at some point. Let me know if you need "
        "anything, I guess.",
        Language.en,
        {NCP: PASS, VTL: FAIL},
    ),
    Draft(
        "en-volunteer-concrete",
        "Hi Karen, count me in: I'll run the visitor table at the March and April chapter "
        "meetings, and I'll take the membership chair role from January.",
        Language.en,
        {NCP: PASS, VTL: PASS},
    ),
    # ------------------------------------------------------------------ Hebrew: no-cold-pitch
    Draft(
        "he-negation-not-selling-but",
        "היי רונית, אני לא מנסה למכור לך כלום, אבל המערכת שלנו חוסכת למשרדי רואי חשבון עשר "
        "שעות בשבוע. אשמח להראות לך דמו קצר ביום שלישי.",
        Language.he,
        {NCP: FAIL, IIT: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "he-prefixed-pitch",
        "היי אבי, שמחתי להכיר אתמול. ובמערכת שלנו כל הלידים של המשרד מנוהלים אוטומטית, אז "
        "כדאי שתנסה אותה.",
        Language.he,
        {NCP: FAIL},
        context=MET,
    ),
    Draft(
        "he-price-pitch",
        "שלום אבי, ובמערכת שלנו תוכל לנהל את כל הלידים במקום אחד, במחיר השקה של 99 ₪ לחודש. "
        "להירשם אפשר בקישור.",
        Language.he,
        {NCP: FAIL, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "he-sincere-no-pitch-congrats",
        "היי רונית, בלי שום הצעה, רק רציתי לברך אותך על פתיחת הסניף החדש של הסטודיו בחיפה! "
        "זוכרת שסיפרת לי על התוכנית כשנפגשנו בתערוכה בשנה שעברה.",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "he-sincere-no-pitch-short",
        "היי רונית, בלי שום הצעה, רק רציתי לברך אותך על פתיחת הסניף החדש של הסטודיו שלך "
        "בחיפה! איזה הישג.",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        context=MET,
    ),
    Draft(
        "he-pitch-question",
        "היי ליאור, נמאס לך לאבד לקוחות למתחרים זולים? מה אם הייתי אומר לך שאפשר להחזיר "
        "אותם תוך שבוע?",
        Language.he,
        {NCP: FAIL, IIT: FAIL},
        context=NEW,
    ),
    Draft(
        "he-mixed-english-pitch",
        "הי דני, המוצר שלנו עוזר לצוותי Sales לסגור יותר עסקאות עם CRM חכם. מתי נוח לך לדמו "
        "של 15 דקות?",
        Language.he,
        {NCP: FAIL, GF: FAIL, IIT: FAIL, VTL: NA},
        context=NEW,
    ),
    # ------------------------------------------------------------------- Hebrew: interest
    Draft(
        "he-interest-prefixes",
        "היי נועה, כשנפגשנו בכנס הפינטק סיפרת שאתם מתרחבים לאירופה. איך מתקדם הגיוס לצוות בברלין?",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "he-mixed-english-interest",
        "היי שירן, קראתי את הפוסט שלך ב-LinkedIn על המעבר ל-Kubernetes בצוות ה-DevOps. מה היה "
        "הכי קשה בהעברה של ה-CI?",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=NEW,
    ),
    Draft(
        "he-rtl-marks-interest",
        "\u200fהיי נועה,\u200f כשנפגשנו בכנס הפינטק סיפרת שאתם מתרחבים לאירופה.\u200f "
        "\u202bאיך מתקדם הגיוס לצוות בברלין?\u202c",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        context=MET,
    ),
    Draft(
        "he-self-focus-credentials",
        "שלום משה, קצת עליי: יש לי 20 שנות ניסיון בשיווק דיגיטלי, ליוויתי יותר מ-300 עסקים "
        "וזכיתי בפרס המשווק של השנה. הקמתי את החברה שלי ב-2012.",
        Language.he,
        {GF: PASS, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    # -------------------------------------------------------------------- Hebrew: quality
    Draft(
        "he-generic-connect",
        "שלום, נתקלתי בפרופיל שלך ואשמח להתחבר. תמיד טוב להרחיב את הרשת. מקווה שהכל טוב אצלך!",
        Language.he,
        {NCP: PASS, IIT: FAIL, QOQ: FAIL, VTL: NA},
        context=NEW,
    ),
    # ----------------------------------------------------------------- Hebrew: give-first
    Draft(
        "he-ask-no-offer",
        "תוכל לקבוע איתי שיחה של 20 דקות בשבוע הבא? אני רוצה להתייעץ איתך על מעבר קריירה.",
        Language.he,
        {NCP: PASS, GF: FAIL, VTL: NA},
        context=NEW,
    ),
    Draft(
        "he-ask-with-offer",
        "היי בן, מצרף לך את המדריך להגשת מענקים שהזכרתי במיטאפ ביום שלישי, הוא חסך לנו "
        "שבועות. ואם יהיה לך זמן בהמשך החודש, אשמח להתייעץ איתך על מצגת הגיוס שלנו.",
        Language.he,
        {NCP: PASS, GF: PASS, VTL: NA},
        context=MET,
    ),
    Draft(
        "he-give-intro-candidate",
        "היי גיל, ראיתי שאתם מגייסים מפתח Backend; יש לי מועמד מצוין מהצוות הקודם שלי ואשמח "
        "לחבר ביניכם.",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        context=NEW,
    ),
    # -------------------------------------------------------------------- Hebrew: templates
    Draft(
        "he-template-fake-personalisation",
        "היי {{first_name}}, אנחנו עוזרים לחברות כמו {{company}} להגדיל מכירות עם המערכת שלנו. "
        "מתי נוח לך לשיחה קצרה?",
        Language.he,
        {NCP: FAIL, GF: FAIL, QOQ: FAIL, VTL: NA},
        kind=Kind.template,
    ),
    Draft(
        "he-template-recent-milestone",
        "היי {{first_name}}, מזל טוב על {{recent_milestone}}! אשמח לשמוע מה התוכניות שלכם להמשך.",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS, VTL: NA},
        kind=Kind.template,
    ),
    # ---------------------------------------------------------------- Hebrew: meeting notes
    Draft(
        "he-notes-learned-and-intro",
        "סיכום פגישה עם יעל (סטודיו לעיצוב)\n"
        "- היא מנהלת סטודיו קטן ברמת גן ומחפשת לקוחות בתחום המזון.\n"
        "- האתגר שלה: תזרים בחודשי הקיץ.\n"
        "- צעד הבא: אכיר לה את אבי מרשת המאפיות ואשלח לה את המדריך לתמחור.",
        Language.he,
        {NCP: PASS, GF: PASS, IIT: PASS, QOQ: PASS},
        kind=Kind.meeting_notes,
    ),
    Draft(
        "he-notes-pitched-and-collected",
        "כנס יזמים\n"
        "- חילקתי 50 כרטיסי ביקור ואספתי 40 כרטיסים.\n"
        "- עשיתי לכולם את הפיץ' על המערכת שלנו, הצגתי את המחירון.\n"
        "- אוסיף את כולם לרשימת התפוצה.",
        Language.he,
        {NCP: FAIL, GF: FAIL, IIT: FAIL, QOQ: FAIL, VTL: NA},
        kind=Kind.meeting_notes,
    ),
    # ----------------------------------------------------------- Hebrew: volunteer-to-lead
    Draft(
        "he-volunteer-dodge",
        "היי מיכל, ראיתי שהוועד מחפש גזבר לשנה הבאה. אני עמוס מאוד בעבודה, אז אולי מישהו אחר "
        "ייקח את זה הפעם.",
        Language.he,
        {NCP: PASS, VTL: FAIL},
    ),
    Draft(
        "he-volunteer-concrete",
        "היי מיכל, תרשמי אותי: אני אקח את ריכוז המתנדבים לכנס השנתי של העמותה, החל מהמפגש "
        "הבא בינואר.",
        Language.he,
        {NCP: PASS, VTL: PASS},
    ),
]

_ids = [d.id for d in DRAFTS]
assert len(_ids) == len(set(_ids)), "draft ids must be unique"

_CACHE: dict[str, Review] = {}


def review_of(draft: Draft) -> Review:
    if draft.id not in _CACHE:
        _CACHE[draft.id] = SERVICE.review_sync(draft.request())
    return _CACHE[draft.id]


VERDICT_CASES = [
    pytest.param(draft, rule_id, verdict, id=f"{draft.id}:{rule_id}={verdict.value}")
    for draft in DRAFTS
    for rule_id, verdict in draft.expected.items()
]


@pytest.mark.parametrize(("draft", "rule_id", "expected"), VERDICT_CASES)
def test_verdict(draft: Draft, rule_id: str, expected: Verdict) -> None:
    review = review_of(draft)
    result = next(r for r in review.rules if r.rule_id == rule_id)
    assert result.verdict is expected, (
        f"{draft.id}: {rule_id} expected {expected.value}, got {result.verdict.value} "
        f"({result.reason})"
    )


def test_every_rule_passes_and_fails_in_both_languages() -> None:
    """The table above covers each rule x language x {pass, fail} (guards against edits)."""
    covered = {
        (rule_id, d.language, verdict) for d in DRAFTS for rule_id, verdict in d.expected.items()
    }
    for rule_id in (NCP, GF, IIT, QOQ, VTL):
        for language in Language:
            for verdict in (PASS, FAIL):
                assert (rule_id, language, verdict) in covered, (rule_id, language, verdict)


# --------------------------------------------------------------------- rulebook examples


def _rulebook_examples() -> list[Any]:
    params = []
    for rule in default_rulebook().rules:
        for label, examples in ((FAIL, rule.examples.fail), (PASS, rule.examples.passes)):
            for n, example in enumerate(examples):
                params.append(
                    pytest.param(
                        rule.id,
                        example.language,
                        example.text,
                        label,
                        id=f"{rule.id}:{example.language.value}:{label.value}:{n}",
                    )
                )
    return params


@pytest.mark.parametrize(("rule_id", "language", "text", "expected"), _rulebook_examples())
def test_rulebook_example_gets_its_verdict(
    rule_id: str, language: Language, text: str, expected: Verdict
) -> None:
    kind = Kind.template if "{{" in text else Kind.message
    review = SERVICE.review_sync(ReviewRequest(text=text, kind=kind, language=language))
    assert review.verdict(rule_id) is expected, (
        f"rulebook example for {rule_id} ({language.value}) should {expected.value}: {text!r}"
    )


def test_rulebook_has_examples_for_each_rule_in_both_languages() -> None:
    for rule in default_rulebook().rules:
        for examples in (rule.examples.fail, rule.examples.passes):
            assert {e.language for e in examples} == set(Language), rule.id


# ------------------------------------------------------------------------ review shape


@pytest.mark.parametrize("draft", DRAFTS, ids=_ids)
def test_one_result_per_enabled_rule_with_valid_fields(draft: Draft) -> None:
    review = review_of(draft)
    assert [r.rule_id for r in review.rules] == [r.id for r in SERVICE.rulebook.enabled]
    for result in review.rules:
        assert 0.0 <= result.confidence <= 1.0
        assert result.reason.strip(), f"{result.rule_id} has an empty reason"
    assert review.engine == "rules"
    assert review.degraded is False
    assert review.kind is draft.kind
    assert review.rulebook_version == SERVICE.rulebook.version
    assert review.summary.strip()


def test_disabled_rule_gets_no_result() -> None:
    book = default_rulebook()
    rules = [r.model_copy(update={"enabled": r.id != GF}) for r in book.rules]
    service = ReviewService(Rulebook(version=book.version, rules=rules))
    draft = DRAFTS[0]
    review = service.review_sync(draft.request())
    assert [r.rule_id for r in review.rules] == [r.id for r in book.rules if r.id != GF]
    assert all(f.rule_id != GF for f in review.findings)


def _user_texts(review: Review) -> list[str]:
    texts = [review.summary, *(r.reason for r in review.rules)]
    texts += [f.message for f in review.findings] + [f.suggestion for f in review.findings]
    texts += review.suggestions.questions + review.suggestions.offers
    return texts


@pytest.mark.parametrize("draft", DRAFTS, ids=_ids)
def test_language_of_everything_written_for_the_user(draft: Draft) -> None:
    review = review_of(draft)
    assert review.language is draft.language
    for text in _user_texts(review):
        if draft.language is Language.he:
            assert HEBREW.search(text), f"not Hebrew: {text!r}"
        else:
            assert not HEBREW.search(text), f"Hebrew in an English review: {text!r}"
            assert LATIN.search(text), f"not English: {text!r}"


@pytest.mark.parametrize(
    "draft",
    [pytest.param(d, id=d.id) for d in DRAFTS if any(v is FAIL for v in d.expected.values())],
)
def test_failing_draft_has_findings_in_its_language(draft: Draft) -> None:
    review = review_of(draft)
    assert review.findings, f"{draft.id}: no findings although a rule fails"
    for finding in review.findings:
        plain = SLOTS.sub("", finding.message)
        if draft.language is Language.he:
            assert HEBREW.search(plain)
        else:
            assert not HEBREW.search(plain) and LATIN.search(plain)


def test_rtl_marks_do_not_change_verdicts() -> None:
    plain = next(d for d in DRAFTS if d.id == "he-interest-prefixes")
    marked = next(d for d in DRAFTS if d.id == "he-rtl-marks-interest")
    a, b = review_of(plain), review_of(marked)
    assert [r.verdict for r in a.rules] == [r.verdict for r in b.rules]
    assert b.language is Language.he


@pytest.mark.parametrize(
    "text",
    [
        "Hi Noa, great meeting you at the Haifa design meetup. How is the rebrand going?",
        "היי נועה, כשנפגשנו בכנס הפינטק סיפרת שאתם מתרחבים לאירופה. איך מתקדם הגיוס?",
    ],
)
def test_volunteer_to_lead_not_applicable_outside_group(text: str) -> None:
    for kind in Kind:
        review = SERVICE.review_sync(ReviewRequest(text=text, kind=kind))
        assert review.verdict(VTL) is NA
        assert all(f.rule_id != VTL for f in review.findings)
