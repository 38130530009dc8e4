"""API keys in the store, on SQLite and on the real PostgreSQL: create, list, authenticate,
revoke; malformed and wrong keys; no caching of positive results; database errors."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

import coach.store.sql as sql
from coach.errors import ConfigError, InputError
from coach.store import Principal, SqlStore, StoredKey, StoreError, open_store
from coach.store.key_reads import SqliteKeyReader
from coach.store.sql import hash_key, make_engine, parse_key
from store.store_support import BACKENDS, database, settings_for, store_at

KEY_RE = re.compile(r"coach_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield url


def test_create_list_authenticate(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            assert await store.list_keys() == []
            key, record = await store.create_key("acme")
            assert KEY_RE.fullmatch(key)
            assert record.prefix == key[:14] and record.tenant == "acme"
            assert record.revoked_at is None
            assert record.created_at.tzinfo is not None
            assert abs(datetime.now(UTC) - record.created_at) < timedelta(minutes=1)

            principal = await store.authenticate(key)
            assert principal == Principal(tenant="acme", key_id=record.id, prefix=record.prefix)
            # Again: the row's last_used_at is read back (an aware datetime) and not re-stamped.
            assert await store.authenticate(key) == principal

            other, _ = await store.create_key("globex")
            assert other != key and other[:14] != key[:14]
            listed = await store.list_keys()
            assert [(r.prefix, r.tenant) for r in listed] == [
                (record.prefix, "acme"),
                (other[:14], "globex"),
            ]
            assert listed[0].id == record.id and listed[0].created_at == record.created_at
            assert not any(hasattr(r, "key_hash") for r in listed)
            assert await store.ping()

    asyncio.run(scenario())


def test_wrong_secret_with_right_prefix_is_rejected(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, _ = await store.create_key("acme")
            last = "A" if key[-1] != "A" else "B"
            assert await store.authenticate(key[:-1] + last) is None
            assert await store.authenticate(key[:15] + "x" * 43) is None
            # a well-formed key under a prefix nobody has
            assert await store.authenticate("coach_00000000_" + key[15:]) is None
            assert await store.authenticate(key) is not None

    asyncio.run(scenario())


MALFORMED = [
    "",
    "coach_",
    "coach",
    "Bearer coach_0123abcd_" + "a" * 43,
    "coach_0123ABCD_" + "a" * 43,  # upper-case prefix
    "coach_0123abc_" + "a" * 44,  # 7-digit prefix
    "coach_0123abcd_" + "a" * 42,
    "coach_0123abcd_" + "a" * 44,
    "coach_0123abcd-" + "a" * 43,
    "coach_0123abcd_" + "a" * 42 + "=",
    "coach_0123abcd_" + "a" * 42 + "é",
    "coach_0123abcd_" + "a" * 42 + "\x00",
    " coach_0123abcd_" + "a" * 43,
    "coach_0123abcd",
    "\x00" * 58,
    "ключ_0123abcd_" + "a" * 43,
    "x" * 100_000,
    "coach_0123abcd_" + "'; DROP TABLE api_keys; --".ljust(43, "a"),
]


def test_malformed_keys_are_none_and_never_raise(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, _ = await store.create_key("acme")
            for bad in [*MALFORMED, key + "a", key[:-1], key.upper()]:
                assert await store.authenticate(bad) is None, repr(bad[:30])
                assert await store.revoke(bad) == 0, repr(bad[:30])
            # the header value is matched exactly; `revoke` (an operator's input) is stripped
            assert await store.authenticate(f"{key}\n") is None
            for not_a_string in (None, 42, b"coach_", ["coach_"]):
                assert await store.authenticate(cast(Any, not_a_string)) is None
                assert await store.revoke(cast(Any, not_a_string)) == 0
            assert await store.authenticate(key) is not None  # still valid, table intact

    asyncio.run(scenario())


def test_revoke_by_key_takes_effect_on_the_next_call(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, record = await store.create_key("acme")
            keep, _ = await store.create_key("acme")
            assert await store.authenticate(key) is not None
            assert await store.revoke(key) == 1
            assert await store.authenticate(key) is None
            assert await store.revoke(key) == 0  # already revoked: nothing to do
            assert await store.authenticate(keep) is not None
            (revoked,) = [r for r in await store.list_keys() if r.id == record.id]
            assert revoked.revoked_at is not None and revoked.revoked_at >= record.created_at

    asyncio.run(scenario())


def test_revoke_by_displayed_prefix(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, record = await store.create_key("acme")
            other, _ = await store.create_key("acme")
            assert await store.revoke(f"  {record.prefix.upper()}\n") == 1
            assert await store.authenticate(key) is None
            assert await store.authenticate(other) is not None
            assert await store.revoke(record.prefix) == 0

    asyncio.run(scenario())


def test_revoke_matches_nothing(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, record = await store.create_key("acme")
            wrong_secret = key[:15] + ("b" if key[15] != "b" else "c") + key[16:]
            assert await store.revoke(wrong_secret) == 0  # the right prefix is not enough
            assert await store.revoke("coach_00000000") == 0
            assert await store.revoke("coach_00000000_" + key[15:]) == 0
            assert await store.authenticate(key) is not None
            assert await store.find_key(wrong_secret) is None
            found = await store.find_key(record.prefix)
            assert found is not None and found.id == record.id

    asyncio.run(scenario())


def test_revocation_by_another_process_is_seen_at_once(db_url: str, tmp_path: Path) -> None:
    """The server's store sees a revocation made elsewhere (the CLI) on its next request."""

    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as server, store_at(db_url, tmp_path) as cli:
            key, _ = await cli.create_key("acme")
            for _ in range(3):
                assert await server.authenticate(key) is not None
            assert await cli.revoke(key[:14]) == 1
            assert await server.authenticate(key) is None

    asyncio.run(scenario())


