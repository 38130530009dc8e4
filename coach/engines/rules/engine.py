"""The offline rule engine: deterministic, no network, no model weights."""

from __future__ import annotations

from coach.engines.base import register
from coach.engines.rules.analysis import Analysis, analyse
from coach.engines.rules.checks import CHECKS, Outcome, check_detect
from coach.engines.rules.rewrite import structural_rewrite
from coach.models import (
    Finding,
    Review,
    ReviewRequest,
    RuleResult,
    Severity,
    Suggestions,
    Verdict,
)
from coach.rulebook import Rule, Rulebook
from coach.settings import Settings
from coach.text import Utf16Index, make_span

__all__ = ["MAX_FINDINGS_PER_RULE", "SEVERITY_WEIGHT", "RuleEngine", "score"]

#: Points a failed rule costs, scaled by the engine's confidence; see README "Score".
SEVERITY_WEIGHT = {Severity.error: 35, Severity.warning: 20, Severity.suggestion: 10}
MAX_FINDINGS_PER_RULE = 3


def score(results: list[RuleResult]) -> int:
    penalty = sum(
        SEVERITY_WEIGHT[r.severity] * r.confidence for r in results if r.verdict is Verdict.failed
    )
    return max(0, min(100, round(100 - penalty)))


class RuleEngine:
    name = "rules"

    def __init__(self, rulebook: Rulebook) -> None:
        self.rulebook = rulebook

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        return self.review_sync(request, rewrite=rewrite)

    def evaluate(self, analysis: Analysis) -> list[tuple[Rule, Outcome]]:
        outcomes = []
        for rule in self.rulebook.enabled:
            if analysis.kind not in rule.applies_to:
                outcome = Outcome(Verdict.not_applicable, 1.0, "not_applicable")
            elif rule.id in CHECKS:
                outcome = CHECKS[rule.id](analysis)
            else:
                outcome = check_detect(analysis, rule)
            outcomes.append((rule, outcome))
        return outcomes

    @staticmethod
    def results(analysis: Analysis, outcomes: list[tuple[Rule, Outcome]]) -> list[RuleResult]:
        """One RuleResult per outcome, with the reason in the draft's language."""
        reasons = analysis.lexicon.phrase("reasons")
        results = []
        for rule, outcome in outcomes:
            bucket = reasons.get(rule.id, reasons["custom"])
            results.append(
                RuleResult(
                    rule_id=rule.id,
                    verdict=outcome.verdict,
                    confidence=outcome.confidence,
                    reason=bucket.get(outcome.reason, reasons["custom"].get(outcome.reason, "")),
                    severity=rule.severity,
                )
            )
        return results

    def review_sync(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        analysis = analyse(request)
        outcomes = self.evaluate(analysis)
        lex = analysis.lexicon
        lang = analysis.language
        results = self.results(analysis, outcomes)
        findings: list[Finding] = []
        utf16 = Utf16Index(request.text)
        for rule, outcome in outcomes:
            if outcome.verdict is not Verdict.failed:
                continue
            message = lex.phrase("findings").get(rule.id, lex.phrase("findings", "custom"))
            seen: set[tuple[int, int]] = set()
            for start, end in outcome.evidence:
                span = make_span(request.text, start, end, utf16)
                if (span.start, span.end) in seen or span.start == span.end:
                    continue
                seen.add((span.start, span.end))
                findings.append(
                    Finding(
                        rule_id=rule.id,
                        severity=rule.severity,
                        message=message,
                        suggestion=rule.fix.get(lang),
                        span=span,
                    )
                )
                if len(seen) >= MAX_FINDINGS_PER_RULE:
                    break
        findings.sort(key=lambda f: (f.span.start, -f.severity.rank))
        return Review(
            rules=results,
            findings=findings,
            summary=self.summary(analysis, outcomes),
            score=score(results),
            suggestions=self._suggestions(analysis, outcomes),
            rewrite=structural_rewrite(analysis, outcomes) if rewrite else None,
            engine="rules",
            rulebook_version=self.rulebook.version,
            language=lang,
            kind=request.kind,
        )

    @staticmethod
    def summary(analysis: Analysis, outcomes: list[tuple[Rule, Outcome]]) -> str:
        lex, lang = analysis.lexicon, analysis.language
        failed = [r for r, o in outcomes if o.verdict is Verdict.failed]
        passed = [r for r, o in outcomes if o.verdict is Verdict.passed]
        checked = [r for r, o in outcomes if o.verdict is not Verdict.not_applicable]
        if not failed:
            return str(lex.phrase("summary", "all_pass"))
        worst = max(failed, key=lambda r: r.severity.rank)
        parts = [
            lex.phrase("summary", "failing").format(
                n=len(failed), total=len(checked), title=worst.title.get(lang)
            ),
            lex.phrase("summary", "next_step").format(fix=worst.fix.get(lang)),
        ]
        if passed:
            titles = ", ".join(r.title.get(lang) for r in passed)
            parts.append(lex.phrase("summary", "strengths").format(titles=titles))
        return " ".join(parts)

    @staticmethod
    def _suggestions(analysis: Analysis, outcomes: list[tuple[Rule, Outcome]]) -> Suggestions:
        lex = analysis.lexicon
        failed = {r.id for r, o in outcomes if o.verdict is Verdict.failed}
        questions = list(lex.phrase("suggestions", "questions"))
        ctx = analysis.request.context
        if ctx and ctx.recipient and ctx.recipient.company:
            company = ctx.recipient.company
            questions.insert(
                0, lex.phrase("suggestions", "questions_company").format(company=company)
            )
        offers = list(lex.phrase("suggestions", "offers"))
        if "interest-in-them" not in failed and "quality-over-quantity" not in failed:
            questions = questions[:2]
        if "give-first" not in failed:
            offers = offers[:2]
        return Suggestions(questions=questions[:4], offers=offers)


@register("rules")
def _factory(rulebook: Rulebook, settings: Settings) -> RuleEngine:
    return RuleEngine(rulebook)
