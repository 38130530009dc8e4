"""Errors -> RFC 9457 problem details (`application/problem+json`).

`problem_response` is the one function that turns any exception raised while serving a request
into an HTTP response. Every 4xx and 5xx of the API is a problem document:

    {"type": "https://coach.dev/problems/validation", "title": "...", "status": 422,
     "detail": "...", "request_id": "...", "errors": [{"field": "text", "message": "..."}]}

`type` is stable per kind of error (the table `PROBLEM_TYPES`), so clients branch on it, never on
`detail`. Nothing here ever copies a request body, a draft, a header value or a traceback into a
response: validation messages are built from the error type and location, never from the input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    SerializationException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Message, Send

from coach.api.context import request_info
from coach.errors import CoachError, InputError, LLMError
from coach.models import MAX_TEXT_CHARS

__all__ = [
    "MAX_BATCH_BODY_BYTES",
    "MAX_BODY_BYTES",
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPES",
    "ApiProblem",
    "problem_for",
    "problem_response",
    "send_problem",
]

PROBLEM_BASE = "https://coach.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

#: Largest request body accepted, in bytes (chunked bodies are counted as they arrive).
MAX_BODY_BYTES = 64 * 1024
#: Largest body of a batch creation (items inline or a JSONL upload).
MAX_BATCH_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str


#: Every problem the API returns, by the last segment of its `type` URI.
PROBLEM_TYPES: dict[str, ProblemType] = {
    "bad-request": ProblemType(400, "Bad request"),
    "malformed-json": ProblemType(400, "Malformed JSON"),
    "unauthorized": ProblemType(401, "Unauthorized"),
    "cors-refused": ProblemType(403, "Cross-origin request refused"),
    "not-found": ProblemType(404, "Not found"),
    "rule-not-found": ProblemType(404, "Unknown rule"),
    "batch-not-found": ProblemType(404, "Unknown batch"),
    "method-not-allowed": ProblemType(405, "Method not allowed"),
    "body-too-large": ProblemType(413, "Request body too large"),
    "unsupported-media-type": ProblemType(415, "Unsupported media type"),
    "validation": ProblemType(422, "Validation failed"),
    "draft-too-long": ProblemType(422, "Draft too long"),
    "unprocessable": ProblemType(422, "Request cannot be processed"),
    "too-many-items": ProblemType(422, "Too many items"),
    "idempotency-key-reused": ProblemType(422, "Idempotency-Key reused with another request"),
    "rate-limited": ProblemType(429, "Too many requests"),
    "internal": ProblemType(500, "Internal server error"),
    "llm-unavailable": ProblemType(503, "LLM unavailable"),
    "not-ready": ProblemType(503, "Service not ready"),
}


class ApiProblem(Exception):
    """An error the API raises on purpose; `slug` is a key of `PROBLEM_TYPES`."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        members: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.members = dict(members or {})

    @property
    def status(self) -> int:
        kind = PROBLEM_TYPES.get(self.slug)
        return kind.status if kind else _status_of_generic(self.slug)

    @property
    def title(self) -> str:
        kind = PROBLEM_TYPES.get(self.slug)
        return kind.title if kind else HTTPStatus(self.status).phrase

    def body(self, request_id: str | None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if request_id:
            document["request_id"] = request_id
        document.update(self.members)
        return document


def _status_of_generic(slug: str) -> int:
    # "http-418" for statuses the table does not name.
    try:
        return int(slug.removeprefix("http-"))
    except ValueError:
        return 500


# -- the mapping -------------------------------------------------------------------------------


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The exception handler of the app: any exception -> a problem+json response."""
    problem = problem_for(exc)
    if isinstance(exc, RequestEntityTooLarge) and request.scope["path"].startswith("/v1/batches"):
        problem = _too_large(MAX_BATCH_BODY_BYTES)
    info = request_info(request.scope)
    if problem.status >= 500 and not isinstance(exc, ApiProblem):
        # The class name only: an exception's message may quote what it was given.
        info.error = info.error or exc.__class__.__name__
    return Response(
        content=_encode(problem.body(info.request_id or None)),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def problem_for(exc: Exception) -> ApiProblem:
    """The problem an exception means. Messages come from this module or from coach's own
    errors (which never contain a draft), never from a request."""
    if isinstance(exc, ApiProblem):
        return exc
    if isinstance(exc, ValidationException):
        return _validation_problem(exc)
    if isinstance(exc, RequestEntityTooLarge):
        return _too_large(MAX_BODY_BYTES)
    if isinstance(exc, NotAuthorizedException):
        return ApiProblem(
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(exc, NotFoundException):
        return ApiProblem("not-found", "no resource at this path")
    if isinstance(exc, MethodNotAllowedException):
        return ApiProblem(
            "method-not-allowed",
            "this path does not accept this method",
            headers=_allow_header(exc.headers),
        )
    if isinstance(exc, TooManyRequestsException):
        return ApiProblem("rate-limited", "too many requests", headers=exc.headers or {})
    if isinstance(exc, ClientException) and isinstance(exc.__cause__, SerializationException):
        return ApiProblem("malformed-json", "the request body is not valid JSON")
    if isinstance(exc, HTTPException):
        return _generic_http_problem(exc)
    if isinstance(exc, InputError):
        return ApiProblem("unprocessable", str(exc))
    if isinstance(exc, LLMError):
        # The service falls back to the rule engine; this is a last line of defence.
        return ApiProblem("llm-unavailable", f"the LLM engine failed ({exc.code})")
    if isinstance(exc, CoachError):
        return ApiProblem("internal", "the server could not complete the review")
    return ApiProblem("internal", "an unexpected error occurred; quote the request id")


def _too_large(limit: int) -> ApiProblem:
    return ApiProblem(
        "body-too-large",
        f"the request body is larger than {limit} bytes",
        members={"limit": limit},
    )


def _allow_header(headers: Mapping[str, str] | None) -> dict[str, str]:
    for name, value in (headers or {}).items():
        if name.lower() == "allow":
            return {"Allow": value}
    return {}


def _generic_http_problem(exc: HTTPException) -> ApiProblem:
    status = exc.status_code
    slug = {
        400: "bad-request",
        401: "unauthorized",
        404: "not-found",
        413: "body-too-large",
        415: "unsupported-media-type",
        429: "rate-limited",
    }.get(status)
    if slug is None:
        slug = "internal" if status == 500 else f"http-{status}"
    try:
        detail = HTTPStatus(status).description or HTTPStatus(status).phrase
    except ValueError:
        detail = "the request failed"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return ApiProblem(slug, detail.rstrip(".").lower() if detail else detail, headers=headers)


# -- validation errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class _FieldError:
    field: str
    message: str
    type: str = ""
    ctx: Mapping[str, Any] | None = None


def _validation_problem(exc: ValidationException) -> ApiProblem:
    errors = _field_errors(exc)
    listed = [{"field": e.field, "message": e.message} for e in errors]
    for error in errors:
        if error.type == "string_too_long" and error.field == "text":
            limit = (error.ctx or {}).get("max_length", MAX_TEXT_CHARS)
            return ApiProblem(
                "draft-too-long",
                f"text: the draft is longer than {limit} characters (the limit)",
                members={"field": "text", "limit": limit, "errors": listed},
            )
    fields = ", ".join(dict.fromkeys(e.field for e in errors)) or "body"
    return ApiProblem("validation", f"invalid field(s): {fields}", members={"errors": listed})


def _field_errors(exc: ValidationException) -> list[_FieldError]:
    # Litestar's pydantic plugin keeps pydantic's error list (with the input) on the cause:
    # use its type, location and context, and drop the input.
    raw = getattr(exc.__cause__, "errors", None)
    if isinstance(raw, list) and raw and all(isinstance(e, dict) for e in raw):
        return [_from_pydantic(e) for e in raw]
    extra = exc.extra if isinstance(exc.extra, list) else []
    found = [
        _FieldError(name, "a JSON object is required" if name == "body" else "missing or invalid")
        for item in extra
        if isinstance(item, dict)
        for name in [_field_name(str(item.get("key", "")))]
    ]
    return found or [_FieldError("body", "a JSON object is required")]


def _field_name(key: str) -> str:
    key = key.removeprefix("data.").removeprefix("data")
    return (key or "body")[:80]


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts)[:80] if parts else "body"


def _from_pydantic(error: Mapping[str, Any]) -> _FieldError:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") if isinstance(error.get("ctx"), dict) else {}
    assert isinstance(ctx, dict)
    where = _location(error.get("loc") or ())
    message = _MESSAGES.get(kind)
    if message is None:
        message = _template_message(kind, ctx)
    safe_ctx = {k: v for k, v in ctx.items() if isinstance(v, int | float | str)}
    message = _scrub(message, error.get("input"))
    return _FieldError(where, message, kind, safe_ctx)


_MESSAGES: dict[str, str] = {
    "missing": "required",
    "extra_forbidden": "not an allowed field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "none_required": "must be null",
    "frozen_instance": "cannot be changed",
}


_BOUNDS: dict[str, tuple[str, str]] = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _template_message(kind: str, ctx: Mapping[str, Any]) -> str:
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"at least {ctx.get('min_length')} characters"
    if kind in {"enum", "literal_error"}:
        return f"must be one of {ctx.get('expected')}"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {ctx.get(key)}"
    if kind == "value_error":
        # Raised by coach's own validators, whose messages never quote the value.
        return str(ctx.get("error", "invalid value"))
    return f"invalid value ({kind})" if kind else "invalid value"


def _scrub(message: str, value: Any) -> str:
    """A last guard: a message that contains the rejected value is replaced."""
    if isinstance(value, str) and len(value.strip()) >= 3 and value.strip() in message:
        return "invalid value"
    return message


# -- rendering ---------------------------------------------------------------------------------


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def send_problem(
    send: Send,
    problem: ApiProblem,
    request_id: str | None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a problem from raw ASGI code (middleware outside Litestar's exception handling)."""
    body = _encode(problem.body(request_id))
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()),
        *extra_headers,
    ]
    start: Message = {
        "type": "http.response.start",
        "status": problem.status,
        "headers": headers,
    }
    await send(start)
    end: Message = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
