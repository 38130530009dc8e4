"""Wire models: the single source of truth for what goes in and comes out of a review.

The HTTP API, the CLI's JSON output, the eval harness and (later) the LLM's JSON schema are all
generated from these classes; nothing restates them by hand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MAX_TEXT_CHARS",
    "Channel",
    "Context",
    "DraftText",
    "Finding",
    "Kind",
    "Language",
    "Recipient",
    "Relationship",
    "Review",
    "ReviewRequest",
    "Rewrite",
    "RewriteChange",
    "RewriteCheck",
    "RuleResult",
    "Severity",
    "Span",
    "Suggestions",
    "ThreadMessage",
    "Usage",
    "Verdict",
]

#: Longest draft accepted, in code points. Documented in the README; the CLI exits 2 above it.
MAX_TEXT_CHARS = 20_000


class Kind(StrEnum):
    message = "message"
    template = "template"
    meeting_notes = "meeting_notes"


class Language(StrEnum):
    en = "en"
    he = "he"


class Relationship(StrEnum):
    new = "new"
    met = "met"
    established = "established"


class Channel(StrEnum):
    email = "email"
    linkedin = "linkedin"
    sms = "sms"
    other = "other"


class Verdict(StrEnum):
    passed = "pass"
    failed = "fail"
    not_applicable = "not_applicable"


class Severity(StrEnum):
    error = "error"
    warning = "warning"
    suggestion = "suggestion"

    @property
    def rank(self) -> int:
        """Higher is more severe; used by `--fail-on`."""
        return {"suggestion": 1, "warning": 2, "error": 3}[self.value]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipient(_Model):
    name: str | None = None
    role: str | None = None
    company: str | None = None


class ThreadMessage(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Literal["me", "them"] = Field(alias="from")
    text: str


class Context(_Model):
    relationship: Relationship | None = None
    channel: Channel | None = None
    recipient: Recipient | None = None
    thread: list[ThreadMessage] = Field(default_factory=list)
    notes: str | None = None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty or whitespace only")
    return value


#: The text of a draft: not blank, at most MAX_TEXT_CHARS code points. Shared by the review
#: input and the eval datasets, so a dataset case is exactly what the API accepts.
DraftText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS),
    AfterValidator(_not_blank),
]


class ReviewRequest(_Model):
    text: DraftText
    kind: Kind = Kind.message
    language: Language | None = None
    context: Context | None = None


class Span(_Model):
    """Where a finding points. `start`/`end` count code points (Python); the `_utf16` pair counts
    UTF-16 code units, which is how browsers index strings (an emoji is 2 units, 1 code point)."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    start_utf16: int = Field(ge=0)
    end_utf16: int = Field(ge=0)
    quote: str


class RuleResult(_Model):
    rule_id: str
    verdict: Verdict
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str
    severity: Severity
    source: Literal["rules", "llm"] = Field(
        default="rules",
        description="Which engine decided this verdict. In an LLM review, a verdict the model "
        "did not give is filled from the rule engine and marked 'rules'.",
    )


class Finding(_Model):
    rule_id: str
    severity: Severity
    message: str
    suggestion: str
    span: Span


class Suggestions(_Model):
    questions: list[str] = Field(default_factory=list)
    offers: list[str] = Field(default_factory=list)


class RewriteChange(_Model):
    rule_id: str | None
    description: str


class RewriteCheck(_Model):
    """The rule engine's check of a rewrite a model wrote."""

    passes: bool
    failing_rules: list[str] = Field(default_factory=list)
    missing: list[str] = Field(
        default_factory=list,
        description="Merge fields, links, e-mail addresses, dates and names of the draft that "
        "the rewrite lost.",
    )


class Rewrite(_Model):
    text: str
    changes: list[RewriteChange]
    structural: bool = Field(
        description="True when the rewrite only restructures the draft (rule engine); "
        "False when a model wrote the prose."
    )
    note: str
    check: RewriteCheck | None = None


class Usage(_Model):
    """What one LLM review cost."""

    model: str
    prompt_version: str
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    calls: int = 0
    latency_ms: float = 0.0
    cost_usd: float | None = Field(
        default=None, description="Estimated from the price table; null for unknown models."
    )
    cache_hit: bool = False


class Review(_Model):
    rules: list[RuleResult]
    findings: list[Finding]
    summary: str
    score: int = Field(ge=0, le=100)
    suggestions: Suggestions
    rewrite: Rewrite | None
    engine: Literal["rules", "llm"]
    degraded: bool = False
    degraded_reason: str | None = None
    rulebook_version: str
    language: Language
    kind: Kind
    usage: Usage | None = None

    def verdict(self, rule_id: str) -> Verdict | None:
        for result in self.rules:
            if result.rule_id == rule_id:
                return result.verdict
        return None
