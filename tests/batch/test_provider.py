"""The provider Batch API job: the JSONL it uploads, submit/wait/results against a fake
OpenAI Batch API (respx, no network), restarts that never submit twice, chunking, per-line
and per-chunk errors, and cancel."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import structlog

from coach.batch.provider import (
    STATE_VERSION,
    ProviderBatch,
    ProviderItem,
    ProviderResult,
)
from coach.engines.llm.engine import LLMEngine
from coach.engines.llm.pricing import estimate_cost
from coach.engines.rules.engine import RuleEngine
from coach.errors import LLMProviderError
from coach.logs import configure_logging
from coach.models import Kind, ReviewRequest
from coach.rulebook import default_rulebook
from coach.settings import Settings
from tools.fake_openai.server import to_llm_review

BASE = "https://api.openai.test/v1"
MODEL = "gpt-4o-mini"
DRAFTS = [
    "Could you introduce me to your head of procurement?",
    "Hi Dana, I enjoyed your talk on onboarding at DevDays. "
    "How are you measuring time-to-value now?",
    "Hi Sam, could you introduce me to your head of procurement next week?",
    "Hey Lee, congrats on the launch! I wrote up three notes on your pricing page, "
    "happy to send them over if useful.",
]


# -- fakes -----------------------------------------------------------------------------------


class MemoryState:
    """A ProviderState in memory that keeps every save, JSON round-tripped like a database."""

    def __init__(self, saved: dict[str, Any] | None = None, *, fail_on_save: int = 0) -> None:
        self.saves: list[dict[str, Any]] = [] if saved is None else [saved]
        # Raise on the n-th save (1-based) to simulate a crash right before it lands.
        self.fail_on_save = fail_on_save
        self.save_calls = 0

    @property
    def current(self) -> dict[str, Any] | None:
        return self.saves[-1] if self.saves else None

    async def load(self) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.current)) if self.current else None

    async def save(self, state: dict[str, Any]) -> None:
        self.save_calls += 1
        if self.save_calls == self.fail_on_save:
            raise KeyboardInterrupt("crash before the save landed")
        self.saves.append(json.loads(json.dumps(state)))


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def request_for(text: str) -> ReviewRequest:
    return ReviewRequest(text=text, kind=Kind.message)


def model_answer(request: ReviewRequest) -> str:
    """A valid answer for a draft: the rule engine's review in the model's JSON shape (what
    the fake OpenAI server answers)."""
    review = RuleEngine(default_rulebook()).review_sync(request, rewrite=True)
    return to_llm_review(review, rewrite=True).model_dump_json()


def ok_line(
    custom_id: str,
    content: str,
    *,
    tokens: tuple[int, int, int] = (1200, 300, 1024),
    refusal: str | None = None,
) -> dict[str, Any]:
    prompt, completion, cached = tokens
    message: dict[str, Any] = {"role": "assistant", "content": None if refusal else content}
    if refusal:
        message["refusal"] = refusal
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": f"req_{custom_id}",
            "body": {
                "id": "chatcmpl-x",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            },
        },
        "error": None,
    }


def http_error_line(custom_id: str, status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": f"req_{custom_id}",
            "body": {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        },
        "error": None,
    }


def line_error(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


#: answer(custom_id, request body) -> the result line, or None for "no line at all".
Answer = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass
class FakeBatchAPI:
    """The Batch API endpoints over respx. Each retrieve moves a batch one step along its
    script; on a terminal step the output and error files are built from `answer`."""

    router: respx.MockRouter
    answer: Answer
    script: list[str] = field(default_factory=lambda: ["in_progress", "in_progress", "completed"])
    #: Batch ids whose script is overridden.
    scripts: dict[int, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrieve_errors: list[httpx.Response] = field(default_factory=list)
    create_errors: list[httpx.Response] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _steps: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.router
        self.upload = r.post(f"{BASE}/files").mock(side_effect=self._upload)
        self.create = r.post(f"{BASE}/batches").mock(side_effect=self._create)
        self.listing = r.get(f"{BASE}/batches").mock(side_effect=self._list)
        self.retrieve = r.get(url__regex=rf"^{BASE}/batches/(?P<bid>[\w-]+)$").mock(
            side_effect=self._retrieve
        )
        self.cancel = r.post(url__regex=rf"^{BASE}/batches/(?P<bid>[\w-]+)/cancel$").mock(
            side_effect=self._cancel
        )
        self.content = r.get(url__regex=rf"^{BASE}/files/(?P<fid>[\w-]+)/content$").mock(
            side_effect=self._content
        )

    # uploaded files, decoded
    def uploads(self) -> list[list[dict[str, Any]]]:
        return [jsonl(self.files[f"file-in-{i}"]) for i in range(self.upload.call_count)]

    def _upload(self, request: httpx.Request) -> httpx.Response:
        purpose, data = multipart(request)
        assert purpose == "batch"
        file_id = f"file-in-{len([k for k in self.files if k.startswith('file-in-')])}"
        self.files[file_id] = data
        return httpx.Response(
            200,
            json={
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": 1_700_000_000 + len(self.files),
                "filename": "input.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _create(self, request: httpx.Request) -> httpx.Response:
        if self.create_errors:
            return self.create_errors.pop(0)
        sent = json.loads(request.content)
        n = next(self._ids)
        batch_id = f"batch_{n}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": sent["endpoint"],
            "input_file_id": sent["input_file_id"],
            "completion_window": sent["completion_window"],
            "metadata": sent.get("metadata"),
            "created_at": 1_700_000_100 + n,
            "status": "validating",
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        self._steps[batch_id] = list(self.scripts.get(n, self.script))
        return httpx.Response(200, json=self.batches[batch_id])

    def _list(self, request: httpx.Request) -> httpx.Response:
        data = sorted(self.batches.values(), key=lambda b: -int(b["created_at"]))
        return httpx.Response(200, json={"object": "list", "data": data, "has_more": False})

    def _retrieve(self, request: httpx.Request, bid: str) -> httpx.Response:
        if self.retrieve_errors:
            return self.retrieve_errors.pop(0)
        batch = self.batches[bid]
        steps = self._steps[bid]
        status = steps.pop(0) if len(steps) > 1 else steps[0]
        if batch["status"] == "cancelling":
            status = "cancelled"
        self._move(batch, status)
        return httpx.Response(200, json=batch)

    def _cancel(self, request: httpx.Request, bid: str) -> httpx.Response:
        batch = self.batches[bid]
        batch["status"] = "cancelling"
        return httpx.Response(200, json=batch)

    def _content(self, request: httpx.Request, fid: str) -> httpx.Response:
        return httpx.Response(200, content=self.files[fid])

    def _move(self, batch: dict[str, Any], status: str) -> None:
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].splitlines()]
        total = len(lines)
        batch["status"] = status
        done = status in {"completed", "expired", "cancelled"}
        if status == "failed":
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "Model not found.", "line": 1}],
            }
        if not done:
            half = total // 2 if status != "validating" else 0
            batch["request_counts"] = {"total": total, "completed": half, "failed": 0}
            return
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for line in lines:
            result = self.answer(line["custom_id"], line["body"])
            if result is None:
                continue
            ok = result.get("response") and result["response"]["status_code"] == 200
            (out if ok else err).append(result)
        batch["request_counts"] = {"total": total, "completed": len(out), "failed": len(err)}
        for name, rows in (("output", out), ("error", err)):
            if rows:
                file_id = f"file-{name}-{batch['id']}"
                self.files[file_id] = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
                batch[f"{name}_file_id"] = file_id


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def multipart(request: httpx.Request) -> tuple[str, bytes]:
    """The `purpose` field and the file of a multipart upload."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=policy.default).parsebytes(head + request.read())
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields[str(name)] = payload
    return fields["purpose"].decode(), fields["file"]


