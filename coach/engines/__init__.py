"""Engines that review a draft. Importing this package registers the built-in engines."""

from coach.engines import llm as _llm  # noqa: F401  (registers "llm")
from coach.engines import rules as _rules  # noqa: F401  (registers "rules")
from coach.engines.base import ENGINES, Reviewer

__all__ = ["ENGINES", "Reviewer"]
