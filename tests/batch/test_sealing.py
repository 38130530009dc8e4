"""Batch drafts and reviews at rest (COACH_STORE_KEY), on SQLite and PostgreSQL: stored
encrypted, read back in clear by every reader (claims, reuse, results, the provider path),
readable after a key rotation, and a clear StoreError without the key or with the wrong one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from store.store_support import BACKENDS, database, settings_for

from batch.batch_support import item_rows, new_items
from coach.errors import ConfigError
from coach.store import NewItem, SqlStore, StoreError, open_store
from coach.store.sealing import PREFIX, Sealer

DRAFT = "Secret draft {i}: our Q3 numbers are confidential"
REVIEW = '{"review": "quotes the draft: Q3 numbers"}'
KEY, OTHER = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


@asynccontextmanager
async def keyed(url: str, tmp_path: Path, key: str | None) -> AsyncIterator[SqlStore]:
    settings = settings_for(url, tmp_path)
    settings = settings.model_copy(update={"store_key": SecretStr(key) if key else None})
    store = await open_store(settings)
    try:
        yield store
    finally:
        await store.close()


async def _batch(store: SqlStore, n: int = 2) -> str:
    items = new_items(n, text=DRAFT)
    html = NewItem(
        key="page",
        location={"path": "page.html"},
        request=items[0].request,
        draft_hash="h" * 64,
        markup="<p>Secret markup</p>",
    )
    record, _ = await store.create_batch(
        "acme", engine="rules", rewrite=True, source="cli", items=[*items, html]
    )
    return record.id


def test_drafts_and_reviews_are_stored_encrypted_and_read_in_clear(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with keyed(db_url, tmp_path, KEY) as store:
            batch_id = await _batch(store)
            requests = [r for _, _, r in await store.pending_requests(batch_id)]
            assert requests and all(r.startswith("{") for r in requests)
            claimed = await store.claim("w", limit=5, lease_s=60, max_attempts=3)
            assert "Secret draft 0" in (claimed[0].request or "")
            assert await store.complete_item(claimed[0], REVIEW)
            for row in await item_rows(store, batch_id):
                for column in ("request", "markup", "result"):
                    value = row[column]
                    assert value is None or value.startswith(PREFIX), (column, value)
                    # Phrases with spaces: base64 ciphertext never contains one by chance.
                    assert "Secret draft" not in (value or "") and "Q3 numbers" not in (value or "")
            page = await store.results_page(batch_id, with_requests=True)
            assert page[0].result == REVIEW and "Secret draft 0" in (page[0].request or "")
            item = next(i for i in claimed if i.key == "page")
            assert await store.item_request(batch_id, item.id) == claimed[0].request
            assert await store.settle_item(batch_id, item.id, result=REVIEW, error=None)
            results = {r.key: r for r in await store.results_page(batch_id)}
            assert results["page"].markup == "<p>Secret markup</p>"
            assert results["page"].result == REVIEW

    asyncio.run(scenario())


def test_a_rotated_key_still_reads_old_rows_and_older_clear_rows_stay_readable(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with keyed(db_url, tmp_path, None) as store:
            clear = await _batch(store)
        async with keyed(db_url, tmp_path, OTHER) as store:
            old = await _batch(store)
        async with keyed(db_url, tmp_path, f"{KEY},{OTHER}") as store:
            for batch_id in (clear, old):
                [_, _, request] = (await store.pending_requests(batch_id))[0]
                assert "Secret draft 0" in request

    asyncio.run(scenario())


def test_without_the_key_or_with_another_one_reading_is_a_clear_error(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with keyed(db_url, tmp_path, KEY) as store:
            batch_id = await _batch(store)
        for key, message in ((None, "set COACH_STORE_KEY"), (OTHER, "another key")):
            async with keyed(db_url, tmp_path, key) as store:
                with pytest.raises(StoreError, match=message):
                    await store.pending_requests(batch_id)

    asyncio.run(scenario())


def test_a_malformed_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="COACH_STORE_KEY"):
        Sealer(["not-a-key"])
    assert not Sealer().encrypting and Sealer().seal("x") == "x"


def test_an_identical_draft_claimed_later_reuses_the_decrypted_review(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with keyed(db_url, tmp_path, KEY) as store:
            record, _ = await store.create_batch(
                "acme",
                engine="rules",
                rewrite=True,
                source="api",
                items=new_items(2, text="The same secret draft"),
            )
            [first] = await store.claim("w", limit=1, lease_s=60, max_attempts=3)
            assert first.reuse is None
            assert await store.complete_item(first, REVIEW)
            [second] = await store.claim("w", limit=1, lease_s=60, max_attempts=3)
            assert second.batch_id == record.id and second.reuse == (first.key, REVIEW)

    asyncio.run(scenario())
