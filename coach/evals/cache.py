"""Recorded model answers for the eval harness: a re-run costs nothing, `--replay` runs offline.

A `RecordingCaller` wraps the LLM engine's `ModelCaller`. Each model call is keyed by SHA-256
over the request body (model, messages — the prompt with its version's text and the case's
draft —, response format, temperature, max tokens) and the repeat index, so a change to any of
them is a miss. A recording holds the completion's content and token counts only: no headers,
no keys. Files: `<dir>/<key[:2]>/<key>.json`. Recordings quote drafts of the public datasets, so
they can be committed; do not point `--cache-dir` at a folder in the repository for private data.
"""

from __future__ import annotations

import contextvars
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coach.engines.llm.cache import cache_key
from coach.engines.llm.call import CallStats, Completion, ModelCaller
from coach.errors import LLMError

__all__ = ["TRACE", "RecordingCaller", "Recordings", "ReplayMiss", "Trace"]


class ReplayMiss(LLMError):
    """`--replay` and no recording for this call. The engine turns it into a degraded review
    with this code; the harness stops on it."""

    code = "replay_miss"


@dataclass
class Trace:
    """What one case × repeat did with the recordings (one per asyncio task)."""

    repeat: int = 0
    calls: int = 0
    hits: int = 0

    @property
    def all_hits(self) -> bool:
        return self.calls > 0 and self.hits == self.calls


#: The trace of the task running a case × repeat; set by the runner.
TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "coach_eval_trace", default=None
)


class Recordings:
    """A directory of recorded completions, content-addressed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def key(request: dict[str, Any], repeat: int) -> str:
        return cache_key({"request": request, "repeat": repeat})

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        try:
            data = json.loads(self._path(key).read_text("utf-8"))
            return Completion(
                content=str(data["content"]),
                tokens_in=int(data.get("tokens_in", 0)),
                tokens_out=int(data.get("tokens_out", 0)),
                tokens_cached=int(data.get("tokens_cached", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, completion: Completion, model: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "model": model,
            "content": completion.content,
            "tokens_in": completion.tokens_in,
            "tokens_out": completion.tokens_out,
            "tokens_cached": completion.tokens_cached,
        }
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", "utf-8")
        tmp.replace(path)


class RecordingCaller(ModelCaller):
    """A `ModelCaller` that answers from recordings and records what the inner caller answers.
    With `replay=True` it never calls the inner caller (there may be none): a miss raises
    `ReplayMiss`."""

    def __init__(
        self, recordings: Recordings, inner: ModelCaller | None, *, replay: bool = False
    ) -> None:
        # No super().__init__: this caller has no client of its own.
        self.recordings = recordings
        self.inner = inner
        self.replay = replay

    async def complete(
        self, request: dict[str, Any], *, deadline: float, stats: CallStats
    ) -> Completion:
        trace = TRACE.get()
        repeat = trace.repeat if trace else 0
        if trace is not None:
            trace.calls += 1
        key = self.recordings.key(request, repeat)
        hit = self.recordings.get(key)
        if hit is not None:
            if trace is not None:
                trace.hits += 1
            stats.calls += 1
            stats.tokens_in += hit.tokens_in
            stats.tokens_out += hit.tokens_out
            stats.tokens_cached += hit.tokens_cached
            return hit
        if self.replay or self.inner is None:
            raise ReplayMiss(f"no recording for this call (key {key[:12]})")
        completion = await self.inner.complete(request, deadline=deadline, stats=stats)
        self.recordings.put(key, completion, str(request.get("model", "")))
        return completion
