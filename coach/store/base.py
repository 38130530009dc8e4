"""What the rest of coach may ask of storage. `coach/store/` is the only package that imports
SQLAlchemy; everything else talks to a `Store`.

API keys look like `coach_<8-char prefix>_<secret>`. Only a hash of the whole key and its
displayed prefix (`coach_<prefix>`) are stored; the key is shown once, at creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["KeyRecord", "Principal", "Store"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a valid API key belongs to."""

    tenant: str
    key_id: str
    prefix: str


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    prefix: str  # displayed form, e.g. "coach_1a2b3c4d"
    created_at: datetime
    revoked_at: datetime | None


class Store(Protocol):
    async def authenticate(self, key: str) -> Principal | None:
        """The principal of an active key; None for an unknown, malformed or revoked key."""

    async def create_key(self, tenant: str) -> tuple[str, KeyRecord]:
        """A new key for `tenant`: the full key (shown once) and its record."""

    async def list_keys(self) -> list[KeyRecord]: ...

    async def revoke(self, key_or_prefix: str) -> int:
        """Revoke by full key or displayed prefix; the number of keys revoked (0 or 1)."""

    async def ping(self) -> bool:
        """Whether the database answers."""

    async def close(self) -> None: ...