# -- harness ---------------------------------------------------------------------------------


def make_engine() -> LLMEngine:
    return LLMEngine(
        default_rulebook(),
        Settings(llm_model=MODEL, llm_api_key="sk-test", llm_base_url=BASE),
    )


def items(n: int) -> list[ProviderItem]:
    return [
        ProviderItem(f"item-{i}", request_for(f"{DRAFTS[i % len(DRAFTS)]} (#{i})"))
        for i in range(n)
    ]


def answering(batch_items: list[ProviderItem]) -> Answer:
    """Valid answers for every item, with per-item token counts (so usage is traceable)."""
    requests = {item.custom_id: item.request for item in batch_items}

    def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        index = int(custom_id.split("-")[1])
        return ok_line(
            custom_id,
            model_answer(requests[custom_id]),
            tokens=(1000 + index, 200 + index, 512),
        )

    return answer


def lookup_in(batch_items: list[ProviderItem]) -> Callable[[str], Awaitable[ReviewRequest | None]]:
    requests = {item.custom_id: item.request for item in batch_items}

    async def lookup(custom_id: str) -> ReviewRequest | None:
        return requests.get(custom_id)

    return lookup


async def collect(batch: ProviderBatch, batch_items: list[ProviderItem]) -> list[ProviderResult]:
    return [r async for r in batch.results(lookup_in(batch_items))]


