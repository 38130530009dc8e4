"""Lexicons: per-language signal patterns and user-facing phrases, loaded from data files.

`data/<lang>.yaml` holds `signals` (category -> regex patterns) and `phrases` (everything the
engine writes for the user). English patterns are wrapped in word boundaries. Hebrew patterns
also accept the attached one-letter prefixes (ו ה ש ב ל מ כ, up to three: "וכשה…") before the
first word, and "~" in a Hebrew pattern stands for any run of suffix letters.

Speed: see `Lexicon.scan`. Matches are exactly those of the full regexes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from re import _constants as sre  # type: ignore[attr-defined, unused-ignore]
from re import _parser as sre_parse  # type: ignore[attr-defined, unused-ignore]
from typing import Any

import yaml

from coach.models import Language
from coach.text.language import HEBREW_LETTER

__all__ = ["Lexicon", "dispatch_keys", "lexicon"]

_HE_PREFIX = "[ובלמכשה]{0,3}"
#: Longest Hebrew suffix run "~" stands for (ותיהם is five letters).
_HE_SUFFIX_MAX = 6

_FLAGS = re.IGNORECASE


def _wrap(pattern: str, language: Language) -> str:
    if language is Language.he:
        # "~" in a Hebrew pattern stands for any suffix letters (plural, possessive, gender).
        pattern = pattern.replace("~", f"[{HEBREW_LETTER}]{{0,{_HE_SUFFIX_MAX}}}")
    if language is Language.he and re.match(f"[{HEBREW_LETTER}(]", pattern):
        return f"(?<![{HEBREW_LETTER}\\w]){_HE_PREFIX}(?:{pattern})(?![{HEBREW_LETTER}])"
    return f"(?<!\\w)(?:{pattern})(?!\\w)"


def _structure(pattern: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth after it) for every "(", ")" and "|" of a pattern that is not
    escaped or inside a character class."""
    depth, in_class, i = 0, False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # "[]…]": the first "]" is a literal
                i += 1
        elif ch in "()|":
            depth += (ch == "(") - (ch == ")")
            yield i, ch, depth
        i += 1


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern ("a|b(c|d)" -> ["a", "b(c|d)"]), so each gets
    a dispatch key of its own instead of sharing the weakest one."""
    cuts = [i for i, ch, depth in _structure(pattern) if ch == "|" and depth == 0]
    if not cuts and _is_one_group(pattern):
        # "(?:a|b)" is the same as "a|b": split inside the group.
        return _alternatives(pattern[3:-1])
    bounds = zip([-1, *cuts], [*cuts, len(pattern)], strict=True)
    return [part for a, b in bounds if (part := pattern[a + 1 : b])]


def _is_one_group(pattern: str) -> bool:
    if not (pattern.startswith("(?:") and pattern.endswith(")")):
        return False
    closes = [i for i, ch, depth in _structure(pattern) if ch == ")" and depth == 0]
    return closes == [len(pattern) - 1]


def _fold(text: str) -> str:
    """Lowercase without changing the length (a few characters lowercase to two)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


# --- dispatch keys ------------------------------------------------------------------------------

_KEY = 4  # a pattern is indexed by the first (up to) four characters every match starts with
_MAX_KEYS = 256
#: A first character from a wider class (e.g. [A-Z]) makes a pattern a candidate at nearly
#: every token; one pass over the text is cheaper then.
_MAX_CLASS = 10


def _class_chars(av: Any) -> set[str] | None:
    """The characters a small character class can match; None for a big or negated class."""
    chars: set[str] = set()
    for op, value in av:
        if op is sre.LITERAL:
            chars.add(chr(value).lower())
        elif op is sre.RANGE and value[1] - value[0] < 64:
            chars.update(chr(c).lower() for c in range(value[0], value[1] + 1))
        elif op is sre.CATEGORY and value is sre.CATEGORY_DIGIT:
            chars.update("0123456789")
        else:
            return None
    return chars


def _starts(items: list[Any], prefix: str, depth: int = 0) -> set[str] | None:
    """The strings (up to _KEY characters) that matches of `items` can start with, after
    `prefix`. A shorter key is always correct (every match starts with it), so whatever cannot
    be expanded ends the key there. None only when nothing is known about the first character
    (a wide class, `^`, a backreference…)."""
    found = _expand(items, prefix, depth)
    if found is None and prefix:
        return {prefix}
    return found


