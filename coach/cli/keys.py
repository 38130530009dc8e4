"""`coach keys`: create, list and revoke the HTTP service's API keys; print a tenant's webhook
signing secret.

The database is the service's (COACH_DATABASE_URL, or SQLite in COACH_DATA_DIR), migrated on
first use. A key is printed once, at creation; listings show prefixes, never keys or hashes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import click

from coach.errors import InputError
from coach.settings import Settings

if TYPE_CHECKING:
    from coach.store import Store

__all__ = ["keys"]

T = TypeVar("T")


def _with_store(work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store from the environment, run `work`, close it (one event loop)."""
    from coach.store import open_store  # SQLAlchemy only for the commands that need it

    settings = Settings.from_env(os.environ)

    async def run() -> T:
        store = await open_store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


@click.group(name="keys")
def keys() -> None:
    """Manage the API keys of the HTTP service."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
def create(tenant: str) -> None:
    """Create a key for TENANT and print it (shown this once)."""

    async def work(store: Store) -> tuple[str, str]:
        key, record = await store.create_key(tenant)
        return key, record.prefix

    key, prefix = _with_store(work)
    click.echo(key)
    click.echo(
        f"coach: created {prefix} for tenant {tenant}; this key will not be shown again, "
        "store it now.",
        err=True,
    )


@keys.command("list")
def list_keys() -> None:
    """List the keys: prefix, tenant, created, revoked."""
    from coach.store import StoredKey

    records = _with_store(lambda store: store.list_keys())
    if not records:
        click.echo(
            "coach: no API keys; create one with `coach keys create --tenant NAME`", err=True
        )
        return
    rows = [("PREFIX", "TENANT", "CREATED", "REVOKED", "LAST USED")]
    for record in records:
        used = record.last_used_at if isinstance(record, StoredKey) else None
        rows.append(
            (
                record.prefix,
                record.tenant,
                _when(record.created_at),
                _when(record.revoked_at),
                _when(used),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@keys.command("revoke")
@click.argument("key_or_prefix", metavar="KEY_OR_PREFIX")
def revoke(key_or_prefix: str) -> None:
    """Revoke a key, named by the full key or its displayed prefix (coach_xxxxxxxx).

    Takes effect on the service's next request. Revoking a revoked key changes nothing."""
    from coach.store.sql import PREFIX_PATTERN, SqlStore, parse_key

    value = key_or_prefix.strip()
    # Messages name the prefix, never the argument: it may be a (mistyped) secret.
    shown = parse_key(value) or (value.lower() if PREFIX_PATTERN.fullmatch(value.lower()) else "")
    if not shown:
        raise InputError(
            "KEY_OR_PREFIX: expected a key or its displayed prefix (coach_ and 8 hex digits)"
        )

    async def work(store: Store) -> tuple[int, bool]:
        count = await store.revoke(value)
        already = False
        if count == 0 and isinstance(store, SqlStore):
            found = await store.find_key(value)
            already = found is not None and found.revoked_at is not None
        return count, already

    count, already = _with_store(work)
    if count:
        click.echo(f"revoked {shown}")
    elif already:
        click.echo(f"{shown} was already revoked")
    else:
        raise InputError(f"no API key matches {shown}")


@keys.command("webhook-secret")
@click.option("--tenant", required=True, help="The tenant whose receivers verify the events.")
def webhook_secret(tenant: str) -> None:
    """Print TENANT's webhook signing secret: its receivers verify coach's events with it.

    Derived from COACH_WEBHOOK_SECRET, so nothing is stored and every server with the same
    setting prints the same. During a rotation (COACH_WEBHOOK_SECRET=NEW,OLD) one line each,
    the current first: receivers accept any of them until the old one is retired."""
    from coach.webhooks import tenant_secrets

    settings = Settings.from_env(os.environ)
    if not settings.webhook_secrets:
        raise InputError("COACH_WEBHOOK_SECRET is not set: webhooks are not configured")
    for secret in tenant_secrets(settings.webhook_secrets, tenant):
        click.echo(secret)
