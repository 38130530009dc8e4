"""The SQLAlchemy (async) implementation of `Store`: tables, engines, API keys.

Databases
    SQLite through aiosqlite (the embedded default, one file in the data directory) and
    PostgreSQL through asyncpg. `postgresql://…` and `sqlite://…` URLs are read as their async
    drivers. A PostgreSQL URL may carry `?search_path=NAME` to keep coach's tables in an existing
    schema other than the default (the tests use it to isolate each test).

API keys
    `coach_<8 lowercase hex>_<43 url-safe characters>`: the prefix is 4 random bytes (shown,
    stored in clear, unique, used to find the row), the secret is 32 random bytes from `secrets`.
    Only the SHA-256 of the whole key is stored. A fast, unsalted hash is the right tool here,
    unlike for passwords: a key carries 256 bits of entropy, so there is no dictionary to try and
    no brute force to slow down; salting and key stretching (bcrypt, argon2) protect low-entropy
    secrets and would only add milliseconds to every request. Hashes are compared with
    `hmac.compare_digest`.

    Nothing is cached here: every `authenticate` reads the row, so a revocation takes effect on
    the next request. On SQLite the read goes through `sqlite3` directly (`key_reads.py`), a
    few microseconds instead of a round trip through aiosqlite's thread. `last_used_at` is
    written at most once per `LAST_USED_RESOLUTION`, so authenticating is a read in the common
    case.

Errors
    Database failures become `StoreError` (a `CoachError`) with a message that names neither SQL
    parameters nor credentials, so callers outside this package never handle SQLAlchemy types.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from coach.errors import InputError
from coach.store.base import KeyRecord, Principal
from coach.store.batches import BatchStore
from coach.store.db import (
    StoreError,
    database_errors,
    database_url,
    describe_error,
    make_engine,
    reader,
    sqlite_file,
)
from coach.store.key_reads import KeyRow, SqliteKeyReader
from coach.store.schema import api_keys, metadata
from coach.store.sealing import Sealer

__all__ = [
    "KEY_PATTERN",
    "LAST_USED_RESOLUTION",
    "PREFIX_PATTERN",
    "SqlStore",
    "StoreError",
    "StoredKey",
    "api_keys",
    "database_errors",
    "database_url",
    "describe_error",
    "generate_key",
    "hash_key",
    "make_engine",
    "metadata",
    "parse_key",
]

#: A whole key: `coach_`, the 8-hex prefix, `_`, a 43-character url-safe secret (32 bytes).
KEY_PATTERN = re.compile(r"(coach_[0-9a-f]{8})_[A-Za-z0-9_-]{43}")
#: The displayed prefix of a key.
PREFIX_PATTERN = re.compile(r"coach_[0-9a-f]{8}")
#: Tenant names: short identifiers, safe in logs, metrics labels and `coach keys list` columns.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: `last_used_at` is refreshed when it is older than this (or unset).
LAST_USED_RESOLUTION = timedelta(minutes=5)

_KEY_LENGTH = 58
_SECRET_BYTES = 32
_PREFIX_BYTES = 4
_PING_TIMEOUT_S = 5.0


# -- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey(KeyRecord):
    """A `KeyRecord` with when the key last authenticated (to `LAST_USED_RESOLUTION`)."""

    last_used_at: datetime | None = None


def generate_key() -> tuple[str, str]:
    """A new key and its displayed prefix."""
    prefix = f"coach_{secrets.token_hex(_PREFIX_BYTES)}"
    key = f"{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    assert KEY_PATTERN.fullmatch(key)
    return key, prefix


def parse_key(key: object) -> str | None:
    """The displayed prefix of a well-formed key; None for anything else (never raises)."""
    if not isinstance(key, str) or len(key) != _KEY_LENGTH:
        return None
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    """SHA-256 hex of the whole key (see the module docstring for why a fast hash)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise InputError(
            "tenant: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return tenant


# -- the store ---------------------------------------------------------------------------------


def _record(row: Any) -> StoredKey:
    return StoredKey(
        id=row.id,
        tenant=row.tenant,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class SqlStore(BatchStore):
    """`Store` on an `AsyncEngine` whose schema is migrated (see `coach.store.open_store`);
    batch jobs are in `coach.store.batches`."""

    def __init__(self, engine: AsyncEngine, *, sealer: Sealer | None = None) -> None:
        self._engine = engine
        self._reads = reader(engine)
        self._sealer = sealer or Sealer()
        path = sqlite_file(engine.url)
        self._key_reads = SqliteKeyReader(path) if path is not None else None

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    async def authenticate(self, key: str) -> Principal | None:
        prefix = parse_key(key)
        if prefix is None:
            return None
        digest = hash_key(key)
        row = await self._key_row(prefix)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.key_hash, digest):
            return None
        await self._touch(row.id, row.last_used_at)
        return Principal(tenant=row.tenant, key_id=row.id, prefix=prefix)

    async def _key_row(self, prefix: str) -> KeyRow | None:
        if self._key_reads is not None:
            answered, found = self._key_reads.find(prefix)
            if answered:
                return found
        async with database_errors("authenticating"), self._reads.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.tenant,
                        api_keys.c.key_hash,
                        api_keys.c.revoked_at,
                        api_keys.c.last_used_at,
                    ).where(api_keys.c.prefix == prefix)
                )
            ).first()
        if row is None:
            return None
        return KeyRow(row.id, row.tenant, row.key_hash, row.revoked_at, row.last_used_at)

    async def _touch(self, key_id: str, last: datetime | None) -> None:
        now = datetime.now(UTC)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        try:
            # Its own short write transaction, after the read one has ended.
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
                )
        except (SQLAlchemyError, OSError):
            # Bookkeeping only: a busy database must not turn a valid key into a 401/503.
            pass

    async def create_key(self, tenant: str) -> tuple[str, KeyRecord]:
        _check_tenant(tenant)
        for _attempt in range(5):
            key, prefix = generate_key()
            record = StoredKey(
                id=str(uuid.uuid4()),
                tenant=tenant,
                prefix=prefix,
                created_at=datetime.now(UTC),
                revoked_at=None,
            )
            try:
                async with database_errors("creating a key"), self._engine.begin() as conn:
                    await conn.execute(
                        api_keys.insert().values(
                            id=record.id,
                            tenant=record.tenant,
                            prefix=record.prefix,
                            key_hash=hash_key(key),
                            created_at=record.created_at,
                        )
                    )
            except StoreError as exc:
                if isinstance(exc.__cause__, IntegrityError):
                    continue  # the 1-in-4-billion prefix collision: draw again
                raise
            return key, record
        raise StoreError("could not draw an unused key prefix")  # pragma: no cover

    async def list_keys(self) -> list[KeyRecord]:
        async with database_errors("listing keys"), self._reads.connect() as conn:
            rows = await conn.execute(
                select(
                    api_keys.c.id,
                    api_keys.c.tenant,
                    api_keys.c.prefix,
                    api_keys.c.created_at,
                    api_keys.c.revoked_at,
                    api_keys.c.last_used_at,
                ).order_by(api_keys.c.created_at, api_keys.c.prefix)
            )
            return [_record(row) for row in rows]

    async def find_key(self, key_or_prefix: str) -> StoredKey | None:
        """The record a full key or a displayed prefix names (revoked or not); None otherwise.
        A full key must match its stored hash."""
        prefix, key = _target(key_or_prefix)
        if prefix is None:
            return None
        async with database_errors("looking up a key"), self._reads.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).first()
        if row is None:
            return None
        if key is not None and not hmac.compare_digest(row.key_hash, hash_key(key)):
            return None
        return _record(row)

    async def revoke(self, key_or_prefix: str) -> int:
        prefix, key = _target(key_or_prefix)
        if prefix is None:
            return 0
        condition = (api_keys.c.prefix == prefix) & api_keys.c.revoked_at.is_(None)
        if key is not None:
            condition &= api_keys.c.key_hash == hash_key(key)
        async with database_errors("revoking a key"), self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys).where(condition).values(revoked_at=datetime.now(UTC))
            )
        return 1 if result.rowcount else 0

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S), self._reads.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def close(self) -> None:
        if self._key_reads is not None:
            self._key_reads.close()
        await self._engine.dispose()


def _target(key_or_prefix: str) -> tuple[str | None, str | None]:
    """(prefix, full key or None) named by a full key or a displayed prefix."""
    if not isinstance(key_or_prefix, str):
        return None, None
    value = key_or_prefix.strip()
    if (prefix := parse_key(value)) is not None:
        return prefix, value
    if PREFIX_PATTERN.fullmatch(value.lower()):
        return value.lower(), None
    return None, None
