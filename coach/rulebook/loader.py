"""Loading rulebook files: the default shipped with the package, or a user's file on top of it.

A user file either is a whole rulebook (`rules:` only), or extends the default:

    version: acme-1
    extends: default
    overrides:                 # only ids the base rulebook has; anything else is an error
      give-first: {severity: error}
      volunteer-to-lead: {enabled: false}
    rules: []                  # new rules, each a full definition (with `detect` patterns for
                               # the offline engine)
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coach.errors import RulebookError, first_validation_error
from coach.rulebook.model import Rule, Rulebook

__all__ = ["default_rulebook", "load_rulebook", "parse_rulebook"]

_OVERRIDABLE = {"severity", "enabled", "applies_to", "title", "fix"}


@cache
def default_rulebook() -> Rulebook:
    text = resources.files("coach.rulebook").joinpath("data/default.yaml").read_text("utf-8")
    return parse_rulebook(text, source="default rulebook")


def load_rulebook(path: Path | str | None) -> Rulebook:
    """The rulebook at `path`, or the default when `path` is None."""
    if path is None:
        return default_rulebook()
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise RulebookError(f"rulebook {path}: file not found") from None
    except UnicodeDecodeError:
        raise RulebookError(f"rulebook {path}: not UTF-8 text") from None
    except OSError as exc:
        raise RulebookError(f"rulebook {path}: {exc.strerror}") from None
    return parse_rulebook(text, source=f"rulebook {path}")


def parse_rulebook(text: str, *, source: str) -> Rulebook:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise RulebookError(f"{source}{line}: invalid YAML") from None
    if not isinstance(data, dict):
        raise RulebookError(f"{source}: expected a mapping with 'version' and 'rules'")
    unknown_keys = set(data) - {"version", "extends", "overrides", "rules"}
    if unknown_keys:
        raise RulebookError(f"{source}: unknown key(s) {', '.join(sorted(unknown_keys))}")

    extends = data.get("extends")
    if extends is None:
        if "overrides" in data:
            raise RulebookError(f"{source}: 'overrides' needs 'extends: default'")
        try:
            book = Rulebook.model_validate(
                {"version": data.get("version"), "rules": data.get("rules")}
            )
        except ValidationError as exc:
            raise RulebookError(f"{source}: {first_validation_error(exc)}") from None
        _check_unique(book.rules, source)
        return book
    if extends != "default":
        raise RulebookError(f"{source}: extends must be 'default', got {extends!r}")
    return _extend(default_rulebook(), data, source)


def _check_unique(rules: list[Rule], source: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RulebookError(f"{source}: rule id {rule.id!r} defined twice")
        seen.add(rule.id)


def _extend(base: Rulebook, data: dict[str, Any], source: str) -> Rulebook:
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise RulebookError(f"{source}: 'overrides' must map rule ids to settings")
    for rule_id in overrides:
        if base.get(rule_id) is None:
            known = ", ".join(base.ids)
            raise RulebookError(
                f"{source}: unknown rule id {rule_id!r} in overrides (known: {known})"
            )
    rules: list[Rule] = []
    for rule in base.rules:
        change = overrides.get(rule.id) or {}
        if not isinstance(change, dict):
            raise RulebookError(f"{source}: overrides.{rule.id} must be a mapping")
        bad = set(change) - _OVERRIDABLE
        if bad:
            raise RulebookError(
                f"{source}: overrides.{rule.id}: cannot override {', '.join(sorted(bad))}"
            )
        try:
            rules.append(Rule.model_validate({**rule.model_dump(by_alias=True), **change}))
        except ValidationError as exc:
            raise RulebookError(
                f"{source}: overrides.{rule.id}.{first_validation_error(exc)}"
            ) from None
    try:
        added = [Rule.model_validate(item) for item in data.get("rules") or []]
    except ValidationError as exc:
        raise RulebookError(f"{source}: rules.{first_validation_error(exc)}") from None
    rules.extend(added)
    _check_unique(rules, source)
    version = data.get("version")
    if not isinstance(version, str | int | float) or not str(version).strip():
        raise RulebookError(f"{source}: 'version' is required")
    return Rulebook(version=f"{version}+default@{base.version}", rules=rules)