@dataclass
class Env:
    engine: LLMEngine
    api: FakeBatchAPI
    workdir: Path
    sleep: FakeSleep

    def batch(self, state: MemoryState, **kwargs: Any) -> ProviderBatch:
        kwargs.setdefault("poll_interval_s", 30.0)
        return ProviderBatch(self.engine, state, workdir=self.workdir, sleep=self.sleep, **kwargs)


def run(
    tmp_path: Path,
    scenario: Callable[[Env], Awaitable[None]],
    answer: Answer,
    **api: Any,
) -> FakeBatchAPI:
    """Run `scenario` on one event loop against a fresh fake Batch API; any request that is
    not mocked fails (no network)."""

    async def main(router: respx.MockRouter) -> FakeBatchAPI:
        engine = make_engine()
        fake = FakeBatchAPI(router, answer, **api)
        try:
            await scenario(Env(engine, fake, tmp_path / "work", FakeSleep()))
        finally:
            await engine.aclose()
        return fake

    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        return asyncio.run(main(router))


# -- the uploaded file -----------------------------------------------------------------------


def test_uploaded_jsonl_has_one_line_per_item_with_the_engines_request_body(
    tmp_path: Path,
) -> None:
    batch_items = items(5)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        await env.batch(state).submit(batch_items)
        (lines,) = env.api.uploads()
        assert [line["custom_id"] for line in lines] == [i.custom_id for i in batch_items]
        assert len({line["custom_id"] for line in lines}) == len(batch_items)
        for line, item in zip(lines, batch_items, strict=True):
            assert line["method"] == "POST"
            assert line["url"] == "/v1/chat/completions"
            assert line["body"] == env.engine.prepare(item.request).body

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.upload.call_count == 1 and api.create.call_count == 1
    created = json.loads(api.create.calls[0].request.content)
    current = state.current
    assert current is not None
    assert created == {
        "completion_window": "24h",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in-0",
        "metadata": {"coach_chunk": "0", "coach_job": current["job"]},
    }
    # Saved after each step: chunks written, file uploaded, batch created.
    steps = [(s["chunks"][0]["file_id"], s["chunks"][0]["batch_id"]) for s in state.saves]
    assert steps == [(None, None), ("file-in-0", None), ("file-in-0", "batch_0")]
    assert current["version"] == STATE_VERSION
    json.dumps(current)  # serialisable as is


def test_rewrite_false_is_in_the_bodies(tmp_path: Path) -> None:
    batch_items = items(1)

    async def scenario(env: Env) -> None:
        await env.batch(MemoryState(), rewrite=False).submit(batch_items)
        (lines,) = env.api.uploads()
        assert lines[0]["body"] == env.engine.prepare(batch_items[0].request, rewrite=False).body
        assert lines[0]["body"] != env.engine.prepare(batch_items[0].request, rewrite=True).body

    run(tmp_path, scenario, answering(batch_items))


def test_async_iterables_are_accepted(tmp_path: Path) -> None:
    batch_items = items(3)

    async def stream() -> AsyncIterator[ProviderItem]:
        for item in batch_items:
            yield item

    async def scenario(env: Env) -> None:
        await env.batch(MemoryState()).submit(stream())
        assert [x["custom_id"] for x in env.api.uploads()[0]] == ["item-0", "item-1", "item-2"]

    run(tmp_path, scenario, answering(batch_items))


def test_duplicate_custom_ids_are_refused_before_anything_is_uploaded(tmp_path: Path) -> None:
    batch_items = [*items(2), items(1)[0]]
    state = MemoryState()

    async def scenario(env: Env) -> None:
        with pytest.raises(ValueError, match="duplicate custom_id 'item-0'"):
            await env.batch(state).submit(batch_items)

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.upload.call_count == 0 and state.saves == []
    assert list((tmp_path / "work").iterdir()) == []