def _expand(items: list[Any], prefix: str, depth: int) -> set[str] | None:
    if len(prefix) >= _KEY or not items:
        return {prefix} if prefix else None
    if depth > 12:
        return None
    (op, av), rest = items[0], list(items[1:])
    if op is sre.LITERAL:
        return _starts(rest, prefix + chr(av).lower(), depth + 1)
    if op is sre.IN:
        chars = _class_chars(av)
        if chars is None or len(chars) > _MAX_CLASS:
            return None
        expanded = _union(_starts(rest, prefix + c, depth + 1) for c in chars)
        # Too many longer keys: the class's own characters still make valid (shorter) keys.
        return expanded if expanded is not None else {prefix + c for c in chars}
    if op is sre.SUBPATTERN:
        return _starts(list(av[-1]) + rest, prefix, depth + 1)
    if op is sre.BRANCH:
        return _union(_starts(list(branch) + rest, prefix, depth + 1) for branch in av[1])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, body = av
        more = [
            (sre.MAX_REPEAT, (max(0, low - 1), high - 1 if high != sre.MAXREPEAT else high, body))
        ]
        take = _starts(list(body) + (more if high > 1 else []) + rest, prefix, depth + 1)
        return take if low > 0 else _union([take, _starts(rest, prefix, depth + 1)])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return _starts(rest, prefix, depth + 1)  # zero-width: a superset of starts is safe
    return None


def _union(parts: Iterable[set[str] | None]) -> set[str] | None:
    merged: set[str] = set()
    for part in parts:
        if part is None:
            return None
        merged |= part
        if len(merged) > _MAX_KEYS:
            return None
    return merged


def _openings(items: list[Any]) -> tuple[bool, frozenset[str]] | None:
    """For a pattern without dispatch keys: whether its matches can start at the start of the
    text (`^`), and the punctuation or whitespace characters ("\\n") they can otherwise start
    with; None when they can start with anything else."""
    if not items:
        return None
    (op, av), rest = items[0], list(items[1:])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return _openings(rest)  # zero-width: a superset of starts is safe
    if op is sre.AT and av in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING):
        return True, frozenset()
    if op is sre.LITERAL and not chr(av).isalnum():
        return False, frozenset(chr(av))
    if op is sre.SUBPATTERN:
        return _openings(list(av[-1]) + rest)
    if op is sre.BRANCH:
        begin, chars = False, frozenset[str]()
        for branch in av[1]:
            found = _openings(list(branch) + rest)
            if found is None:
                return None
            begin, chars = begin or found[0], chars | found[1]
        return begin, chars
    return None


def dispatch_keys(pattern: str) -> frozenset[str] | None:
    """Lowercase prefixes (at most _KEY characters) one of which every match of `pattern`
    starts with; None when the pattern must be tried everywhere."""
    keys = _starts(list(sre_parse.parse(pattern, _FLAGS)), "")
    return frozenset(keys) if keys else None


# --- lexicon -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")
_HE_PREFIX_LETTERS = frozenset("ובלמכשה")


@dataclass(frozen=True)
class _Signal:
    category: str
    regex: re.Pattern[str]


def _spans(regex: re.Pattern[str], text: str) -> Iterator[tuple[int, int]]:
    return (m.span() for m in regex.finditer(text) if m.end() > m.start())


@dataclass(frozen=True)
class _Anchored:
    """A pattern without dispatch keys whose matches can only start at the start of the text
    or at one of a few characters; finditer would try every position instead."""

    regex: re.Pattern[str]
    begin: bool
    chars: frozenset[str]

    def finditer(self, text: str) -> Iterator[tuple[int, int]]:
        """The spans finditer gives, from the positions a match can start at; exact because
        the pattern cannot match empty (checked when built), so finditer resumes at the end
        of each match."""
        starts = {0} if self.begin else set()
        for char in self.chars:
            at = text.find(char)
            while at >= 0:
                starts.add(at)
                at = text.find(char, at + 1)
        resume = 0
        match = self.regex.match
        for start in sorted(starts):
            if start >= resume and (m := match(text, start)):
                resume = m.end()
                yield start, resume


