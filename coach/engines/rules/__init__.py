"""The offline rule engine."""

from coach.engines.rules.engine import RuleEngine

__all__ = ["RuleEngine"]
