"""Turn the model's answer into a `Review` we can trust.

- Unknown rule ids are dropped; a rule the model skipped is filled from the rule engine and
  marked `source: "rules"`; a rule that does not apply to this kind is not_applicable.
- Offsets are ours: each finding's quote is located in the draft (exactly, else ignoring case
  and runs of whitespace); a finding whose quote is not in the draft is dropped.
- The rewrite is checked by the rule engine: rules it still fails, and merge fields, links,
  e-mails, dates or names of the draft it lost, are reported in `rewrite.check`.
"""

from __future__ import annotations

import re

from coach.engines.llm.schema import LLMReview
from coach.engines.rules.analysis import analyse
from coach.engines.rules.engine import RuleEngine, score
from coach.engines.rules.rewrite import protected_tokens
from coach.models import (
    Finding,
    Language,
    Review,
    ReviewRequest,
    Rewrite,
    RewriteChange,
    RewriteCheck,
    RuleResult,
    Suggestions,
    Usage,
    Verdict,
)
from coach.text import Utf16Index, make_span

__all__ = ["assemble_review", "locate"]


def locate(text: str, quote: str, taken: set[tuple[int, int]]) -> tuple[int, int] | None:
    """Where `quote` is in `text`: the first exact occurrence not already used by a finding,
    else a match ignoring case and whitespace runs. None when it is not in the draft."""
    quote = quote.strip()
    if not quote:
        return None
    start = text.find(quote)
    while start != -1:
        if (start, start + len(quote)) not in taken:
            return start, start + len(quote)
        start = text.find(quote, start + 1)
    words = [re.escape(w) for w in quote.split()]
    if not words:
        return None
    match = re.search(r"\s+".join(words), text, re.IGNORECASE)
    return match.span() if match else None


def assemble_review(
    parsed: LLMReview,
    request: ReviewRequest,
    language: Language,
    rules: RuleEngine,
    *,
    rewrite: bool,
    usage: Usage,
) -> Review:
    rulebook = rules.rulebook
    analysis = analyse(request)
    outcomes = rules.evaluate(analysis)
    ours = {r.rule_id: r for r in rules.results(analysis, outcomes)}
    given = {v.rule_id: v for v in parsed.rules}
    results: list[RuleResult] = []
    for rule in rulebook.enabled:
        verdict = given.get(rule.id)
        if request.kind not in rule.applies_to or verdict is None:
            # Not applicable to this kind, or skipped by the model: the rule engine's verdict,
            # marked source="rules".
            results.append(ours[rule.id])
            continue
        results.append(
            RuleResult(
                rule_id=rule.id,
                verdict=Verdict(verdict.verdict),
                confidence=min(1.0, max(0.0, verdict.confidence)),
                reason=verdict.reason.strip() or ours[rule.id].reason,
                severity=rule.severity,
                source="llm",
            )
        )

    failed = {r.rule_id for r in results if r.verdict is Verdict.failed}
    severity = {rule.id: rule.severity for rule in rulebook.enabled}
    utf16 = Utf16Index(request.text)
    taken: set[tuple[int, int]] = set()
    findings: list[Finding] = []
    for item in parsed.findings:
        if item.rule_id not in failed:
            continue
        where = locate(request.text, item.quote, taken)
        if where is None:
            continue
        taken.add(where)
        findings.append(
            Finding(
                rule_id=item.rule_id,
                severity=severity[item.rule_id],
                message=item.message,
                suggestion=item.suggestion,
                span=make_span(request.text, where[0], where[1], utf16),
            )
        )
    findings.sort(key=lambda f: (f.span.start, -f.severity.rank))

    written: Rewrite | None = None
    if rewrite and parsed.rewrite is not None and parsed.rewrite.text.strip():
        written = Rewrite(
            text=parsed.rewrite.text,
            changes=[RewriteChange(rule_id=None, description=c) for c in parsed.rewrite.changes],
            structural=False,
            note=f"Written by {usage.model} (prompt {usage.prompt_version}); "
            "checked by the rule engine.",
            check=check_rewrite(
                parsed.rewrite.text, request, language, rules, protected_tokens(analysis)
            ),
        )
    return Review(
        rules=results,
        findings=findings,
        summary=parsed.summary.strip() or rules.summary(analysis, outcomes),
        score=score(results),
        suggestions=Suggestions(
            questions=[q for q in parsed.suggestions.questions if q.strip()],
            offers=[o for o in parsed.suggestions.offers if o.strip()],
        ),
        rewrite=written,
        engine="llm",
        rulebook_version=rulebook.version,
        language=language,
        kind=request.kind,
        usage=usage,
    )


def check_rewrite(
    text: str,
    request: ReviewRequest,
    language: Language,
    rules: RuleEngine,
    tokens: list[str],
) -> RewriteCheck:
    again = rules.evaluate(
        analyse(
            ReviewRequest.model_construct(
                text=text, kind=request.kind, language=language, context=request.context
            )
        )
    )
    failing = [rule.id for rule, outcome in again if outcome.verdict is Verdict.failed]
    missing = [token for token in tokens if token not in text]
    return RewriteCheck(passes=not failing and not missing, failing_rules=failing, missing=missing)