class Lexicon:
    def __init__(self, language: Language, signals: dict[str, list[str]], phrases: dict[str, Any]):
        self.language = language
        self.phrases = phrases
        self.categories = list(signals)
        self._signals: list[_Signal] = []
        self._always: list[int] = []
        #: Patterns without dispatch keys, run over the whole text: (category, spans).
        self._whole: list[tuple[str, Callable[[str], Iterable[tuple[int, int]]]]] = []
        self._by_key: dict[str, list[int]] = {}
        self._memo: dict[str, tuple[tuple[Any, str], ...]] = {}
        for category, patterns in signals.items():
            for pattern in (alt for p in patterns for alt in _alternatives(str(p))):
                wrapped = _wrap(pattern, language)
                try:
                    regex = re.compile(wrapped, _FLAGS)
                except re.error as exc:  # pragma: no cover - a broken data file is a packaging bug
                    raise RuntimeError(f"lexicon {language.value}/{category}: {exc}") from exc
                index = len(self._signals)
                self._signals.append(_Signal(category, regex))
                inner = pattern.replace("~", f"[{HEBREW_LETTER}]{{0,{_HE_SUFFIX_MAX}}}")
                keys = dispatch_keys(inner)
                if keys is None:
                    self._always.append(index)
                    parsed = sre_parse.parse(wrapped, _FLAGS)
                    openings = _openings(list(parsed))
                    if openings is not None and parsed.getwidth()[0] > 0:
                        spans = _Anchored(regex, *openings).finditer
                    else:
                        spans = partial(_spans, regex)
                    self._whole.append((category, spans))
                    continue
                for key in keys:
                    self._by_key.setdefault(key, []).append(index)
        # For searches in other texts (thread, notes), one regex per category is simpler.
        self.signals = {
            category: re.compile("|".join(_wrap(str(p), language) for p in patterns), _FLAGS)
            for category, patterns in signals.items()
        }

    def phrase(self, *path: str) -> Any:
        node: Any = self.phrases
        for key in path:
            node = node[key]
        return node

    def _indexes(self, head: str) -> set[int]:
        """Patterns whose key is a prefix of `head` (the next _KEY characters of the text)."""
        by_key = self._by_key
        merged: set[int] = set()
        for size in range(1, len(head) + 1):
            merged.update(by_key.get(head[:size], ()))
        return merged

    def _candidates(self, folded: str, start: int) -> tuple[tuple[Any, str], ...]:
        """(bound `match`, category) of the patterns to try at `start`, in pattern order;
        memoised by the text there, the next _KEY characters (and, in Hebrew, the few after
        them that attached prefixes shift the stem by)."""
        if self.language is Language.he:
            head = folded[start : start + _KEY + 3]
        else:
            head = folded[start : start + _KEY]
        found = self._memo.get(head)
        if found is not None:
            return found
        indexes = self._indexes(head[:_KEY])
        if self.language is Language.he:
            # Attached prefixes: the stem may start up to three letters later.
            for k in range(1, 4):
                if k >= len(head) or head[k - 1] not in _HE_PREFIX_LETTERS:
                    break
                indexes |= self._indexes(head[k : k + _KEY])
        signals = self._signals
        found = self._memo[head] = tuple(
            (signals[i].regex.match, signals[i].category) for i in sorted(indexes)
        )
        return found

    def scan(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Every match of every signal pattern in `text`, per category: leftmost-longest,
        non-overlapping within a category.

        Rather than trying ~800 patterns at every position (about 10 ms per 1,000 characters),
        each pattern is indexed by the characters its matches start with, and tried only at
        the tokens that start that way. Patterns without such a key run over the whole text.
        """
        folded = _fold(text)
        found: dict[str, list[tuple[int, int]]] = {}
        candidates = self._candidates
        for token in _TOKEN.finditer(folded):
            start = token.start()
            for match, category in candidates(folded, start):
                m = match(text, start)
                if m is not None and (end := m.end()) > start:
                    hits = found.get(category)
                    if hits is None:
                        found[category] = [(start, end)]
                    else:
                        hits.append((start, end))
        for category, spans in self._whole:
            for span in spans(text):
                found.setdefault(category, []).append(span)
        for category, hits in found.items():
            hits.sort(key=lambda s: (s[0], -s[1]))
            kept: list[tuple[int, int]] = []
            for begin, end in hits:
                if not kept or begin >= kept[-1][1]:
                    kept.append((begin, end))
            found[category] = kept
        return found


def _load(language: Language) -> Lexicon:
    raw = yaml.safe_load(
        resources.files("coach.engines.rules")
        .joinpath(f"data/{language.value}.yaml")
        .read_text("utf-8")
    )
    extras = {k: v for k, v in raw.items() if k not in ("signals", "phrases")}
    return Lexicon(language, raw["signals"], {**raw["phrases"], **extras})


@cache
def lexicon(language: Language) -> Lexicon:
    return _load(language)
