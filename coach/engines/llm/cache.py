"""Caching of LLM reviews.

Key: SHA-256 over (draft, kind, language, context, rewrite flag, rulebook version and content,
prompt version and digest, model, parameters). Value: the validated `Review`.

- Default: in memory, bounded (`COACH_CACHE_SIZE` entries) with a TTL (`COACH_CACHE_TTL`).
- Opt-in persistent cache (`COACH_CACHE_DIR`, used by the eval harness and batch jobs): one file
  per key, encrypted with Fernet under `COACH_CACHE_KEY`, because a review quotes the draft and
  coach never stores a draft in clear. Without a key the persistent cache refuses to start.
  Files are named by the key hash only.

Only successful LLM reviews are cached; a degraded review is never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from cachetools import TTLCache
from cryptography.fernet import Fernet, InvalidToken

from coach.errors import ConfigError
from coach.models import Review
from coach.settings import Settings

__all__ = ["DiskCache", "MemoryCache", "ReviewCache", "cache_key", "make_cache"]


def cache_key(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ReviewCache(Protocol):
    def get(self, key: str) -> Review | None: ...
    def put(self, key: str, review: Review) -> None: ...


class MemoryCache:
    def __init__(self, size: int, ttl: float) -> None:
        self._lock = threading.Lock()
        self._data: TTLCache[str, Review] | None = (
            TTLCache(maxsize=size, ttl=ttl) if size and ttl else None
        )

    def get(self, key: str) -> Review | None:
        if self._data is None:
            return None
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, review: Review) -> None:
        if self._data is None:
            return
        with self._lock:
            self._data[key] = review


class DiskCache:
    """Encrypted, content-addressed files: `<dir>/<aa>/<key>.bin`."""

    def __init__(self, directory: Path, secret: str, memory: MemoryCache) -> None:
        try:
            self._fernet = Fernet(secret.encode())
        except ValueError:
            raise ConfigError(
                "setting COACH_CACHE_KEY: must be a Fernet key (make one with "
                "python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
        self._dir = directory
        self._memory = memory

    def _path(self, key: str) -> Path:
        return self._dir / key[:2] / f"{key}.bin"

    def get(self, key: str) -> Review | None:
        if (hit := self._memory.get(key)) is not None:
            return hit
        try:
            blob = self._path(key).read_bytes()
            review = Review.model_validate_json(self._fernet.decrypt(blob))
        except (OSError, InvalidToken, ValueError):
            return None
        self._memory.put(key, review)
        return review

    def put(self, key: str, review: Review) -> None:
        self._memory.put(key, review)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(self._fernet.encrypt(review.model_dump_json().encode()))
        tmp.replace(path)


def make_cache(settings: Settings) -> ReviewCache:
    memory = MemoryCache(settings.cache_size, settings.cache_ttl_s)
    if settings.cache_dir is None:
        return memory
    if settings.cache_key is None:
        raise ConfigError(
            "setting COACH_CACHE_DIR needs COACH_CACHE_KEY: cached reviews quote drafts"
        )
    return DiskCache(settings.cache_dir, settings.cache_key.get_secret_value(), memory)
