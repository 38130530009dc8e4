"""The Reviewer protocol every engine implements, and the registry of engines by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from coach.models import Review, ReviewRequest
from coach.rulebook import Rulebook
from coach.settings import Settings

__all__ = ["ENGINES", "EngineFactory", "Reviewer", "register"]


class Reviewer(Protocol):
    name: str

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review: ...


EngineFactory = Callable[[Rulebook, Settings], Reviewer]
ENGINES: dict[str, EngineFactory] = {}


def register(name: str) -> Callable[[EngineFactory], EngineFactory]:
    def decorate(factory: EngineFactory) -> EngineFactory:
        ENGINES[name] = factory
        return factory

    return decorate
