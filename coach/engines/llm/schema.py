"""What the model must answer, as pydantic models, and the strict JSON schema derived from them.

The model returns quotes, never offsets: our code finds each quote in the draft and computes
the span (`coach/engines/llm/assemble.py`). The schema sent to the provider is generated from
these classes (`strict_schema`), never written by hand.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LLMFinding",
    "LLMReview",
    "LLMRewrite",
    "LLMRuleVerdict",
    "LLMSuggestions",
    "strict_schema",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LLMRuleVerdict(_Out):
    rule_id: str = Field(description="A rule id from the rulebook, exactly as written there.")
    verdict: Literal["pass", "fail", "not_applicable"]
    confidence: float = Field(description="0 to 1.")
    reason: str = Field(description="One sentence, in the draft's language.")


class LLMFinding(_Out):
    rule_id: str
    quote: str = Field(
        description="The exact text of the draft this finding is about, copied verbatim."
    )
    message: str = Field(description="What is wrong here, in the draft's language.")
    suggestion: str = Field(description="How to fix it, in the draft's language.")


class LLMSuggestions(_Out):
    questions: list[str] = Field(description="Questions the writer could ask the recipient.")
    offers: list[str] = Field(description="Ways the writer could give something first.")


class LLMRewrite(_Out):
    text: str = Field(
        description="The rewritten draft. Keep every merge field, name, date and link exactly."
    )
    changes: list[str] = Field(description="What changed and why, one short line each.")


class LLMReview(_Out):
    rules: list[LLMRuleVerdict] = Field(description="One verdict per rule of the rulebook.")
    findings: list[LLMFinding]
    summary: str = Field(description="The overall critique in two or three sentences.")
    suggestions: LLMSuggestions
    rewrite: LLMRewrite | None = Field(description="Null when no rewrite was asked for.")


# Keywords outside the strict structured-output subset; they are dropped from the schema (the
# pydantic models still enforce what they can when the answer is parsed).
_UNSUPPORTED = {
    "default",
    "title",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minItems",
    "maxItems",
    "examples",
}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {
            k: (
                {name: _strict(sub) for name, sub in v.items()} if k == "properties" else _strict(v)
            )
            for k, v in node.items()
            if k not in _UNSUPPORTED
        }
        if out.get("type") == "object" and "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


def strict_schema(model: type[BaseModel] = LLMReview) -> dict[str, Any]:
    """The model's JSON schema in the strict subset: every field required, nullable unions
    for optional ones, `additionalProperties: false` on every object."""
    return _strict(copy.deepcopy(model.model_json_schema()))  # type: ignore[no-any-return]