# -- the happy path --------------------------------------------------------------------------


def test_submit_wait_results_gives_one_review_per_item_with_batch_usage(tmp_path: Path) -> None:
    batch_items = items(4)
    state = MemoryState()
    progress: list[dict[str, int]] = []
    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(state)
        await batch.submit(batch_items)
        # The provider holds the requests: only the ids sidecar stays until the merge.
        assert [p.suffix for p in env.workdir.iterdir()] == [".ids"]
        await batch.wait(progress=progress.append)
        assert env.sleep.waits == [30.0, 30.0]
        results.extend(await collect(batch, batch_items))
        assert list(env.workdir.iterdir()) == []

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.retrieve.call_count == 3
    assert [p["completed"] for p in progress] == [2, 2, 4]
    assert progress[-1] == {
        "chunks": 1,
        "chunks_finished": 1,
        "total": 4,
        "completed": 4,
        "failed": 0,
    }
    assert [r.custom_id for r in results] == [i.custom_id for i in batch_items]
    engine = make_engine()
    for index, result in enumerate(results):
        assert result.error is None and result.review is not None
        assert result.review.engine == "llm" and not result.review.degraded
        usage = result.review.usage
        assert usage is not None
        assert (usage.tokens_in, usage.tokens_out, usage.tokens_cached) == (
            1000 + index,
            200 + index,
            512,
        )
        assert usage.model == MODEL and usage.calls == 1
        full = estimate_cost(engine.prices, MODEL, 1000 + index, 512, 200 + index)
        assert full is not None and usage.cost_usd == round(full * 0.5, 6)
    final = state.current
    assert final is not None
    assert final["chunks"][0]["status"] == "completed" and final["chunks"][0]["merged"]
    # Written, uploaded, created; then saved on status changes only (in_progress is seen
    # twice but saved once), and once more when merged.
    statuses = [s["chunks"][0]["status"] for s in state.saves]
    assert statuses == [None, None, "validating", "in_progress", "completed", "completed"]


def test_no_draft_text_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch_items = items(4)

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        await collect(batch, batch_items)

    saved = structlog.get_config()
    configure_logging("DEBUG")
    try:
        run(tmp_path, scenario, answering(batch_items))
    finally:
        structlog.configure(**saved)
    err = capsys.readouterr().err
    assert "provider_batch_merged" in err and "provider_batch_created" in err
    for item in batch_items:
        assert item.request.text[:20] not in err


# -- restarts --------------------------------------------------------------------------------


def test_a_restart_does_not_submit_again_and_resumes_polling(tmp_path: Path) -> None:
    batch_items = items(3)
    state = MemoryState()
    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        await env.batch(state).submit(batch_items)
        # The process dies; a new one starts from the saved state.
        again = env.batch(MemoryState(state.current))
        await again.submit(batch_items)
        await again.submit(iter(()))  # the items are not even read again
        assert env.api.upload.call_count == 1 and env.api.create.call_count == 1
        assert not env.api.listing.called
        await again.wait()
        results.extend(await collect(again, batch_items))

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.retrieve.call_count == 3
    assert [r.custom_id for r in results if r.review] == ["item-0", "item-1", "item-2"]


def test_a_restart_after_completion_neither_polls_nor_yields_merged_chunks(
    tmp_path: Path,
) -> None:
    batch_items = items(2)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        batch = env.batch(state)
        await batch.submit(batch_items)
        await batch.wait()
        assert len(await collect(batch, batch_items)) == 2
        polls = env.api.retrieve.call_count
        again = env.batch(MemoryState(state.current))
        await again.wait()
        assert env.api.retrieve.call_count == polls
        assert await collect(again, batch_items) == []

    run(tmp_path, scenario, answering(batch_items))


