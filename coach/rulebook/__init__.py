"""The rulebook: rules as data, loaded and validated."""

from coach.rulebook.loader import default_rulebook, load_rulebook, parse_rulebook
from coach.rulebook.model import BUILTIN_RULE_IDS, Detect, Rule, Rulebook

__all__ = [
    "BUILTIN_RULE_IDS",
    "Detect",
    "Rule",
    "Rulebook",
    "default_rulebook",
    "load_rulebook",
    "parse_rulebook",
]
