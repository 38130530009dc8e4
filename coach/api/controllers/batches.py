"""Batch jobs over HTTP: create, watch, read results, cancel.

    POST /v1/batches               items inline (JSON)                   -> 202 BatchStatus
    POST /v1/batches/jsonl         a JSONL upload, options in the query  -> 202 BatchStatus
    GET  /v1/batches/{id}          status, counts, progress
    GET  /v1/batches/{id}/results  JSONL, streamed, in item order, resumable with ?cursor=
    POST /v1/batches/{id}/cancel   stop the items not started
    POST /v1/batches/{id}/retry    re-queue the failed items

Batches live in the store and are reviewed by workers (`coach worker`, or the API process's
own in-process worker, COACH_WORKER_IN_PROCESS). A batch of another tenant is a 404, exactly
like one that does not exist.

`Idempotency-Key` (any string up to 200 characters, scoped to the tenant): the same key with
the same request returns the batch it created (`Idempotent-Replayed: true`); the same key with
a different request is a 422 `idempotency-key-reused`. "The same request" means the same items
and options after parsing, so whitespace or key order in the JSON do not matter.

Results stream in item order. While the batch runs, the stream stops at the first item not
finished yet, so a client that resumes with the last `cursor` it read never misses an item
that finished out of order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter, RawBody
from litestar.response import Stream
from pydantic import ValidationError

from coach.api.auth import principal_of
from coach.api.context import Api, ApiState
from coach.api.problems import MAX_BATCH_BODY_BYTES, ApiProblem
from coach.api.schemas import (
    BEARER,
    BatchCounts,
    BatchCreate,
    BatchItemIn,
    BatchResultLine,
    BatchStatus,
    EngineChoice,
    problems,
)
from coach.batch.inputs import InputItem
from coach.batch.jobs import new_item
from coach.errors import first_validation_error
from coach.store.batches import BatchRecord, BatchStore, IdempotencyConflict, NewItem
from coach.webhooks import check_url

__all__ = ["BatchController"]

AnyRequest = Request[Any, Any, Any]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=200,
        description="Retry-safe creation: the same key and request return the same batch.",
    ),
]
_RESULTS_PAGE = 500
JSONL_MEDIA_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-lines")


@dataclass
class _JsonlUpload(Operation):
    """The JSONL upload's request body in the OpenAPI document: the handler reads the raw
    body (Litestar would parse any other body parameter as JSON)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="One review input per line.",
            content={
                media: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
                for media in JSONL_MEDIA_TYPES
            },
        )


def _store(api: ApiState) -> BatchStore:
    store = api.store
    if not isinstance(store, BatchStore):
        raise ApiProblem("not-ready", "batch jobs need the database, which is not open")
    return store


def _public_state(record: BatchRecord) -> str:
    # `open` (coach batch still reading its inputs) is the store's own; clients see `queued`.
    return "queued" if record.state == "open" else record.state


def status_of(record: BatchRecord, counts: dict[str, int]) -> BatchStatus:
    total = sum(counts.values())
    finished = counts["done"] + counts["failed"] + counts["cancelled"]
    state = _public_state(record)
    return BatchStatus(
        id=record.id,
        status=state,
        engine=record.engine,
        rewrite=record.rewrite,
        counts=BatchCounts(
            total=total,
            pending=counts["pending"],
            running=counts["leased"],
            done=counts["done"],
            failed=counts["failed"],
            cancelled=counts["cancelled"],
        ),
        progress=round(finished / total, 4) if total else 1.0,
        created_at=record.created_at,
        finished_at=record.finished_at,
        results_url=f"/v1/batches/{record.id}/results",
    )


