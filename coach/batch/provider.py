"""Very large review jobs through the provider's Batch API (`--provider-batch`).

OpenAI's Batch API (and Azure OpenAI's global batch, and vLLM and others that implement the
same endpoints) takes a JSONL file of chat.completions requests, answers within a completion
window at half the price, and returns an output file and an error file keyed by `custom_id`.

The life of a job, and what survives a restart (everything lives in the `ProviderState` the
batch runner persists, plus the chunk files in `workdir`):

1. `submit` streams the items into JSONL chunk files (split by request count and bytes) and
   saves the chunk list; then, per chunk, uploads the file (saved with the file id) and creates
   the batch (saved with the batch id). A restart skips every step the state records: a file
   is never uploaded twice once its id is saved, and before creating a batch for a file that a
   previous run uploaded, the provider's batch list is searched for one already created from
   it (the crash window between `batches.create` answering and the state being saved).
2. `wait` polls every unfinished batch until each is terminal, saving on every status change.
3. `results` streams each finished chunk's output and error files, merges them by `custom_id`
   and yields exactly one `ProviderResult` per submitted item. A chunk is marked merged only
   after its last result was yielded: delivery is at least once — a crash in the middle of a
   chunk yields that whole chunk again, so the caller's writes must be idempotent per item.

Nothing here logs a draft: logs carry counts, chunk numbers and provider ids.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol, TypeVar, cast

import openai

from coach.engines.llm.engine import LLMEngine
from coach.engines.llm.pricing import estimate_cost
from coach.errors import (
    LLMContentFiltered,
    LLMError,
    LLMProviderError,
    LLMRateLimited,
    LLMRefusal,
    LLMTruncated,
)
from coach.logs import get_logger
from coach.models import Review, ReviewRequest, Usage

__all__ = [
    "BATCH_PRICE_FACTOR",
    "STATE_VERSION",
    "ProviderBatch",
    "ProviderItem",
    "ProviderResult",
    "ProviderState",
]

log = get_logger("coach.batch.provider")

_T = TypeVar("_T")

STATE_VERSION = 1
#: OpenAI bills Batch API tokens at half the synchronous price.
BATCH_PRICE_FACTOR = 0.5
_ENDPOINT: Final = "/v1/chat/completions"
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Consecutive poll rounds that may fail transiently before `wait` gives up: a 24-hour wait
#: should outlive a provider blip, not a provider outage.
_MAX_POLL_FAILURES = 5
#: How far back the batch list is searched for a batch created before a crash.
_MAX_LISTED_BATCHES = 1000
_MAX_ERROR_CHARS = 300


class ProviderState(Protocol):
    """Where the job's state lives between runs (the batch runner keeps it in its database).
    `save` receives a JSON-serialisable dict; `load` returns the last one saved, or None."""

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ProviderItem:
    custom_id: str
    request: ReviewRequest


@dataclass(frozen=True)
class ProviderResult:
    custom_id: str
    review: Review | None
    #: One line, set when `review` is None: "invalid_output: ...", "provider: expired", or the
    #: provider's per-line error code and message.
    error: str | None


class ProviderBatch:
    def __init__(
        self,
        engine: LLMEngine,
        state: ProviderState,
        *,
        rewrite: bool = True,
        client: openai.AsyncOpenAI | None = None,
        workdir: Path,
        poll_interval_s: float = 30.0,
        max_requests_per_file: int = 50_000,
        max_file_bytes: int = 190_000_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        completion_window: str = "24h",
    ) -> None:
        if max_requests_per_file < 1 or max_file_bytes < 1:
            raise ValueError("max_requests_per_file and max_file_bytes must be positive")
        self.engine = engine
        self.store = state
        self.rewrite = rewrite
        self.workdir = workdir
        self.poll_interval_s = poll_interval_s
        self.max_requests_per_file = max_requests_per_file
        self.max_file_bytes = max_file_bytes
        self.completion_window = completion_window
        self._client = client
        self._sleep = sleep
        self._state: dict[str, Any] | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._client or self.engine.caller.client

    # -- submit ------------------------------------------------------------------------------

    async def submit(self, items: Iterable[ProviderItem] | AsyncIterable[ProviderItem]) -> None:
        """Write, upload and create every chunk. Idempotent: when the state already records the
        chunks, `items` is not read again and only the steps not yet recorded are done."""
        state = await self._load()
        if state is None:
            state = await self._write_chunks(items)
            self._state = state
            await self._save()
        else:
            # What was submitted wins over this instance's settings: the bodies are uploaded.
            log.info("provider_batch_resume", job=state["job"], chunks=len(state["chunks"]))
            if state.get("model") != self.engine.model:
                log.warning("provider_batch_model_differs", job=state["job"])
        for chunk in state["chunks"]:
            if chunk["batch_id"] or chunk["status"] in _TERMINAL:
                continue
            if chunk["file_id"] is None:
                await self._upload(chunk)
            elif await self._adopt_existing_batch(chunk):
                # A file a previous run uploaded: it may have created the batch, too.
                continue
            await self._create(chunk)

    async def _write_chunks(
        self, items: Iterable[ProviderItem] | AsyncIterable[ProviderItem]
    ) -> dict[str, Any]:
        job = uuid.uuid4().hex
        self.workdir.mkdir(parents=True, exist_ok=True)
        chunks: list[dict[str, Any]] = []
        # Only the ids stay in memory (to refuse duplicates, which the provider would reject
        # for the whole file); the request bodies go straight to disk.
        seen: set[str] = set()
        body_file: IO[bytes] | None = None
        ids_file: IO[bytes] | None = None
        try:
            async for item in _aiter(items):
                if item.custom_id in seen:
                    raise ValueError(f"duplicate custom_id {item.custom_id!r}")
                seen.add(item.custom_id)
                line = _jsonl(
                    {
                        "custom_id": item.custom_id,
                        "method": "POST",
                        "url": _ENDPOINT,
                        "body": self.engine.prepare(item.request, rewrite=self.rewrite).body,
                    }
                )
                if len(line) > self.max_file_bytes:
                    raise ValueError(
                        f"item {item.custom_id!r} takes {len(line)} bytes, over max_file_bytes"
                    )
                current = chunks[-1] if chunks else None
                if (
                    current is None
                    or current["count"] >= self.max_requests_per_file
                    or current["bytes"] + len(line) > self.max_file_bytes
                ):
                    _close(body_file, ids_file)
                    current = _new_chunk(job, len(chunks))
                    chunks.append(current)
                    body_file = (self.workdir / current["input"]).open("wb")
                    ids_file = (self.workdir / current["ids"]).open("wb")
                assert body_file is not None and ids_file is not None
                body_file.write(line)
                # The ids sidecar lets `results` list a chunk's items without parsing bodies.
                ids_file.write(_jsonl(item.custom_id))
                current["count"] += 1
                current["bytes"] += len(line)
        except BaseException:
            _close(body_file, ids_file)
            for chunk in chunks:
                for name in (chunk["input"], chunk["ids"]):
                    (self.workdir / name).unlink(missing_ok=True)
            raise
        _close(body_file, ids_file)
        log.info(
            "provider_batch_written",
            job=job,
            chunks=len(chunks),
            items=sum(c["count"] for c in chunks),
            bytes=sum(c["bytes"] for c in chunks),
        )
        return {
            "version": STATE_VERSION,
            "job": job,
            "rewrite": self.rewrite,
            "model": self.engine.model,
            "chunks": chunks,
        }

    async def _upload(self, chunk: dict[str, Any]) -> None:
        path = self.workdir / chunk["input"]
        if not path.is_file():
            raise FileNotFoundError(
                f"provider batch: chunk {chunk['n']} file {chunk['input']} is missing from the "
                "work directory and was never uploaded"
            )
        # An open file, not bytes: the SDK hands it to httpx, which streams the upload.
        with path.open("rb") as handle:
            uploaded = await _provider(
                "upload",
                self.client.files.create(
                    file=(chunk["input"], handle, "application/jsonl"), purpose="batch"
                ),
            )
        chunk["file_id"] = uploaded.id
        chunk["file_created_at"] = uploaded.created_at
        await self._save()
        log.info("provider_batch_uploaded", chunk=chunk["n"], file_id=uploaded.id)

    async def _create(self, chunk: dict[str, Any]) -> None:
        state = self._require()
        batch = await _provider(
            "create",
            self.client.batches.create(
                # The SDK types the window as Literal["24h"]; Azure and others accept more.
                completion_window=cast(Literal["24h"], self.completion_window),
                endpoint=_ENDPOINT,
                input_file_id=chunk["file_id"],
                metadata={"coach_chunk": str(chunk["n"]), "coach_job": state["job"]},
            ),
        )
        _record(chunk, batch)
        await self._save()
        log.info("provider_batch_created", chunk=chunk["n"], batch_id=batch.id)
        # The provider holds the requests now; a chunk file can be up to max_file_bytes.
        (self.workdir / chunk["input"]).unlink(missing_ok=True)

    async def _adopt_existing_batch(self, chunk: dict[str, Any]) -> bool:
        """After a restart, find the batch a previous run may have created from this chunk's
        file before it could save the batch id, so that no second batch is created."""
        job = self._require()["job"]
        since = chunk.get("file_created_at")
        try:
            listed = 0
            async for batch in self.client.batches.list(limit=100):
                metadata = batch.metadata or {}
                if batch.input_file_id == chunk["file_id"] or (
                    metadata.get("coach_job") == job
                    and metadata.get("coach_chunk") == str(chunk["n"])
                ):
                    _record(chunk, batch)
                    await self._save()
                    log.info("provider_batch_adopted", chunk=chunk["n"], batch_id=batch.id)
                    return True
                listed += 1
                # Newest first: a batch older than the file cannot have been made from it.
                if (since is not None and batch.created_at < since) or (
                    listed >= _MAX_LISTED_BATCHES
                ):
                    break
        except openai.APIError as exc:
            # Some OpenAI-compatible servers do not list batches; creating is then the only way
            # forward (and the crash window it guards is a few milliseconds wide).
            log.warning("provider_batch_list_failed", chunk=chunk["n"], error=_describe(exc))
        return False

    # -- wait --------------------------------------------------------------------------------

    async def wait(
        self,
        *,
        progress: Callable[[dict[str, int]], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Poll until every chunk is terminal (completed, failed, expired or cancelled).
        Raises `TimeoutError` after `timeout_s` (the state is kept; wait again to resume)."""
        state = await self._load()
        if state is None:
            raise RuntimeError("nothing was submitted: call submit() first")
        if any(c["batch_id"] is None and c["status"] not in _TERMINAL for c in state["chunks"]):
            raise RuntimeError("submission did not finish: call submit() again to resume it")
        started = time.monotonic()
        # Time slept counts too, so that an injected sleep advances the clock in tests.
        slept = 0.0
        failures = 0
        while True:
            pending = [c for c in state["chunks"] if c["status"] not in _TERMINAL]
            round_failed = False
            for chunk in pending:
                try:
                    batch = await self.client.batches.retrieve(chunk["batch_id"])
                except openai.APIError as exc:
                    if not _transient(exc) or failures >= _MAX_POLL_FAILURES:
                        raise _provider_error("poll", exc) from None
                    log.warning(
                        "provider_batch_poll_failed", chunk=chunk["n"], error=_describe(exc)
                    )
                    round_failed = True
                    break
                before = chunk["status"]
                _record(chunk, batch)
                if chunk["status"] != before:
                    await self._save()
                    log.info(
                        "provider_batch_status",
                        chunk=chunk["n"],
                        batch_id=chunk["batch_id"],
                        status=chunk["status"],
                        **chunk["counts"],
                    )
            failures = failures + 1 if round_failed else 0
            if progress is not None:
                progress(self._progress())
            if all(c["status"] in _TERMINAL for c in state["chunks"]):
                return
            elapsed = max(time.monotonic() - started, slept)
            if timeout_s is not None and elapsed >= timeout_s:
                raise TimeoutError(f"provider batch still running after {timeout_s:g} s")
            delay = self.poll_interval_s
            if timeout_s is not None:
                delay = min(delay, timeout_s - elapsed)
            await self._sleep(delay)
            slept += delay

    def _progress(self) -> dict[str, int]:
        chunks = self._require()["chunks"]
        totals = dict.fromkeys(("chunks_finished", "total", "completed", "failed"), 0)
        totals["chunks"] = len(chunks)
        for chunk in chunks:
            totals["chunks_finished"] += chunk["status"] in _TERMINAL
            counts = chunk["counts"]
            # Before the provider counts a chunk, its size is what we wrote.
            totals["total"] += counts.get("total") or chunk["count"]
            totals["completed"] += counts.get("completed", 0)
            totals["failed"] += counts.get("failed", 0)
        return totals

    # -- results -----------------------------------------------------------------------------

    async def results(
        self, lookup: Callable[[str], Awaitable[ReviewRequest | None]]
    ) -> AsyncIterator[ProviderResult]:
        """One result per submitted item of every finished, not yet merged chunk. `lookup`
        returns the request of a `custom_id` (the review needs the draft to check quotes).
        Chunks still running are skipped: call again after `wait` to get them.

        At least once: a chunk is marked merged after its last result was yielded, so a crash
        (or a consumer that stops) in the middle of a chunk yields that chunk again next time;
        the caller's writes must be idempotent per `custom_id`."""
        state = await self._load()
        if state is None:
            raise RuntimeError("nothing was submitted: call submit() first")
        for chunk in state["chunks"]:
            if chunk["merged"]:
                continue
            if chunk["status"] not in _TERMINAL:
                log.warning("provider_batch_not_finished", chunk=chunk["n"], status=chunk["status"])
                continue
            yielded = 0
            async for result in self._merge(state, chunk, lookup):
                yielded += 1
                yield result
            # Only here, after the last result of the chunk went out: see the module docstring.
            chunk["merged"] = True
            await self._save()
            log.info("provider_batch_merged", chunk=chunk["n"], results=yielded)
            (self.workdir / chunk["input"]).unlink(missing_ok=True)
            (self.workdir / chunk["ids"]).unlink(missing_ok=True)

    async def _merge(
        self,
        state: dict[str, Any],
        chunk: dict[str, Any],
        lookup: Callable[[str], Awaitable[ReviewRequest | None]],
    ) -> AsyncIterator[ProviderResult]:
        # dict, not set: the items missing from the provider's files come out in input order.
        expected = dict.fromkeys([cid async for cid in self._chunk_ids(chunk)], False)
        ignored = 0
        for file_id in (chunk["output_file_id"], chunk["error_file_id"]):
            if not file_id:
                continue
            async for line in self._lines(file_id):
                try:
                    record = json.loads(line)
                    custom_id = record["custom_id"]
                except (ValueError, TypeError, KeyError):
                    custom_id = None
                if not isinstance(custom_id, str):
                    ignored += 1
                    continue
                # Unknown ids and repeats are the provider's mistakes; one result per item.
                if expected.get(custom_id, True):
                    ignored += 1
                    continue
                expected[custom_id] = True
                yield await self._line_result(state, custom_id, record, lookup)
        if ignored:
            log.warning("provider_batch_lines_ignored", chunk=chunk["n"], lines=ignored)
        missing = _missing_error(chunk)
        for custom_id, done in expected.items():
            if not done:
                yield ProviderResult(custom_id, None, missing)

    async def _chunk_ids(self, chunk: dict[str, Any]) -> AsyncIterator[str]:
        path = self.workdir / chunk["ids"]
        if path.is_file():
            with path.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        yield str(json.loads(line))
            return
        if not chunk["file_id"]:
            return
        # The work directory was lost: the provider still has the input file.
        log.warning("provider_batch_ids_from_input", chunk=chunk["n"])
        async for line in self._lines(chunk["file_id"]):
            yield str(json.loads(line)["custom_id"])

    async def _lines(self, file_id: str) -> AsyncIterator[str]:
        """The non-empty lines of a provider file, streamed rather than read whole."""
        try:
            async with self.client.files.with_streaming_response.content(file_id) as response:
                async for line in response.iter_lines():
                    if line.strip():
                        yield line
        except openai.APIError as exc:
            raise _provider_error("download", exc) from None

    async def _line_result(
        self,
        state: dict[str, Any],
        custom_id: str,
        record: dict[str, Any],
        lookup: Callable[[str], Awaitable[ReviewRequest | None]],
    ) -> ProviderResult:
        response = record.get("response") or {}
        body = response.get("body") if isinstance(response, dict) else None
        if record.get("error"):
            return ProviderResult(custom_id, None, _line_error(record["error"]))
        status = response.get("status_code") if isinstance(response, dict) else None
        if status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            detail = _line_error(error) if error else "no response body"
            return ProviderResult(custom_id, None, f"http_{status}: {detail}")
        request = await lookup(custom_id)
        if request is None:
            return ProviderResult(custom_id, None, "lookup: no request for this custom_id")
        rewrite = bool(state.get("rewrite", self.rewrite))
        try:
            content, usage = self._answer(body)
            language = self.engine.language_of(request)
            review = self.engine.finish(content, request, language, rewrite=rewrite, usage=usage)
        except LLMError as exc:
            return ProviderResult(custom_id, None, _one_line(f"{exc.code}: {exc}"))
        return ProviderResult(custom_id, review, None)

    def _answer(self, body: dict[str, Any]) -> tuple[str, Usage]:
        """The answer's text and usage; the same checks as a synchronous call's answer."""
        raw = body.get("usage") or {}
        tokens_in = int(raw.get("prompt_tokens") or 0)
        tokens_out = int(raw.get("completion_tokens") or 0)
        tokens_cached = int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        cost = estimate_cost(
            self.engine.prices, self.engine.model, tokens_in, tokens_cached, tokens_out
        )
        usage = Usage(
            model=self.engine.model,
            prompt_version=self.engine.prompt.version,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            tokens_cached=tokens_cached,
            calls=1,
            cost_usd=None if cost is None else round(cost * BATCH_PRICE_FACTOR, 6),
        )
        choices = body.get("choices") or []
        if not choices:
            raise LLMProviderError("the provider returned no choices")
        choice = choices[0]
        message = choice.get("message") or {}
        if message.get("refusal"):
            raise LLMRefusal("the model refused to review the draft")
        if choice.get("finish_reason") == "content_filter":
            raise LLMContentFiltered("the provider's content filter stopped the answer")
        if choice.get("finish_reason") == "length":
            raise LLMTruncated("the answer was cut off at the token limit")
        return str(message.get("content") or ""), usage

    # -- cancel ------------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Cancel every unfinished batch; chunks never created are marked cancelled so that
        `submit` does not create them and `results` reports their items as errors."""
        state = await self._load()
        if state is None:
            return
        for chunk in state["chunks"]:
            if chunk["status"] in _TERMINAL:
                continue
            if chunk["batch_id"] is None:
                chunk["status"] = "cancelled"
                chunk["error"] = "cancelled before submission"
            else:
                batch = await _provider("cancel", self.client.batches.cancel(chunk["batch_id"]))
                _record(chunk, batch)
            await self._save()
            log.info("provider_batch_cancel", chunk=chunk["n"], status=chunk["status"])

    # -- state -------------------------------------------------------------------------------

    async def _load(self) -> dict[str, Any] | None:
        if self._state is None:
            saved = await self.store.load()
            if saved is not None:
                if saved.get("version") != STATE_VERSION:
                    raise ValueError(
                        f"provider batch state version {saved.get('version')!r} is not "
                        f"{STATE_VERSION}"
                    )
                # A private copy: the caller's dict is theirs to keep or mutate.
                self._state = copy.deepcopy(saved)
        return self._state

    def _require(self) -> dict[str, Any]:
        if self._state is None:  # pragma: no cover - every caller loads first
            raise RuntimeError("no provider batch state")
        return self._state

    async def _save(self) -> None:
        await self.store.save(copy.deepcopy(self._require()))


# -- helpers ---------------------------------------------------------------------------------


async def _aiter(
    items: Iterable[ProviderItem] | AsyncIterable[ProviderItem],
) -> AsyncIterator[ProviderItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _jsonl(value: object) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _new_chunk(job: str, n: int) -> dict[str, Any]:
    return {
        "n": n,
        "input": f"{job}-{n:05d}.jsonl",
        "ids": f"{job}-{n:05d}.ids",
        "count": 0,
        "bytes": 0,
        "file_id": None,
        "file_created_at": None,
        "batch_id": None,
        "status": None,
        "counts": {},
        "output_file_id": None,
        "error_file_id": None,
        "error": None,
        "merged": False,
    }


def _close(*handles: IO[bytes] | None) -> None:
    for handle in handles:
        if handle is not None:
            handle.close()


def _record(chunk: dict[str, Any], batch: Any) -> None:
    """Copy what the state needs from a provider `Batch`."""
    chunk["batch_id"] = batch.id
    chunk["status"] = batch.status
    chunk["output_file_id"] = batch.output_file_id
    chunk["error_file_id"] = batch.error_file_id
    counts = batch.request_counts
    if counts is not None:
        chunk["counts"] = {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        }
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    if errors:
        first = errors[0]
        chunk["error"] = _one_line(f"{first.code or 'error'}: {first.message or ''}".strip())


def _missing_error(chunk: dict[str, Any]) -> str:
    status = chunk["status"]
    if status == "completed":
        return "provider: no result line for this item"
    detail = f" ({chunk['error']})" if chunk.get("error") else ""
    return _one_line(f"provider: {status}{detail}")


def _line_error(error: object) -> str:
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or "error"
        message = error.get("message") or ""
        return _one_line(f"{code}: {message}" if message else str(code))
    return _one_line(str(error))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 1] + "…"


def _transient(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return exc.__class__.__name__


def _provider_error(step: str, exc: openai.APIError) -> LLMError:
    """A coach error for a failed Batch API call; the job's state is intact, so the caller can
    run the same step again later."""
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimited(f"provider batch {step}: rate limited (HTTP 429)")
    if isinstance(exc, openai.APIStatusError):
        code = f", {exc.code}" if exc.code else ""
        return LLMProviderError(f"provider batch {step}: HTTP {exc.status_code}{code}")
    return LLMProviderError(f"provider batch {step}: could not reach the provider")


async def _provider(step: str, call: Awaitable[_T]) -> _T:
    try:
        return await call
    except openai.APIError as exc:
        raise _provider_error(step, exc) from None
