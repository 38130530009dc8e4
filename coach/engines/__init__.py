"""Engines that review a draft. Importing this package registers the built-in engines.

The LLM engine is registered lazily: importing it loads the OpenAI SDK (seconds of start-up),
which every CLI command and API worker would otherwise pay even when only the rule engine runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coach.engines import rules as _rules  # noqa: F401  (registers "rules")
from coach.engines.base import ENGINES, Reviewer

if TYPE_CHECKING:
    from coach.rulebook import Rulebook
    from coach.settings import Settings

__all__ = ["ENGINES", "Reviewer"]


def _llm(rulebook: Rulebook, settings: Settings) -> Reviewer:
    from coach.engines.llm.engine import LLMEngine

    return LLMEngine(rulebook, settings)


ENGINES.setdefault("llm", _llm)