class BatchController(Controller):
    path = "/v1/batches"
    tags = ["batches"]  # noqa: RUF012
    security = BEARER

    @post(
        "/",
        status_code=202,
        summary="Create a batch (items inline)",
        description="Queues the items for review in the background and returns at once. "
        "Watch `GET /v1/batches/{id}` or receive a webhook; read `results_url`.",
        request_max_body_size=MAX_BATCH_BODY_BYTES,
        responses=problems(400, 401, 413, 422, 429, 500, 503),
    )
    async def create(
        self,
        request: AnyRequest,
        data: JSONBody[BatchCreate],
        api: Api,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BatchStatus]:
        return await _create(request, api, data, idempotency_key)

    @post(
        "/jsonl",
        status_code=202,
        summary="Create a batch from a JSONL upload",
        description="The body is JSONL (`application/jsonl` or `application/x-ndjson`): one "
        "review input per line (`id` optional, `text`, `kind`, `language`, `context`). "
        "Options come in the query.",
        request_max_body_size=MAX_BATCH_BODY_BYTES,
        responses=problems(400, 401, 413, 415, 422, 429, 500, 503),
        operation_class=_JsonlUpload,
    )
    async def create_jsonl(
        self,
        request: AnyRequest,
        body: RawBody,
        api: Api,
        engine: FromQuery[EngineChoice] = "rules",
        rewrite: FromQuery[bool] = True,
        webhook_url: Annotated[str | None, QueryParameter(max_length=2000)] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BatchStatus]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSONL_MEDIA_TYPES:
            raise ApiProblem(
                "unsupported-media-type",
                f"send the items as {' or '.join(JSONL_MEDIA_TYPES)}",
            )
        items = _parse_jsonl(body, api.settings.batch_max_items)
        try:
            create = BatchCreate(
                items=items, engine=engine, rewrite=rewrite, webhook_url=webhook_url
            )
        except ValidationError as exc:
            raise ApiProblem("unprocessable", first_validation_error(exc)) from None
        return await _create(request, api, create, idempotency_key)

    @get(
        "/{batch_id:str}",
        summary="A batch's status, counts and progress",
        responses=problems(401, 404, 429, 500, 503),
    )
    async def show(self, request: AnyRequest, batch_id: FromPath[str], api: Api) -> BatchStatus:
        store = _store(api)
        record = await _owned(store, request, batch_id)
        return status_of(record, await store.batch_counts(record.id))

    @get(
        "/{batch_id:str}/results",
        media_type="application/jsonl",
        summary="A batch's results as JSONL (streamed, resumable)",
        description="One `BatchResultLine` per finished item, in item order, from after "
        "`cursor`. While the batch runs, the stream ends at the first unfinished item; "
        "call again with the last `cursor` you read. The `Coach-Batch-Status` header says "
        "whether more will come.",
        responses={
            200: ResponseSpec(
                data_container=BatchResultLine,
                media_type="application/jsonl",
                description="One BatchResultLine per line.",
                generate_examples=False,
            ),
            **problems(401, 404, 422, 429, 500, 503),
        },
    )
    async def results(
        self,
        request: AnyRequest,
        batch_id: FromPath[str],
        api: Api,
        cursor: Annotated[int, QueryParameter(ge=-1, description="Last cursor read.")] = -1,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1_000_000)] = None,
    ) -> Stream:
        store = _store(api)
        record = await _owned(store, request, batch_id)
        return Stream(
            _result_lines(store, record.id, cursor, limit),
            media_type="application/jsonl",
            headers={"Coach-Batch-Status": _public_state(record)},
        )

    @post(
        "/{batch_id:str}/retry",
        status_code=202,
        summary="Retry a batch's failed items",
        description="Re-queues the items that failed (after their retries, or because a "
        "worker was lost); items whose input could not be read stay failed. A `failed` batch "
        "runs again and ends with a new event.",
        responses=problems(401, 404, 422, 429, 500, 503),
    )
    async def retry(self, request: AnyRequest, batch_id: FromPath[str], api: Api) -> BatchStatus:
        return await _retry(api, request, batch_id)

    @post(
        "/{batch_id:str}/cancel",
        status_code=202,
        summary="Cancel a batch",
        description="Items not started are cancelled; items being reviewed finish. "
        "Finished results stay readable.",
        responses=problems(401, 404, 429, 500, 503),
    )
    async def cancel(self, request: AnyRequest, batch_id: FromPath[str], api: Api) -> BatchStatus:
        store = _store(api)
        record = await _owned(store, request, batch_id)
        cancelled = await store.cancel_batch(record.id, tenant=record.tenant)
        assert cancelled is not None
        return status_of(cancelled, await store.batch_counts(record.id))

    @delete(
        "/{batch_id:str}",
        status_code=204,
        summary="Delete a batch",
        description="Deletes the batch now, with its drafts, results and webhook events, "
        "whatever its state (items being reviewed are dropped). Finished batches are also "
        "deleted on their own after `COACH_BATCH_RETENTION_DAYS`.",
        responses=problems(401, 404, 429, 500, 503),
    )
    async def remove(self, request: AnyRequest, batch_id: FromPath[str], api: Api) -> None:
        store = _store(api)
        record = await _owned(store, request, batch_id)
        if not await store.delete_batch(record.id, tenant=record.tenant):
            raise ApiProblem("batch-not-found", "no batch with this id")


