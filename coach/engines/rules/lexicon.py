"""Lexicons: per-language signal patterns and user-facing phrases, loaded from data files.

`data/<lang>.yaml` holds `signals` (category -> regex patterns) and `phrases` (everything the
engine writes for the user). English patterns are wrapped in word boundaries. Hebrew patterns
also accept the attached one-letter prefixes (ו ה ש ב ל מ כ, up to three: "וכשה…") before the
first word, and "~" in a Hebrew pattern stands for any run of suffix letters.

Speed: see `Lexicon.scan`. Matches are exactly those of the full regexes.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import cache, partial
from hashlib import blake2b
from importlib import resources
from re import _constants as sre  # type: ignore[attr-defined, unused-ignore]
from re import _parser as sre_parse  # type: ignore[attr-defined, unused-ignore]
from typing import Any

import yaml

from coach.models import Language
from coach.text.language import HEBREW_LETTER

__all__ = ["Lexicon", "dispatch_keys", "forget_chunks", "lexicon", "set_chunk_memo_size"]

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


# --- locality: which patterns can be memoised per chunk -------------------------------------------

#: Where `Lexicon.scan` cuts a text into chunks: whitespace after terminal punctuation, and every
#: line break. The cut characters (the gap) are whitespace; the punctuation stays in the chunk
#: (it is matched here, not looked behind for, so that the regex engine can skip to it).
_CUT = re.compile(r"[.!?…]\s+|\n\s*")
_TERMINAL = ".!?…"
_SPACES = tuple(chr(c) for c in range(0x3001) if chr(c).isspace())


def _can_match(op: Any, av: Any, char: str) -> bool | None:
    """Whether one single-character item can match `char` (case-insensitively); None when
    unknown."""
    if op is sre.LITERAL:
        return chr(av).lower() == char.lower()
    if op is sre.NOT_LITERAL:
        return chr(av).lower() != char.lower()
    if op is sre.ANY:
        return char != "\n"
    if op is not sre.IN:
        return None
    negate, hit = False, False
    for member, value in av:
        if member is sre.NEGATE:
            negate = True
        elif member is sre.LITERAL:
            hit = hit or chr(value).lower() == char.lower()
        elif member is sre.RANGE:
            cases = {char, char.lower(), char.upper()}
            hit = hit or any(value[0] <= ord(c) <= value[1] for c in cases)
        elif member is sre.CATEGORY and value in _CATEGORIES:
            hit = hit or _CATEGORIES[value].match(char) is not None
        else:
            return None
    return hit != negate


_CATEGORIES = {
    sre.CATEGORY_DIGIT: re.compile(r"\d"),
    sre.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    sre.CATEGORY_SPACE: re.compile(r"\s"),
    sre.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    sre.CATEGORY_WORD: re.compile(r"\w"),
    sre.CATEGORY_NOT_WORD: re.compile(r"\W"),
}


def _local(items: list[Any]) -> tuple[bool, bool, bool] | None:
    """(can consume terminal punctuation, can consume whitespace, can consume whitespace after
    terminal punctuation) for a sequence of items; None when a match could depend on text
    beyond a cut: it can consume a line break, or has an anchor or a wider lookaround."""
    punct = space = crossing = False
    for op, av in items:
        sub: tuple[bool, bool, bool] | None
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            chars = [_can_match(op, av, c) for c in ("\n", *_TERMINAL, *_SPACES)]
            if None in chars or chars[0]:
                return None
            sub = (any(chars[1 : 1 + len(_TERMINAL)]), any(chars[1 + len(_TERMINAL) :]), False)
        elif op is sre.SUBPATTERN:
            sub = _local(list(av[-1]))
        elif op is sre.BRANCH:
            subs = [_local(list(branch)) for branch in av[1]]
            known = [s for s in subs if s is not None]
            if len(known) < len(subs):
                return None
            sub = (any(s[0] for s in known), any(s[1] for s in known), any(s[2] for s in known))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            sub = _local(list(av[2]))
            if sub is not None and av[1] > 1:
                sub = (sub[0], sub[1], sub[2] or (sub[0] and sub[1]))
        elif op is sre.AT and av in (sre.AT_BOUNDARY, sre.AT_NON_BOUNDARY):
            continue  # whitespace, like the end of the text, is not a word character
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            # One character that cannot be whitespace: beyond a cut it sees whitespace, and
            # in the chunk alone it sees nothing; either way it does not match.
            body = list(av[1])
            if len(body) != 1:
                return None
            (kind, value), *_ = body
            if any(_can_match(kind, value, c) is not False for c in _SPACES):
                return None
            continue
        else:
            return None
        if sub is None:
            return None
        crossing = crossing or sub[2] or (punct and sub[1])
        punct, space = punct or sub[0], space or sub[1]
    return punct, space, crossing


def chunk_local(pattern: str) -> bool:
    """Whether every match of `pattern` lies inside one chunk (see _CUT) and is the same in the
    chunk alone as in the whole text, so a chunk's matches can be memoised by its text.

    A match crossing a cut would consume the gap's first character: a line break, or
    whitespace right after terminal punctuation the match also consumes. Its lookarounds see
    one character: whitespace across a cut, nothing at a chunk's edge; both fail a class
    without whitespace the same way. `^`, `$` and wider lookarounds are not local."""
    found = _local(list(sre_parse.parse(pattern, _FLAGS)))
    return found is not None and not found[2]


# --- lexicon -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")
#: (bound `match`, category, chunk-local) per pattern to try at a token.
_Candidates = tuple[tuple[Callable[[str, int], "re.Match[str] | None"], str, bool], ...]
_MEMO_SIZE = 50_000
#: Spans per category, as they are found.
_Found = dict[str, list[tuple[int, int]]]
#: A memoised chunk: (category, start, end) of its local matches, and the tokens where the
#: non-local patterns are to be tried; offsets relative to the chunk.
_Chunk = tuple[tuple[tuple[str, int, int], ...], tuple[int, ...]]
#: Chunks (sentences) whose local matches are memoised, per language, least recently used out.
_CHUNK_MEMO_SIZE = 4096
_chunk_memo_size = _CHUNK_MEMO_SIZE
#: Per-process key of the chunk memo's hashes, so they cannot be checked against guessed text.
_MEMO_KEY = os.urandom(32)
_HE_PREFIX_LETTERS = frozenset("ובלמכשה")


@dataclass(frozen=True)
class _Signal:
    category: str
    regex: re.Pattern[str]
    local: bool  # see chunk_local


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
        deferred: set[str] = set()
        self._by_key: dict[str, list[int]] = {}
        self._memo: dict[str, tuple[_Candidates, _Candidates]] = {}
        #: Characters from a token that decide its candidates (Hebrew: attached prefixes too).
        self._reach = _KEY + 3 if language is Language.he else _KEY
        #: chunk hash -> (local matches, tokens to try non-local patterns at), relative offsets
        self._chunks: OrderedDict[bytes, _Chunk] = OrderedDict()
        for category, patterns in signals.items():
            for pattern in (alt for p in patterns for alt in _alternatives(str(p))):
                wrapped = _wrap(pattern, language)
                try:
                    regex = re.compile(wrapped, _FLAGS)
                except re.error as exc:  # pragma: no cover - a broken data file is a packaging bug
                    raise RuntimeError(f"lexicon {language.value}/{category}: {exc}") from exc
                index = len(self._signals)
                self._signals.append(_Signal(category, regex, chunk_local(wrapped)))
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
                    if isinstance(spans, partial):
                        deferred.add(category)
                    continue
                for key in keys:
                    self._by_key.setdefault(key, []).append(index)
        #: Categories with patterns that try every position of the text (see scan_lazily).
        self.deferred = frozenset(deferred)
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

    def _candidates(self, folded: str, start: int) -> tuple[_Candidates, _Candidates]:
        """(bound `match`, category, chunk-local) of the patterns to try at `start`, in
        pattern order: all of them, and those that are not chunk-local. Memoised by the text
        there: the next _KEY characters (in Hebrew, and the few after them that attached
        prefixes shift the stem by)."""
        head = folded[start : start + self._reach]
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
        signals = [self._signals[i] for i in sorted(indexes)]
        every = tuple((s.regex.match, s.category, s.local) for s in signals)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()  # bounded: heads of Hebrew words with prefixes vary a lot
        found = self._memo[head] = (every, tuple(c for c in every if not c[2]))
        return found

    def scan(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Every match of every signal pattern in `text`, per category: leftmost-longest,
        non-overlapping within a category. See `scan_lazily`."""
        found, pending = self.scan_lazily(text)
        for category, finish in pending.items():
            if hits := finish():
                found[category] = hits
        return found

    def scan_lazily(
        self, text: str
    ) -> tuple[dict[str, list[tuple[int, int]]], dict[str, Callable[[], list[tuple[int, int]]]]]:
        """`scan`, except for the categories in `deferred`, which come as functions that give
        their matches when called: their keyless patterns try every position of the text, the
        dearest part of a scan, and most reviews never read them (notes_learned, outside
        meeting notes).

        Rather than trying ~800 patterns at every position (about 10 ms per 1,000 characters),
        each pattern is indexed by the characters its matches start with, and tried only at
        the tokens that start that way. Patterns without such a key run over the whole text.

        The text is cut into chunks (sentences, lines; see _CUT), and the matches of the
        chunk-local patterns in a chunk are memoised by the chunk's text: a rewrite re-checks
        mostly the draft's own sentences. The memo is bounded and keeps no text: its keys are
        keyed hashes, its values offsets and category names.
        """
        folded = _fold(text)
        found: dict[str, list[tuple[int, int]]] = {}
        chunks: list[tuple[int, int]] = []
        start = 0
        for gap in _CUT.finditer(text):
            cut = gap.start() if text[gap.start()] == "\n" else gap.start() + 1
            if cut > start:
                chunks.append((start, cut))
            start = gap.end()
        if len(text) > start:
            chunks.append((start, len(text)))
        memo = self._chunks
        keys = [_digest(text[a:b]) for a, b in chunks]
        first = 0
        for index, key in enumerate(keys):
            known = memo.get(key)
            if known is None:
                continue
            if first < index:
                self._match(text, folded, chunks[first:index], keys[first:index], found)
            first = index + 1
            with suppress(KeyError):  # another thread may just have evicted it
                memo.move_to_end(key)
            self._replay(text, folded, chunks[index][0], known, found)
        if first < len(chunks):
            self._match(text, folded, chunks[first:], keys[first:], found)
        pending: dict[str, Callable[[], list[tuple[int, int]]]] = {
            category: partial(self._finish, text, category, found.pop(category, []))
            for category in self.deferred
        }
        for category, spans in self._whole:
            if category not in pending:
                for span in spans(text):
                    found.setdefault(category, []).append(span)
        return {category: _select(hits) for category, hits in found.items()}, pending

    def _finish(
        self, text: str, category: str, hits: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """A deferred category: its keyed matches (found), then the whole-text ones."""
        for whole, spans in self._whole:
            if whole == category:
                hits.extend(spans(text))
        return _select(hits)

    def _replay(self, text: str, folded: str, start: int, known: _Chunk, found: _Found) -> None:
        """A memoised chunk at `start`: its local matches, and the non-local patterns tried
        at the tokens the memo lists."""
        local, revisit = known
        for category, begin, stop in local:
            found.setdefault(category, []).append((start + begin, start + stop))
        memo, reach = self._memo, self._reach
        for offset in revisit:
            at = start + offset
            # The memo lookup of _candidates, inline: this loop is the hot path.
            pair = memo.get(folded[at : at + reach]) or self._candidates(folded, at)
            for match, category, _local in pair[1]:
                m = match(text, at)
                if m is not None and (stop := m.end()) > at:
                    found.setdefault(category, []).append((at, stop))

    def _match(
        self,
        text: str,
        folded: str,
        chunks: list[tuple[int, int]],
        keys: list[bytes],
        found: _Found,
    ) -> None:
        """Matches of the keyed patterns at the tokens of consecutive chunks, into `found`
        (unsorted, overlapping), in one pass; each chunk goes into the memo.

        Local patterns are matched in the whole text, which gives the same as in the chunk
        alone. The memo keeps their matches and the tokens where a non-local pattern is to be
        tried: those with such candidates, and those whose candidates depend on the text after
        the chunk (the key reaches past it)."""
        memo, reach = self._memo, self._reach
        entries: list[tuple[list[tuple[str, int, int]], list[int]]] = [([], []) for _ in chunks]
        index = 0
        start, end = chunks[0]
        fresh, later = entries[0]
        for token in _TOKEN.finditer(folded, start, chunks[-1][1]):
            at = token.start()
            if at >= end:  # the next chunk with a token (gaps have none)
                while at >= chunks[index][1]:
                    index += 1
                start, end = chunks[index]
                fresh, later = entries[index]
            # The memo lookup of _candidates, inline: this loop is the hot path.
            every, nonlocal_ = memo.get(folded[at : at + reach]) or self._candidates(folded, at)
            if nonlocal_ or at + reach > end:
                later.append(at - start)
            for match, category, is_local in every:
                m = match(text, at)
                if m is not None and (stop := m.end()) > at:
                    if is_local:
                        fresh.append((category, at - start, stop - start))
                    hits = found.get(category)
                    if hits is None:
                        found[category] = [(at, stop)]
                    else:
                        hits.append((at, stop))
        chunk_memo = self._chunks
        for key, (fresh, later) in zip(keys, entries, strict=True):
            chunk_memo[key] = (tuple(fresh), tuple(later))
        while len(chunk_memo) > _chunk_memo_size:
            with suppress(KeyError):
                chunk_memo.popitem(last=False)


def _digest(chunk: str) -> bytes:
    # surrogatepass: a lone surrogate (valid in a JSON string) must not make encoding fail.
    return blake2b(chunk.encode("utf-8", "surrogatepass"), digest_size=16, key=_MEMO_KEY).digest()


def _select(hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Leftmost-longest, non-overlapping."""
    hits.sort(key=lambda s: (s[0], -s[1]))
    kept: list[tuple[int, int]] = []
    for begin, end in hits:
        if not kept or begin >= kept[-1][1]:
            kept.append((begin, end))
    return kept


def _load(language: Language) -> Lexicon:
    raw = yaml.safe_load(
        resources.files("coach.engines.rules")
        .joinpath(f"data/{language.value}.yaml")
        .read_text("utf-8")
    )
    extras = {k: v for k, v in raw.items() if k not in ("signals", "phrases")}
    return Lexicon(language, raw["signals"], {**raw["phrases"], **extras})


#: The lexicons loaded so far: bounding or emptying their memos does not load the others.
_LOADED: list[Lexicon] = []


@cache
def lexicon(language: Language) -> Lexicon:
    loaded = _load(language)
    _LOADED.append(loaded)
    return loaded


def set_chunk_memo_size(size: int = _CHUNK_MEMO_SIZE) -> None:
    """Bound the sentence memo of every lexicon (0: off, every draft scanned as unseen, as the
    benchmarks measure drafts they have not seen; no argument: the default). Results are the
    same either way, only the time differs."""
    global _chunk_memo_size
    _chunk_memo_size = max(0, size)
    for loaded in _LOADED:  # one loaded later starts empty, under the new bound
        memo = loaded._chunks
        while len(memo) > _chunk_memo_size:
            memo.popitem(last=False)


def forget_chunks() -> None:
    """Empty the sentence memo of every lexicon, keeping its bound. The benchmarks call it
    before each draft to measure a draft the process has not seen: unlike a memo turned off,
    the review's own rewrite still finds the draft's sentences, as on a real server."""
    for loaded in _LOADED:
        loaded._chunks.clear()
