"""Storage for the HTTP service: API keys in SQLite (default) or PostgreSQL.

    store = await open_store(settings)   # migrates to head, then serves
    principal = await store.authenticate(key)
    await store.close()

The rest of coach talks to the `Store` protocol (`coach.store.base`) and catches `StoreError`;
only this package imports SQLAlchemy and Alembic.
"""

from __future__ import annotations

from coach.settings import Settings
from coach.store.base import KeyRecord, Principal, Store
from coach.store.batches import (
    BatchRecord,
    ClaimedItem,
    IdempotencyConflict,
    ItemResult,
    NewItem,
    OutboxEvent,
)
from coach.store.migrate import migrate, upgrade
from coach.store.sealing import Sealer
from coach.store.sql import SqlStore, StoredKey, StoreError, make_engine

__all__ = [
    "BatchRecord",
    "ClaimedItem",
    "IdempotencyConflict",
    "ItemResult",
    "KeyRecord",
    "NewItem",
    "OutboxEvent",
    "Principal",
    "SqlStore",
    "Store",
    "StoreError",
    "StoredKey",
    "migrate",
    "open_store",
]


async def open_store(settings: Settings) -> SqlStore:
    """The store for `settings.resolved_database_url`, migrated to head.

    With no COACH_DATABASE_URL this is SQLite at `<data_dir>/coach.db`; the data directory is
    created on first use. Safe on every start and from several processes at once. Raises
    `ConfigError` for an unusable URL and `StoreError` when the database cannot be reached."""
    url = settings.resolved_database_url
    await upgrade(url)
    return SqlStore(make_engine(url), sealer=Sealer.from_settings(settings))