async def _retry(api: ApiState, request: AnyRequest, batch_id: str) -> BatchStatus:
    store = _store(api)
    record = await _owned(store, request, batch_id)
    if record.state == "cancelled":
        raise ApiProblem("unprocessable", "a cancelled batch cannot be retried")
    await store.retry_failed(record.id)
    refreshed = await store.get_batch(record.id)
    assert refreshed is not None
    return status_of(refreshed, await store.batch_counts(record.id))


async def _owned(store: BatchStore, request: AnyRequest, batch_id: str) -> BatchRecord:
    tenant = principal_of(request.scope).tenant
    record = await store.get_batch(batch_id, tenant=tenant) if len(batch_id) <= 64 else None
    if record is None:
        raise ApiProblem("batch-not-found", "no batch with this id")
    return record


async def _create(
    request: AnyRequest, api: ApiState, data: BatchCreate, idempotency_key: str | None
) -> Response[BatchStatus]:
    store = _store(api)
    settings = api.settings
    tenant = principal_of(request.scope).tenant
    if len(data.items) > settings.batch_max_items:
        raise ApiProblem(
            "too-many-items",
            f"a batch holds at most {settings.batch_max_items} items",
            members={"limit": settings.batch_max_items},
        )
    engine = api.service.resolve(data.engine)  # InputError (422) when the LLM is not set up
    webhook_url = None
    if data.webhook_url is not None:
        if not settings.webhook_secrets:
            raise ApiProblem(
                "unprocessable", "webhooks are not configured on this server (no signing secret)"
            )
        webhook_url = check_url(data.webhook_url, allow_private=settings.webhook_allow_private)
    items = _new_items(data.items, engine=engine, rewrite=data.rewrite)
    request_hash = hashlib.sha256(data.model_dump_json().encode("utf-8")).hexdigest()
    try:
        record, created = await store.create_batch(
            tenant,
            engine=engine,
            rewrite=data.rewrite,
            source="api",
            items=items,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            request_hash=request_hash if idempotency_key is not None else None,
        )
    except IdempotencyConflict:
        raise ApiProblem(
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request",
        ) from None
    status = status_of(record, await store.batch_counts(record.id))
    headers = {"Location": f"/v1/batches/{record.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return Response(status, status_code=202, headers=headers)


def _new_items(items: list[BatchItemIn], *, engine: str, rewrite: bool) -> list[NewItem]:
    seen: set[str] = set()
    out: list[NewItem] = []
    for index, item in enumerate(items):
        key = item.id if item.id is not None else str(index)
        if key in seen:
            raise ApiProblem("unprocessable", f"items.{index}.id: duplicate id in the batch")
        seen.add(key)
        location: dict[str, str | int] = {"id": key} if item.id is not None else {"index": index}
        out.append(
            new_item(InputItem(key, location, item.to_request()), engine=engine, rewrite=rewrite)
        )
    return out


def _parse_jsonl(body: bytes, max_items: int) -> list[BatchItemIn]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiProblem("bad-request", "the body is not UTF-8") from None
    items: list[BatchItemIn] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(items) >= max_items:
            raise ApiProblem(
                "too-many-items",
                f"a batch holds at most {max_items} items",
                members={"limit": max_items},
            )
        try:
            raw = json.loads(line)
        except ValueError:
            raise ApiProblem("malformed-json", f"line {number} is not valid JSON") from None
        try:
            items.append(BatchItemIn.model_validate(raw))
        except ValidationError as exc:
            raise ApiProblem(
                "unprocessable", f"line {number}: {first_validation_error(exc)}"
            ) from None
    if not items:
        raise ApiProblem("unprocessable", "the upload holds no items")
    return items


async def _result_lines(
    store: BatchStore, batch_id: str, cursor: int, limit: int | None
) -> AsyncIterator[bytes]:
    sent = 0
    while limit is None or sent < limit:
        want = _RESULTS_PAGE if limit is None else min(_RESULTS_PAGE, limit - sent)
        page = await store.results_page(batch_id, after_seq=cursor, limit=want, contiguous=True)
        if not page:
            return
        for result in page:
            line = BatchResultLine(
                item=result.key,
                cursor=result.seq,
                status=result.state,
                attempts=result.attempts,
                review=None,
                error=result.error if result.state != "done" else None,
                duplicate_of=result.duplicate_of,
            )
            encoded = line.model_dump_json(exclude_none=True)
            if result.result is not None:
                # The stored review is already JSON: splice it in rather than parse and
                # re-serialise it for every line.
                encoded = encoded[:-1] + ',"review":' + result.result + "}"
            yield (encoded + "\n").encode("utf-8")
            sent += 1
        cursor = page[-1].seq
        if len(page) < want:
            return
