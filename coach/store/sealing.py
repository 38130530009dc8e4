"""Drafts and reviews at rest: batch items keep their input and result in the store (a durable
batch must survive a crash), so with COACH_STORE_KEY set they are stored encrypted.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, as the disk cache uses. The setting may
hold several keys separated by commas: the first encrypts, all decrypt (`MultiFernet`), so a key
is rotated by putting the new one first and removing the old one once the old batches are gone.
Values carry a prefix, so rows written before a key was set stay readable, and a row that is
encrypted while no key (or the wrong one) is configured is a clear `StoreError`, never garbage.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from coach.errors import ConfigError
from coach.settings import Settings
from coach.store.db import StoreError

__all__ = ["PREFIX", "Sealer"]

PREFIX = "fernet:"


class Sealer:
    """Encrypts the batch columns that hold drafts or reviews; a pass-through without keys."""

    def __init__(self, keys: list[str] | None = None) -> None:
        self._fernet: MultiFernet | None = None
        if keys:
            try:
                self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
            except (ValueError, TypeError):
                raise ConfigError(
                    "setting COACH_STORE_KEY: must be one or more Fernet keys separated by "
                    "commas (make one with python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        if settings.store_key is None:
            return cls()
        return cls([k for k in settings.store_key.get_secret_value().split(",") if k.strip()])

    @property
    def encrypting(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        if value is None or self._fernet is None:
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, value: str | None) -> str | None:
        if value is None or not value.startswith(PREFIX):
            return value
        if self._fernet is None:
            raise StoreError("batch data in the store is encrypted: set COACH_STORE_KEY")
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode("ascii")).decode()
        except InvalidToken:
            raise StoreError(
                "batch data in the store was encrypted with another key than COACH_STORE_KEY"
            ) from None
