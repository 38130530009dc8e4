"""The Rule model: what one rule of a rulebook holds."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coach.models import Kind, Language, Severity

__all__ = ["BUILTIN_RULE_IDS", "Detect", "Example", "Examples", "Rule", "Rulebook", "Text"]

#: The rules the offline engine has dedicated checks for. Their ids are public and stable.
BUILTIN_RULE_IDS = (
    "no-cold-pitch",
    "give-first",
    "interest-in-them",
    "quality-over-quantity",
    "volunteer-to-lead",
)

_ID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Model):
    """A text written for the user, in every supported language."""

    en: str = Field(min_length=1)
    he: str = Field(min_length=1)

    def get(self, language: Language) -> str:
        return self.he if language is Language.he else self.en


class Example(_Model):
    language: Language
    text: str = Field(min_length=1)


class Examples(_Model):
    fail: list[Example] = Field(min_length=1)
    passes: list[Example] = Field(alias="pass", min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DetectPatterns(_Model):
    fail: list[str] = Field(default_factory=list)
    passes: list[str] = Field(default_factory=list, alias="pass")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("fail", "passes")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from exc
        return patterns


class Detect(_Model):
    """Patterns that let the offline engine check a rule a user added: the rule fails when a
    `fail` pattern matches and no `pass` pattern does."""

    en: DetectPatterns = Field(default_factory=DetectPatterns)
    he: DetectPatterns = Field(default_factory=DetectPatterns)

    def get(self, language: Language) -> DetectPatterns:
        return self.he if language is Language.he else self.en


class Rule(_Model):
    id: str
    title: Text
    principle: Text
    fails_when: Text
    passes_when: Text
    examples: Examples
    severity: Severity
    applies_to: list[Kind] = Field(min_length=1)
    fix: Text
    enabled: bool = True
    detect: Detect | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"rule id {value!r} must be lowercase words joined by '-'")
        return value


class Rulebook(_Model):
    version: str = Field(min_length=1)
    rules: list[Rule]

    @property
    def enabled(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.enabled]

    def get(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

    @property
    def ids(self) -> list[str]:
        return [rule.id for rule in self.rules]
