"""coach's tables, in one place: the migrations (coach/store/migrations) build exactly these
(a test compares them), and only coach.store's modules read or write them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "UTCDateTime",
    "api_keys",
    "as_utc",
    "batch_items",
    "batches",
    "metadata",
    "webhook_outbox",
    "workers",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite gives it back without an offset)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Keep in step with the migrations (a test compares them).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    UniqueConstraint("prefix"),
    Index("ix_api_keys_tenant", "tenant"),
)

#: An auto-incrementing 64-bit key on PostgreSQL; SQLite only auto-increments INTEGER keys.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Batch jobs (API and `coach batch`). See coach/store/batches.py for the state machine.
batches = Table(
    "batches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(8), nullable=False),
    Column("engine", String(16), nullable=False),
    Column("rewrite", Boolean(), nullable=False),
    Column("total", Integer(), nullable=False),
    Column("generation", Integer(), nullable=False),
    Column("webhook_url", Text(), nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("provider_state", Text(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    UniqueConstraint("tenant", "idempotency_key"),
    Index("ix_batches_tenant", "tenant"),
)

#: One row per item of a batch: its input, its lease while a worker holds it, its result.
batch_items = Table(
    "batch_items",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("batch_id", String(36), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("key", Text(), nullable=False),
    Column("location", Text(), nullable=False),
    Column("request", Text(), nullable=True),
    Column("markup", Text(), nullable=True),
    Column("draft_hash", String(64), nullable=False),
    Column("generation", Integer(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("not_before", UTCDateTime(), nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_token", String(36), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("error", Text(), nullable=True),
    Column("result", Text(), nullable=True),
    Column("duplicate_of", Text(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    UniqueConstraint("batch_id", "key"),
    Index("ix_batch_items_batch_id", "batch_id", "seq"),
    Index("ix_batch_items_state", "state", "id"),
    Index("ix_batch_items_batch_state", "batch_id", "state", "id"),
    Index("ix_batch_items_draft_hash", "batch_id", "draft_hash"),
)

#: Webhook events waiting to be delivered (a transactional outbox: written in the same
#: transaction as the state change they announce).
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("batch_id", String(36), nullable=False),
    Column("event", String(40), nullable=False),
    Column("url", Text(), nullable=False),
    Column("payload", Text(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("last_error", Text(), nullable=True),
    Column("last_status", Integer(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    UniqueConstraint("batch_id", "event"),
    Index("ix_webhook_outbox_state", "state", "next_attempt_at"),
)

#: Batch workers that are running, one row each, refreshed while they run: they count each
#: other here to share a provider's rate budget (`pool`: a hash of the endpoint and model).
workers = Table(
    "workers",
    metadata,
    Column("owner", String(100), primary_key=True),
    Column("pool", String(32), nullable=False),
    Column("active", Boolean(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("seen_at", UTCDateTime(), nullable=False),
    Index("ix_workers_pool", "pool", "seen_at"),
)
