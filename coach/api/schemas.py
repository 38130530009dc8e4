"""API models: what the HTTP API accepts beyond the wire models of `coach.models`.

A review request is the review input (`coach.models.ReviewRequest`, reused as is) plus how to
review it. Responses are the wire models themselves (`Review`, `Rulebook`, `Rule`); the models
here only describe what the API adds: health, readiness and problem documents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, Field

from coach.api.problems import PROBLEM_MEDIA_TYPE
from coach.models import Review, ReviewRequest

__all__ = [
    "BEARER",
    "BatchCounts",
    "BatchCreate",
    "BatchItemIn",
    "BatchResultLine",
    "BatchStatus",
    "FieldProblem",
    "Health",
    "Problem",
    "Readiness",
    "ReviewCreate",
    "WebhookSecret",
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


EngineChoice = Literal["rules", "llm", "auto"]


class WebhookSecret(_Model):
    secrets: list[str] = Field(
        description="The caller's webhook signing secrets (`whsec_…`), the current one first; "
        "more than one only while the server's secret is being rotated. Verify events with any."
    )


class BatchItemIn(ReviewRequest):
    """One draft of a batch: a review input and, optionally, your id for it."""

    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your id for the item (unique in the batch); results name it. Default: "
        "the item's position, from 0.",
    )

    def to_request(self) -> ReviewRequest:
        return ReviewRequest.model_construct(
            **{name: getattr(self, name) for name in ReviewRequest.model_fields}
        )


class BatchCreate(_Model):
    """A batch of drafts to review in the background."""

    items: list[BatchItemIn] = Field(
        min_length=1, description="The drafts; at most COACH_BATCH_MAX_ITEMS (default 10,000)."
    )
    engine: EngineChoice = Field(
        default="rules",
        description="As for a single review. With 'llm', an item whose LLM review fails is "
        "retried later, then failed with its reason; it is not degraded to the rule engine.",
    )
    rewrite: bool = True
    webhook_url: str | None = Field(
        default=None,
        max_length=2000,
        description="http(s) URL to receive `batch.completed` / `batch.failed` / "
        "`batch.cancelled` events, signed per Standard Webhooks (see docs/webhooks.md).",
    )


class BatchCounts(_Model):
    total: int
    pending: int
    running: int
    done: int
    failed: int
    cancelled: int


class BatchStatus(_Model):
    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"] = Field(
        description="'completed': every item reviewed; 'failed': finished, some items failed "
        "(their reasons are in the results); 'cancelled': stopped, finished items kept."
    )
    engine: Literal["rules", "llm"]
    rewrite: bool
    counts: BatchCounts
    progress: float = Field(ge=0, le=1, description="Share of items finished.")
    created_at: datetime
    finished_at: datetime | None
    results_url: str


class BatchResultLine(_Model):
    """One line of `GET /v1/batches/{id}/results` (JSONL)."""

    item: str = Field(description="The item's id (yours, or its position).")
    cursor: int = Field(description="Pass as `cursor` to continue after this line.")
    status: Literal["done", "failed", "cancelled"]
    attempts: int
    review: Review | None = None
    error: str | None = Field(default=None, description="Why the item failed (one line).")
    duplicate_of: str | None = Field(
        default=None, description="The item with the identical draft whose review this is."
    )


_DESCRIPTIONS = {
    400: "Malformed JSON or an unusable request (problem+json).",
    401: "Missing, unknown or revoked API key (problem+json, WWW-Authenticate: Bearer).",
    404: "Not found (problem+json).",
    415: "The body's Content-Type is not one this route reads (problem+json).",
    413: "Request body over the limit: 64 KiB for a review, 32 MiB for a batch (problem+json).",
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