def test_last_used_is_recorded_coarsely(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, _ = await store.create_key("acme")
            (before,) = await store.list_keys()
            assert isinstance(before, StoredKey) and before.last_used_at is None
            await store.authenticate(key)
            (first,) = await store.list_keys()
            assert isinstance(first, StoredKey) and first.last_used_at is not None
            await store.authenticate(key)  # within the resolution: no write
            (second,) = await store.list_keys()
            assert isinstance(second, StoredKey)
            assert second.last_used_at == first.last_used_at

    asyncio.run(scenario())


def test_tenant_names_are_checked(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            for bad in ["", " acme", "acme corp", "a" * 65, "-acme", "acme\n", "ac/me"]:
                with pytest.raises(InputError, match="tenant"):
                    await store.create_key(bad)
            for good in ["a", "acme-corp.eu_1", "A" * 64]:
                await store.create_key(good)
            assert len(await store.list_keys()) == 3

    asyncio.run(scenario())


def test_a_prefix_collision_draws_again(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sql.generate_key

    async def scenario() -> None:
        async with store_at(db_url, tmp_path) as store:
            key, record = await store.create_key("acme")
            draws = iter([(record.prefix + "_" + "z" * 43, record.prefix)])
            monkeypatch.setattr(sql, "generate_key", lambda: next(draws, None) or real())
            again, second = await store.create_key("acme")
            assert second.prefix != record.prefix
            assert await store.authenticate(again) is not None
            assert await store.authenticate(key) is not None

    asyncio.run(scenario())


def test_key_helpers() -> None:
    key, prefix = sql.generate_key()
    assert KEY_RE.fullmatch(key) and key.startswith(prefix + "_")
    assert parse_key(key) == prefix
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len({sql.generate_key()[0] for _ in range(200)}) == 200


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:1/test"

    async def scenario() -> None:
        with pytest.raises(StoreError) as caught:
            await open_store(settings_for(url, tmp_path))
        assert "s3cret" not in str(caught.value)
        store = SqlStore(make_engine(url))
        try:
            assert await store.ping() is False
            with pytest.raises(StoreError):
                await store.authenticate("coach_0123abcd_" + "a" * 43)
            assert await store.authenticate("not a key") is None  # no database needed
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:s3cret-pw@localhost/coach",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "not a url",
    ],
)
def test_unsupported_urls_are_config_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COACH_DATABASE_URL") as caught:
        asyncio.run(open_store(settings_for(url, tmp_path)))
    assert "s3cret" not in str(caught.value)


def test_plain_driver_names_use_the_async_drivers() -> None:
    assert sql.database_url("sqlite:////tmp/x.db").drivername == "sqlite+aiosqlite"
    assert sql.database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert sql.database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"


# -- SQLite: the direct key read ------------------------------------------------------------------


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"


class _NoAsyncReads:
    def connect(self) -> Any:
        raise AssertionError("the key lookup went through aiosqlite")


def test_sqlite_key_lookups_read_the_file_directly(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(_sqlite_url(tmp_path), tmp_path) as store:
            key, record = await store.create_key("acme")
            reads, store._reads = store._reads, cast(Any, _NoAsyncReads())
            principal = await store.authenticate(key)
            assert principal == Principal(tenant="acme", key_id=record.id, prefix=record.prefix)
            # Again: the row's last_used_at is read back (an aware datetime) and not re-stamped.
            assert await store.authenticate(key) == principal
            assert await store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
            assert await store.authenticate(f"coach_{'0' * 8}_{'x' * 43}") is None
            store._reads = reads
            (listed,) = await store.list_keys()  # the first lookup stamped it
            assert isinstance(listed, StoredKey) and listed.last_used_at is not None

    asyncio.run(scenario())


def test_a_revocation_by_another_process_is_seen_on_the_next_direct_read(tmp_path: Path) -> None:
    async def scenario() -> None:
        url = _sqlite_url(tmp_path)
        async with store_at(url, tmp_path) as server, store_at(url, tmp_path) as operator:
            key, _ = await operator.create_key("acme")
            assert await server.authenticate(key) is not None
            assert await operator.revoke(key) == 1  # another engine, as `coach keys revoke`
            assert await server.authenticate(key) is None

    asyncio.run(scenario())


def test_when_sqlite_cannot_answer_directly_the_async_path_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with store_at(_sqlite_url(tmp_path), tmp_path) as store:
            key, _ = await store.create_key("acme")
            assert store._key_reads is not None
            monkeypatch.setattr(store._key_reads, "find", lambda prefix: (False, None))
            assert await store.authenticate(key) is not None
            await store.revoke(key)
            assert await store.authenticate(key) is None

    asyncio.run(scenario())


def test_the_direct_reader_cannot_write_and_recovers_from_errors(tmp_path: Path) -> None:
    missing = SqliteKeyReader(tmp_path / "not-yet.db")
    assert missing.find("abcd1234") == (False, None)  # no file: not answered, not "no key"

    async def scenario() -> None:
        async with store_at(_sqlite_url(tmp_path), tmp_path) as store:
            await store.create_key("acme")
            reads = store._key_reads
            assert reads is not None
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reads._connection().execute("DELETE FROM api_keys")
            assert len(await store.list_keys()) == 1

    asyncio.run(scenario())
