"""`coach batch --provider-batch` end to end on the store (SQLite): inputs read into the store,
submitted once through the (respx) Batch API, merged by custom_id into the store, the output
file written; a second run after an interruption resumes polling without submitting again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import respx

from batch.test_provider import BASE, MODEL, FakeBatchAPI, ok_line
from coach.batch.provider_run import run_provider_batch
from coach.batch.run import BatchOptions, batch_id_of
from coach.engines.rules.engine import RuleEngine
from coach.models import ReviewRequest
from coach.rulebook import default_rulebook
from coach.service import ReviewService
from coach.settings import Settings
from coach.store import open_store
from tools.fake_openai.server import parse_user_message, to_llm_review

DRAFTS = [
    "Could you introduce me to your head of procurement? We sell the best CRM.",
    "Hi Dana, I enjoyed your talk on onboarding. How are you measuring time-to-value now?",
    "Hi {{first_name}}, buy our platform today at https://acme.io and save 20%!",
]


def answer(custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
    draft = parse_user_message(body["messages"][-1]["content"])
    if "procurement" in draft.draft:
        return None  # the provider lost this one: it must come back as a failed item
    request = ReviewRequest(text=draft.draft, kind=draft.kind)
    review = RuleEngine(default_rulebook()).review_sync(request, rewrite=draft.rewrite)
    return ok_line(custom_id, to_llm_review(review, rewrite=draft.rewrite).model_dump_json())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        llm_model=MODEL, llm_api_key="sk-test", llm_base_url=BASE, data_dir=tmp_path / "data"
    )


def options(tmp_path: Path) -> BatchOptions:
    source = tmp_path / "drafts.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DRAFTS))
    )
    return BatchOptions(inputs=[source], out=tmp_path / "out.jsonl", engine="llm")


async def _run(settings: Settings, opts: BatchOptions, *, stop_after_submit: bool) -> Any:
    store = await open_store(settings)
    service = ReviewService(settings=settings)
    stop = asyncio.Event()
    try:
        if stop_after_submit:
            # Interrupt once the job is submitted and being polled.
            async def interrupt() -> None:
                while (await store.load_provider_state(_batch_id(settings, opts))) is None:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                stop.set()

            asyncio.get_running_loop().create_task(interrupt())
        return await run_provider_batch(
            opts,
            store=store,
            service=service,
            settings=settings,
            stop=stop,
            poll_interval_s=0.02,
            handle_signals=False,
        )
    finally:
        await service.aclose()
        await store.close()


def _batch_id(settings: Settings, opts: BatchOptions) -> str:
    return batch_id_of(opts, engine="llm", rulebook_version=default_rulebook().version)


def test_a_provider_batch_is_submitted_once_and_merged_into_the_output(
    tmp_path: Path, settings: Settings
) -> None:
    opts = options(tmp_path)
    with respx.mock(assert_all_called=False) as router:
        api = FakeBatchAPI(router, answer, script=["in_progress"] * 30 + ["completed"])
        first = asyncio.run(_run(settings, opts, stop_after_submit=True))
        assert first.interrupted
        assert not opts.out.exists()
        assert api.upload.call_count == 1 and api.create.call_count == 1
        second = asyncio.run(_run(settings, opts, stop_after_submit=False))
    assert not second.interrupted
    assert api.upload.call_count == 1 and api.create.call_count == 1, "submitted twice"
    [uploaded] = api.uploads()
    assert len(uploaded) == 3 and len({line["custom_id"] for line in uploaded}) == 3
    rows = [json.loads(line) for line in opts.out.read_text().splitlines()]
    assert [row["item"].rsplit(":", 1)[-1] for row in rows] == ["id=d0", "id=d1", "id=d2"]
    by_id = {row["item"].rsplit("=", 1)[-1]: row for row in rows}
    assert by_id["d0"]["status"] == "failed" and "provider" in by_id["d0"]["error"]
    assert by_id["d1"]["status"] == "done" and by_id["d1"]["review"]["engine"] == "llm"
    assert "{{first_name}}" in by_id["d2"]["review"]["rewrite"]["text"]
    assert second.summary.failed == 1 and second.summary.done == 2