def test_a_crash_in_the_middle_of_a_chunk_yields_the_whole_chunk_again(tmp_path: Path) -> None:
    batch_items = items(3)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        batch = env.batch(state, max_requests_per_file=2)
        await batch.submit(batch_items)
        await batch.wait()
        seen: list[str] = []
        results = batch.results(lookup_in(batch_items))
        async for result in results:
            seen.append(result.custom_id)
            if len(seen) == 3:  # chunk 0 (two items) merged, chunk 1 half-way
                break
        assert isinstance(results, AsyncGenerator)
        await results.aclose()
        assert seen == ["item-0", "item-1", "item-2"]
        again = env.batch(MemoryState(state.current), max_requests_per_file=2)
        assert [r.custom_id for r in await collect(again, batch_items)] == ["item-2"]

    run(tmp_path, scenario, answering(batch_items))


def test_a_crash_after_upload_reuses_the_uploaded_file(tmp_path: Path) -> None:
    batch_items = items(2)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        env.api.create_errors.append(httpx.Response(500, json={"error": {"message": "boom"}}))
        with pytest.raises(LLMProviderError, match="create: HTTP 500"):
            await env.batch(state).submit(batch_items)
        saved = state.current
        assert saved is not None
        assert saved["chunks"][0]["file_id"] == "file-in-0"
        assert saved["chunks"][0]["batch_id"] is None
        again = env.batch(MemoryState(saved))
        await again.submit(batch_items)
        await again.wait()
        assert len([r async for r in again.results(lookup_in(batch_items)) if r.review]) == 2

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.upload.call_count == 1
    assert api.listing.call_count == 1  # looked for a batch made before the crash: none
    assert api.create.call_count == 2  # the failed one and the real one
    assert json.loads(api.create.calls[1].request.content)["input_file_id"] == "file-in-0"


def test_a_crash_after_create_before_the_save_adopts_the_batch(tmp_path: Path) -> None:
    batch_items = items(2)
    # Saves: 1 chunks written, 2 file uploaded, 3 batch created <- the crash.
    state = MemoryState(fail_on_save=3)

    async def scenario(env: Env) -> None:
        with pytest.raises(KeyboardInterrupt):
            await env.batch(state).submit(batch_items)
        saved = state.current
        assert saved is not None and saved["chunks"][0]["batch_id"] is None
        again = env.batch(MemoryState(saved))
        await again.submit(batch_items)
        await again.wait()
        assert len(await collect(again, batch_items)) == 2

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.upload.call_count == 1
    assert api.create.call_count == 1
    assert api.listing.call_count == 1


def test_a_server_without_a_batch_list_still_gets_its_batch_created(tmp_path: Path) -> None:
    batch_items = items(1)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        env.api.listing.mock(side_effect=None, return_value=httpx.Response(404))
        env.api.create_errors.append(httpx.Response(503))
        with pytest.raises(LLMProviderError):
            await env.batch(state).submit(batch_items)
        await env.batch(MemoryState(state.current)).submit(batch_items)

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.upload.call_count == 1 and api.create.call_count == 2


# -- chunking --------------------------------------------------------------------------------


def test_items_are_split_by_max_requests_per_file(tmp_path: Path) -> None:
    batch_items = items(7)
    state = MemoryState()
    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(state, max_requests_per_file=3)
        await batch.submit(batch_items)
        await batch.wait()
        results.extend(await collect(batch, batch_items))

    api = run(tmp_path, scenario, answering(batch_items))
    assert [len(lines) for lines in api.uploads()] == [3, 3, 1]
    assert api.create.call_count == 3
    chunks = [
        json.loads(call.request.content)["metadata"]["coach_chunk"] for call in api.create.calls
    ]
    assert chunks == ["0", "1", "2"]
    assert [r.custom_id for r in results] == [f"item-{i}" for i in range(7)]
    assert all(r.review is not None for r in results)


