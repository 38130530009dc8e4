"""The eval gate: minimum F1 and accuracy per rule and over the main rules (evals/thresholds.yaml).

Format, one section per engine (an engine without a section is not gated):

    rules:
      macro_main: {f1: 0.88, accuracy: 0.89}
      per_rule:
        give-first: {f1: 0.92, accuracy: 0.92}
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coach.errors import ConfigError, first_validation_error
from coach.evals.runner import EvalResult

__all__ = ["Minimums", "Thresholds", "check", "load_thresholds"]


class Minimums(BaseModel):
    model_config = ConfigDict(extra="forbid")

    f1: float | None = Field(default=None, ge=0, le=1)
    accuracy: float | None = Field(default=None, ge=0, le=1)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    macro_main: Minimums = Field(default_factory=Minimums)
    per_rule: dict[str, Minimums] = Field(default_factory=dict)


def load_thresholds(path: Path, engine: str) -> Thresholds | None:
    """The thresholds for `engine`, or None when the file has no section for it."""
    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"thresholds {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"thresholds {path}: invalid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"thresholds {path}: expected a mapping of engine sections")
    if engine not in raw:
        return None
    try:
        return Thresholds.model_validate(raw[engine])
    except ValidationError as exc:
        raise ConfigError(f"thresholds {path}: {engine}.{first_validation_error(exc)}") from None


def _misses(name: str, minimums: Minimums, f1: float | None, accuracy: float | None) -> list[str]:
    out: list[str] = []
    for metric, floor, value in (
        ("F1", minimums.f1, f1),
        ("accuracy", minimums.accuracy, accuracy),
    ):
        if floor is None:
            continue
        if value is None:
            out.append(f"{name}: no {metric} (rule not in the results)")
        elif value < floor:
            out.append(f"{name}: {metric} {value:.4f} < {floor:.4f}")
    return out


def check(result: EvalResult, thresholds: Thresholds) -> list[str]:
    """One line per miss; empty when the run passes."""
    misses = _misses(
        "four main rules (macro)",
        thresholds.macro_main,
        result.headline["f1"],
        result.headline["accuracy"],
    )
    for rule, minimums in sorted(thresholds.per_rule.items()):
        c = result.table.get(rule)
        misses += _misses(
            rule,
            minimums,
            round(c.f1, 4) if c and c.n else None,
            round(c.accuracy, 4) if c and c.n else None,
        )
    return misses
