"""Lexicons: per-language signal patterns and user-facing phrases, loaded from data files.

`data/<lang>.yaml` holds `signals` (category -> regex patterns) and `phrases` (everything the
engine writes for the user). Patterns are compiled once per language into one alternation per
category. English patterns are wrapped in word boundaries. Hebrew patterns also accept the
attached one-letter prefixes (ו ה ש ב ל מ כ, up to three: "וכשה…") before the first word, and
"~" in a Hebrew pattern stands for any run of suffix letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from coach.models import Language
from coach.text.language import HEBREW_LETTER

__all__ = ["Lexicon", "lexicon"]

_HE_PREFIX = "[ובלמכשה]{0,3}"


def _wrap(pattern: str, language: Language) -> str:
    if language is Language.he:
        # "~" in a Hebrew pattern stands for any suffix letters (plural, possessive, gender).
        pattern = pattern.replace("~", f"[{HEBREW_LETTER}]*")
    if language is Language.he and re.match(f"[{HEBREW_LETTER}(]", pattern):
        return f"(?<![{HEBREW_LETTER}\\w]){_HE_PREFIX}(?:{pattern})(?![{HEBREW_LETTER}])"
    return f"(?<!\\w)(?:{pattern})(?!\\w)"


@dataclass(frozen=True)
class Lexicon:
    language: Language
    signals: dict[str, re.Pattern[str]]
    phrases: dict[str, Any]

    def phrase(self, *path: str) -> Any:
        node: Any = self.phrases
        for key in path:
            node = node[key]
        return node


def _load(language: Language) -> Lexicon:
    raw = yaml.safe_load(
        resources.files("coach.engines.rules")
        .joinpath(f"data/{language.value}.yaml")
        .read_text("utf-8")
    )
    signals: dict[str, re.Pattern[str]] = {}
    for category, patterns in raw["signals"].items():
        joined = "|".join(_wrap(str(p), language) for p in patterns)
        try:
            signals[category] = re.compile(joined, re.IGNORECASE)
        except re.error as exc:  # pragma: no cover - a broken data file is a packaging bug
            raise RuntimeError(f"lexicon {language.value}/{category}: {exc}") from exc
    extras = {k: v for k, v in raw.items() if k not in ("signals", "phrases")}
    return Lexicon(language=language, signals=signals, phrases={**raw["phrases"], **extras})


@cache
def lexicon(language: Language) -> Lexicon:
    return _load(language)
