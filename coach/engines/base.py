"""The Reviewer protocol every engine implements, and the registry of engines by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from coach.models import Review, ReviewRequest
from coach.rulebook import Rulebook

__all__ = ["ENGINES", "Reviewer", "register"]


class Reviewer(Protocol):
    name: str

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review: ...


ENGINES: dict[str, Callable[[Rulebook], Reviewer]] = {}


def register(
    name: str,
) -> Callable[[Callable[[Rulebook], Reviewer]], Callable[[Rulebook], Reviewer]]:
    def decorate(factory: Callable[[Rulebook], Reviewer]) -> Callable[[Rulebook], Reviewer]:
        ENGINES[name] = factory
        return factory

    return decorate