def test_items_are_split_by_max_file_bytes(tmp_path: Path) -> None:
    batch_items = [ProviderItem(f"item-{i}", request_for(DRAFTS[0])) for i in range(5)]
    limit = 0

    async def scenario(env: Env) -> None:
        nonlocal limit
        one = len(
            json.dumps(
                {
                    "custom_id": "item-0",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": env.engine.prepare(batch_items[0].request).body,
                },
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        )
        limit = 2 * (one + 1) + 10  # two lines fit, three do not
        await env.batch(MemoryState(), max_file_bytes=limit).submit(batch_items)

    api = run(tmp_path, scenario, answering(batch_items))
    assert [len(lines) for lines in api.uploads()] == [2, 2, 1]
    assert all(len(data) <= limit for data in api.files.values())


def test_an_item_larger_than_a_file_is_refused(tmp_path: Path) -> None:
    batch_items = items(1)

    async def scenario(env: Env) -> None:
        with pytest.raises(ValueError, match="over max_file_bytes"):
            await env.batch(MemoryState(), max_file_bytes=100).submit(batch_items)

    assert run(tmp_path, scenario, answering(batch_items)).upload.call_count == 0


# -- errors ----------------------------------------------------------------------------------


def test_per_line_errors_become_error_results(tmp_path: Path) -> None:
    batch_items = items(6)
    good = answering(batch_items)

    def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if custom_id == "item-1":
            return http_error_line(custom_id, 400, "context_length_exceeded", "Too long.\nReally.")
        if custom_id == "item-2":
            return line_error(custom_id, "batch_expired", "This request could not be executed.")
        if custom_id == "item-3":
            return ok_line(custom_id, '{"rules": "not a list"}')
        if custom_id == "item-4":
            return ok_line(custom_id, "", refusal="I can't help with that.")
        return good(custom_id, body)

    results: dict[str, ProviderResult] = {}

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        results.update({r.custom_id: r async for r in batch.results(lookup_in(batch_items))})

    run(tmp_path, scenario, answer)
    assert set(results) == {i.custom_id for i in batch_items}
    assert results["item-0"].review is not None and results["item-5"].review is not None
    assert results["item-1"].error == "http_400: context_length_exceeded: Too long. Really."
    assert results["item-2"].error == "batch_expired: This request could not be executed."
    assert (results["item-3"].error or "").startswith("invalid_output: invalid output (rules")
    assert results["item-4"].error == "refusal: the model refused to review the draft"
    for custom_id in ("item-1", "item-2", "item-3", "item-4"):
        assert results[custom_id].review is None
        assert "\n" not in (results[custom_id].error or "")


def test_an_expired_chunk_reports_its_missing_items(tmp_path: Path) -> None:
    batch_items = items(4)
    good = answering(batch_items)

    def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return good(custom_id, body) if custom_id in {"item-0", "item-2"} else None

    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        results.extend(await collect(batch, batch_items))

    run(tmp_path, scenario, answer, script=["in_progress", "expired"])
    assert [(r.custom_id, r.review is not None, r.error) for r in results] == [
        ("item-0", True, None),
        ("item-2", True, None),
        ("item-1", False, "provider: expired"),
        ("item-3", False, "provider: expired"),
    ]


def test_a_failed_chunk_gives_every_item_an_error_and_other_chunks_still_merge(
    tmp_path: Path,
) -> None:
    batch_items = items(4)
    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState(), max_requests_per_file=2)
        await batch.submit(batch_items)
        await batch.wait()
        results.extend(await collect(batch, batch_items))

    run(tmp_path, scenario, answering(batch_items), scripts={0: ["validating", "failed"]})
    assert [(r.custom_id, r.error) for r in results] == [
        ("item-0", "provider: failed (invalid_request: Model not found.)"),
        ("item-1", "provider: failed (invalid_request: Model not found.)"),
        ("item-2", None),
        ("item-3", None),
    ]


def test_an_unknown_custom_id_gets_an_error_result(tmp_path: Path) -> None:
    batch_items = items(2)
    results: list[ProviderResult] = []

    async def lookup(custom_id: str) -> ReviewRequest | None:
        return None if custom_id == "item-1" else batch_items[0].request

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        results.extend([r async for r in batch.results(lookup)])

    run(tmp_path, scenario, answering(batch_items))
    assert results[1].error == "lookup: no request for this custom_id"


def test_stray_and_repeated_lines_are_ignored(tmp_path: Path) -> None:
    batch_items = items(2)
    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        output = env.api.batches["batch_0"]["output_file_id"]
        first = env.api.files[output].splitlines()[0]
        env.api.files[output] += b"not json\n" + first + b"\n" + b'{"custom_id": "other"}\n'
        results.extend(await collect(batch, batch_items))

    run(tmp_path, scenario, answering(batch_items))
    assert [r.custom_id for r in results] == ["item-0", "item-1"]


