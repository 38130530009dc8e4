"""Batch jobs: batches, their items (input, lease, result) and the webhook outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("rewrite", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("provider_state", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_batches_tenant"),
    )
    op.create_index("ix_batches_tenant", "batches", ["tenant"])
    op.create_table(
        "batch_items",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("markup", sa.Text(), nullable=True),
        sa.Column("draft_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_token", sa.String(36), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("duplicate_of", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_batch_items"),
        sa.UniqueConstraint("batch_id", "key", name="uq_batch_items_batch_id"),
    )
    op.create_index("ix_batch_items_batch_id", "batch_items", ["batch_id", "seq"])
    op.create_index("ix_batch_items_state", "batch_items", ["state", "id"])
    op.create_index("ix_batch_items_batch_state", "batch_items", ["batch_id", "state", "id"])
    op.create_index("ix_batch_items_draft_hash", "batch_items", ["batch_id", "draft_hash"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
        sa.UniqueConstraint("batch_id", "event", name="uq_webhook_outbox_batch_id"),
    )
    op.create_index("ix_webhook_outbox_state", "webhook_outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_state", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_index("ix_batch_items_draft_hash", table_name="batch_items")
    op.drop_index("ix_batch_items_batch_state", table_name="batch_items")
    op.drop_index("ix_batch_items_state", table_name="batch_items")
    op.drop_index("ix_batch_items_batch_id", table_name="batch_items")
    op.drop_table("batch_items")
    op.drop_index("ix_batches_tenant", table_name="batches")
    op.drop_table("batches")
