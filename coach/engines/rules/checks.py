"""One check per built-in rule, plus the generic check for user-added rules with `detect` patterns.

Each check reads an `Analysis` and returns an `Outcome`: a verdict, a confidence, a reason key
(the wording lives in the lexicon's `phrases.reasons`) and evidence offsets into the draft.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from coach.engines.rules.analysis import Analysis
from coach.models import Kind, Relationship, Verdict
from coach.rulebook import Rule

__all__ = ["CHECKS", "Outcome", "check_detect", "genuine_questions", "specific_details"]

PASS, FAIL, NA = Verdict.passed, Verdict.failed, Verdict.not_applicable


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    confidence: float
    reason: str
    evidence: list[tuple[int, int]] = field(default_factory=list)


def _conf(base: float, strength: float) -> float:
    return round(min(0.95, base + 0.1 * strength), 2)


def _sentence_spans(a: Analysis, indexes: set[int] | list[int]) -> list[tuple[int, int]]:
    return [(a.sentences[i].start, a.sentences[i].end) for i in sorted(set(indexes))]


def _whole(a: Analysis) -> list[tuple[int, int]]:
    return [(a.sentences[0].start, a.sentences[-1].end)] if a.sentences else []


def _established(a: Analysis) -> bool:
    ctx = a.request.context
    return bool(ctx and ctx.relationship is Relationship.established)


def _they_asked(a: Analysis) -> bool:
    ctx = a.request.context
    if not ctx:
        return False
    return any(m.from_ == "them" and a.search("them_request", m.text) for m in ctx.thread)


def genuine_questions(a: Analysis) -> list[int]:
    """Sentences that ask the recipient about themselves or their work: a question that is not
    an ask, a pitch dressed as a question, small talk, or about the sender."""
    blocked = a.sentences_with("pitch", "pitch_question", "ask", "business_ask", "smalltalk")
    found = []
    for s in a.sentences:
        if not s.is_question or s.index in blocked:
            continue
        if a.in_sentence("second_person", s.index) or len(_WORDS.findall(s.text)) >= 4:
            found.append(s.index)
    return found


_WORDS = re.compile(r"\w+")
#: Words from which a genuine question is specific enough to count as a detail about them.
_DETAILED = 8


#: A capitalised word not at the start of the text, a sentence or a word. The capital comes
#: first and the look-behinds (shifted by it) after: a pattern opening with a character class
#: lets the regex engine skip to the capitals, four times faster than testing the look-behinds
#: at every position.
_PROPER = re.compile(r"[A-Z](?<![.!?:]\s.)(?<!^.)(?<![\w'’].)[a-z]+(?:[A-Z][a-z]+)*")


_WE = re.compile(r"\b(?:we|our|us|we're|we've|we'll|ours)\b", re.IGNORECASE)
_ME = re.compile(r"\b(?:i|my|me|i'm|i've|i'll|i'd)\b", re.IGNORECASE)


def _mid_sentence(text: str, start: int) -> bool:
    """Whether a word at `start` follows a real word of the sentence: the first word is
    capitalised anyway, and so is a word after a masked merge field ("xxxx Disregard…")."""
    before = text[:start].rsplit(None, 1)  # the last word, found from the right
    last = before[-1].strip(",.;:!?()[]'\"") if before else ""
    return any(c.isalpha() for c in last) and set(last) != {"x"}


def _proper_nouns(a: Analysis) -> list[int]:
    """English only: sentences that name something (a capitalised word not at the sentence
    start) and are not about the sender's own organisation ("we", "our"): a named event,
    place, project or person of theirs."""
    if a.language.value != "en":
        return []
    stop = set(a.lexicon.phrase("proper_noun_stoplist"))
    ctx = a.request.context
    if ctx and ctx.recipient and ctx.recipient.name:
        stop.update(part.lower().strip(".,") for part in ctx.recipient.name.split())
    excluded = a.sentences_with("pitch", "pitch_question", "self_focus", "generic", "business_ask")
    greeting = re.compile(a.lexicon.phrase("layout", "greeting"), re.IGNORECASE)
    found = []
    for s in a.sentences:
        if s.index in excluded or _WE.search(s.text) or (s.index == 0 and greeting.match(s.text)):
            continue
        if _ME.search(s.text) and not a.in_sentence("second_person", s.index):
            continue  # about the sender ("I run partnerships at Payloop")
        words = [m.group() for m in _PROPER.finditer(s.text) if _mid_sentence(s.text, m.start())]
        if any(w.lower() not in stop for w in words):
            found.append(s.index)
    return found


def specific_details(a: Analysis) -> list[int]:
    """Sentences that carry something true of this recipient or a shared experience."""
    indexes = {h.sentence for h in a.of("reference")}
    indexes.update(
        h.sentence for h in a.of("interest") if a.in_sentence("second_person", h.sentence)
    )
    indexes.update(_proper_nouns(a))
    indexes.update(_personal_field_sentences(a))
    # A question about a particular thing of theirs ("did the printer sort out your brochure
    # order for the trade show?") is itself a specific detail.
    indexes.update(
        i for i in genuine_questions(a) if len(_WORDS.findall(a.sentences[i].text)) >= _DETAILED
    )
    return sorted(indexes)


def _personal_field_sentences(a: Analysis) -> set[int]:
    return {
        next((s.index for s in a.sentences if s.start <= f.start < s.end), 0)
        for f in a.merge_fields
        if f.kind == "personal"
    }


def _pitch_hits(a: Analysis) -> set[int]:
    if a.kind is Kind.meeting_notes:
        return a.sentences_with("notes_pitched", "pitch", "business_ask")
    return a.sentences_with("pitch", "pitch_question", "business_ask")


def check_no_cold_pitch(a: Analysis) -> Outcome:
    pitched = _pitch_hits(a)
    if not pitched:
        return Outcome(PASS, 0.8, "no_pitch")
    if _established(a) or _they_asked(a):
        return Outcome(PASS, 0.7, "supported")
    return Outcome(FAIL, _conf(0.65, len(pitched)), "pitch", _sentence_spans(a, pitched))


def _offers(a: Analysis, *categories: str) -> set[int]:
    """Sentences that give something; an "offer" inside a sales line (a free trial, "happy to
    send pricing") is not giving."""
    pitch = a.sentences_with("pitch", "pitch_question", "notes_pitched")
    return {h.sentence for c in categories for h in a.of(c) if h.sentence not in pitch}


def check_give_first(a: Analysis) -> Outcome:
    # Selling is an implicit ask for a purchase.
    asks = a.sentences_with("ask", "business_ask", "pitch", "pitch_question")
    if a.kind is Kind.meeting_notes:
        helps = _offers(a, "offer", "notes_help")
        if helps:
            return Outcome(PASS, _conf(0.65, len(helps)), "notes_help")
        if _established(a):
            return Outcome(PASS, 0.6, "supported")
        return Outcome(FAIL, 0.7, "notes_no_help", _sentence_spans(a, asks) or _whole(a))
    offers = _offers(a, "offer")
    if not asks:
        return Outcome(PASS, 0.75, "no_ask")
    if _established(a) or _they_asked(a):
        return Outcome(PASS, 0.7, "supported")
    if offers:
        return Outcome(PASS, _conf(0.6, len(offers)), "offered")
    return Outcome(FAIL, _conf(0.65, len(asks)), "ask_without_offer", _sentence_spans(a, asks))


def check_interest_in_them(a: Analysis) -> Outcome:
    self_sentences = a.sentences_with("self_focus")
    pitch_sentences = a.sentences_with("pitch", "pitch_question")
    if a.kind is Kind.meeting_notes:
        learned = a.sentences_with("notes_learned") | set(genuine_questions(a))
        if learned and len(learned) >= len(self_sentences | a.sentences_with("notes_pitched")):
            return Outcome(PASS, _conf(0.6, len(learned)), "notes_learned")
        evidence = self_sentences | a.sentences_with("notes_pitched")
        return Outcome(FAIL, 0.7, "notes_no_learning", _sentence_spans(a, evidence) or _whole(a))
    curiosity = set(genuine_questions(a)) | a.sentences_with("interest")
    interest = curiosity | a.sentences_with("reference") | _personal_field_sentences(a)
    about_me = self_sentences | pitch_sentences | a.sentences_with("business_ask")
    if _they_asked(a) and len(self_sentences) <= 1:
        return Outcome(PASS, 0.6, "answers_them")
    if not interest:
        return Outcome(
            FAIL,
            _conf(0.6, len(about_me)),
            "no_interest",
            _sentence_spans(a, about_me) or _whole(a),
        )
    if about_me and not curiosity:
        # A compliment used as the hook for a pitch or an ask for business.
        return Outcome(FAIL, 0.6, "hook", _sentence_spans(a, about_me))
    if len(about_me) >= 3 and len(about_me) > 2 * len(interest):
        return Outcome(FAIL, 0.6, "about_sender", _sentence_spans(a, about_me))
    return Outcome(PASS, _conf(0.6, len(interest)), "interested")


def check_quality_over_quantity(a: Analysis) -> Outcome:
    generic = a.sentences_with("generic")
    if a.kind is Kind.meeting_notes:
        collecting = a.sentences_with("notes_collecting")
        if collecting:
            return Outcome(
                FAIL,
                _conf(0.65, len(collecting)),
                "notes_collecting",
                _sentence_spans(a, collecting),
            )
        if a.sentences_with("notes_learned") or specific_details(a):
            return Outcome(PASS, 0.7, "notes_depth")
        return Outcome(FAIL, 0.55, "notes_shallow", _whole(a))
    details = set(specific_details(a))
    fake = (
        a.kind is Kind.template
        and any(f.kind == "identity" for f in a.merge_fields)
        and not any(f.kind == "personal" for f in a.merge_fields)
    )
    if details - generic:
        return Outcome(PASS, _conf(0.6, len(details)), "specific")
    if fake:
        spans = [(f.start, f.end) for f in a.merge_fields if f.kind == "identity"]
        return Outcome(FAIL, 0.75, "fake_personalisation", spans + _sentence_spans(a, generic))
    if generic:
        return Outcome(FAIL, _conf(0.65, len(generic)), "generic", _sentence_spans(a, generic))
    return Outcome(FAIL, 0.6, "no_detail", _whole(a))


def check_volunteer_to_lead(a: Analysis) -> Outcome:
    ctx = a.request.context
    group = a.count("group") > 0 or bool(ctx and ctx.notes and a.search("group", ctx.notes))
    engaged = a.sentences_with("role", "dodge", "commit")
    if not group or not engaged:
        return Outcome(NA, 0.8, "no_group")
    dodges = a.sentences_with("dodge")
    timed = a.sentences_with("time")
    concrete = {
        i
        for i in a.sentences_with("commit")
        if i not in dodges and (i in timed or i + 1 in timed or a.in_sentence("role", i))
    }
    if concrete:
        return Outcome(PASS, _conf(0.6, len(concrete)), "committed")
    if dodges:
        return Outcome(FAIL, _conf(0.65, len(dodges)), "dodged", _sentence_spans(a, dodges))
    vague = a.sentences_with("commit", "role")
    return Outcome(FAIL, 0.55, "vague", _sentence_spans(a, vague))


CHECKS: dict[str, Callable[[Analysis], Outcome]] = {
    "no-cold-pitch": check_no_cold_pitch,
    "give-first": check_give_first,
    "interest-in-them": check_interest_in_them,
    "quality-over-quantity": check_quality_over_quantity,
    "volunteer-to-lead": check_volunteer_to_lead,
}


def check_detect(a: Analysis, rule: Rule) -> Outcome:
    """A user-added rule: fails when a `fail` pattern matches and no `pass` pattern does."""
    if rule.detect is None:
        return Outcome(NA, 0.0, "no_patterns")
    patterns = rule.detect.get(a.language)
    flags = re.IGNORECASE
    if any(re.search(p, a.masked, flags) for p in patterns.passes):
        return Outcome(PASS, 0.7, "custom_pass")
    spans = [
        m.span()
        for p in patterns.fail
        for m in re.finditer(p, a.masked, flags)
        if m.end() > m.start()
    ]
    if spans:
        return Outcome(FAIL, 0.7, "custom_fail", spans)
    return Outcome(PASS, 0.6, "custom_pass")