def test_results_come_from_the_provider_input_file_when_the_workdir_is_lost(
    tmp_path: Path,
) -> None:
    batch_items = items(3)
    good = answering(batch_items)

    def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return good(custom_id, body) if custom_id != "item-1" else None

    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        await batch.wait()
        for path in env.workdir.iterdir():
            path.unlink()
        results.extend(await collect(batch, batch_items))

    run(tmp_path, scenario, answer, script=["cancelled"])
    assert [(r.custom_id, r.error) for r in results] == [
        ("item-0", None),
        ("item-2", None),
        ("item-1", "provider: cancelled"),
    ]


# -- wait ------------------------------------------------------------------------------------


def test_wait_times_out_and_a_later_wait_resumes(tmp_path: Path) -> None:
    batch_items = items(1)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        batch = env.batch(state, poll_interval_s=40.0)
        await batch.submit(batch_items)
        with pytest.raises(TimeoutError):
            await batch.wait(timeout_s=50.0)
        assert env.sleep.waits == [40.0, 10.0]
        await env.batch(MemoryState(state.current)).wait()

    api = run(
        tmp_path, scenario, answering(batch_items), script=["in_progress"] * 3 + ["completed"]
    )
    assert api.retrieve.call_count == 4


def test_wait_outlives_transient_poll_errors_but_not_others(tmp_path: Path) -> None:
    batch_items = items(1)

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        env.api.retrieve_errors.extend([httpx.Response(502), httpx.Response(429)])
        await batch.wait()
        assert env.api.retrieve.call_count == 5

    run(tmp_path, scenario, answering(batch_items))

    async def failing(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit(batch_items)
        env.api.retrieve_errors.append(
            httpx.Response(401, json={"error": {"message": "no", "code": "invalid_api_key"}})
        )
        with pytest.raises(LLMProviderError, match="poll: HTTP 401, invalid_api_key"):
            await batch.wait()

    run(tmp_path / "2", failing, answering(batch_items))


def test_wait_and_results_need_a_submission(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        with pytest.raises(RuntimeError, match="submit"):
            await batch.wait()
        with pytest.raises(RuntimeError, match="submit"):
            await collect(batch, [])
        await batch.cancel()  # nothing to cancel

    run(tmp_path, scenario, answering([]))


def test_an_empty_job_submits_nothing_and_yields_nothing(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState())
        await batch.submit([])
        await batch.wait()
        assert await collect(batch, []) == []

    api = run(tmp_path, scenario, answering([]))
    assert api.upload.call_count == 0 and api.create.call_count == 0


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_cancels_unfinished_batches_and_their_items_become_errors(tmp_path: Path) -> None:
    batch_items = items(4)
    good = answering(batch_items)

    def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return good(custom_id, body) if custom_id == "item-2" else None

    results: list[ProviderResult] = []

    async def scenario(env: Env) -> None:
        batch = env.batch(MemoryState(), max_requests_per_file=2)
        await batch.submit(batch_items)
        with pytest.raises(TimeoutError):
            await batch.wait(timeout_s=0)  # one poll: batch 0 completed, batch 1 running
        await batch.cancel()
        await batch.wait()
        results.extend(await collect(batch, batch_items))

    api = run(
        tmp_path,
        scenario,
        answer,
        scripts={0: ["completed"], 1: ["in_progress"]},
    )
    assert [re.sub(r".*/batches/", "", str(c.request.url)) for c in api.cancel.calls] == [
        "batch_1/cancel"
    ]
    assert [(r.custom_id, r.error) for r in results] == [
        ("item-0", "provider: no result line for this item"),
        ("item-1", "provider: no result line for this item"),
        ("item-2", None),
        ("item-3", "provider: cancelled"),
    ]


def test_cancel_before_create_marks_the_chunk_and_submit_skips_it(tmp_path: Path) -> None:
    batch_items = items(1)
    state = MemoryState()

    async def scenario(env: Env) -> None:
        env.api.create_errors.append(httpx.Response(500))
        with pytest.raises(LLMProviderError):
            await env.batch(state).submit(batch_items)
        again = env.batch(MemoryState(state.current))
        await again.cancel()
        await again.submit(batch_items)
        await again.wait()
        assert [(r.custom_id, r.error) for r in await collect(again, batch_items)] == [
            ("item-0", "provider: cancelled (cancelled before submission)")
        ]

    api = run(tmp_path, scenario, answering(batch_items))
    assert api.create.call_count == 1 and not api.cancel.called
