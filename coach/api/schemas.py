"""API models: what the HTTP API accepts beyond the wire models of `coach.models`.

A review request is the review input (`coach.models.ReviewRequest`, reused as is) plus how to
review it. Responses are the wire models themselves (`Review`, `Rulebook`, `Rule`); the models
here only describe what the API adds: health, readiness and problem documents.
"""

from __future__ import annotations

from typing import Any, Literal

from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, Field

from coach.api.problems import PROBLEM_MEDIA_TYPE
from coach.models import ReviewRequest

__all__ = [
    "BEARER",
    "FieldProblem",
    "Health",
    "Problem",
    "Readiness",
    "ReviewCreate",
    "problems",
]

#: The OpenAPI security requirement of the routes that need an API key.
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


class ReviewCreate(ReviewRequest):
    """A draft to review, its context, and how to review it."""

    engine: Literal["rules", "llm", "auto"] = Field(
        default="rules",
        description="'rules': the offline rule engine; 'llm': the configured LLM (falls back to "
        "the rule engine with degraded=true on failure); 'auto': the LLM when one is "
        "configured, else the rule engine.",
    )
    rewrite: bool = Field(default=True, description="Whether to propose a rewrite.")

    def to_request(self) -> ReviewRequest:
        """The review input alone (already validated), as the service expects it."""
        return ReviewRequest.model_construct(
            **{name: getattr(self, name) for name in ReviewRequest.model_fields}
        )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Health(_Model):
    status: Literal["ok"] = "ok"


class Readiness(_Model):
    status: Literal["ready", "not_ready"]
    store: bool = Field(description="Whether the database answers.")
    llm_configured: bool = Field(description="Whether an LLM engine is configured.")
    rulebook_version: str


class FieldProblem(_Model):
    field: str = Field(description="Dotted location of the field, e.g. 'context.thread.0.text'.")
    message: str = Field(description="What is wrong; never the value that was sent.")


class Problem(_Model):
    """An RFC 9457 problem document (served as application/problem+json)."""

    type: str = Field(description="Stable URI per kind of error: https://coach.dev/problems/…")
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[FieldProblem] | None = None
    field: str | None = Field(default=None, description="The field a limit applies to.")
    limit: int | None = Field(default=None, description="The limit that was exceeded.")


_DESCRIPTIONS = {
    400: "Malformed JSON or an unusable request (problem+json).",
    401: "Missing, unknown or revoked API key (problem+json, WWW-Authenticate: Bearer).",
    404: "Not found (problem+json).",
    413: "Request body over 64 KiB (problem+json).",
    422: "Validation failed: the fields in `errors`, never the values (problem+json).",
    429: "Rate limit of the API key exceeded (problem+json, Retry-After, RateLimit-*).",
    500: "Unexpected error (problem+json; quote `request_id`).",
    503: "Not ready: the database does not answer (problem+json).",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the problems a route can answer with."""
    specs: dict[int, Any] = {}
    for status in statuses:
        specs[status] = ResponseSpec(
            data_container=Problem,
            generate_examples=False,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_MEDIA_TYPE,
        )
    return specs
