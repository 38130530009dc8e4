"""HTML drafts: review the visible text, write the rewrite back into the original markup.

`html_to_text` renders the text a reader sees (roughly what a browser's `innerText` gives):
hidden parts dropped, block elements as line breaks, entities decoded, whitespace collapsed.

`rewrite_markup` keeps every tag of the original (names, attributes, links, merge fields in
attributes) in order and changes only text. It works on a map from each character of the
extracted text back to the raw piece of markup it came from ("atoms": one literal character or
one entity), diffs the extracted text against the rewrite token by token, and edits the atoms:
untouched text keeps its original bytes, entities included. Guarantee (tested):
`html_to_text(rewrite_markup(m, r))` equals `r` once whitespace is normalised, except where the
rewrite glues together two words that a tag of the original keeps apart.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from html.entities import html5
from html.parser import HTMLParser

__all__ = ["html_to_text", "rewrite_markup"]

#: Blocks separated by a blank line in the text.
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "dl", "pre", "hr"}
    | {"address", "figure"}
)
#: Blocks separated by a single line break.
_LINE = frozenset(
    {"div", "li", "tr", "td", "th", "table", "tbody", "thead", "tfoot", "caption", "dt", "dd"}
    | {"section", "article", "header", "footer", "nav", "aside", "main", "center", "form"}
    | {"fieldset", "body", "html"}
)
_BLOCK = _PARAGRAPH | _LINE
#: Elements whose content a reader never sees.
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr"}
)
#: Leaf blocks an inserted paragraph may be placed after (as a sibling of the same kind).
_PARAGRAPH_HOSTS = frozenset({"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})
#: Attributes copied to an inserted paragraph so it looks like its neighbour.
_COPIED_ATTRS = ("class", "style", "dir", "align")
_WS = " \t\n\r\f\xa0"
#: One atom of text: a character reference, or one character. Names without ";" are the legacy
#: ones browsers accept that way ("&copy2020" is "©" then "2020"), longest first.
_LEGACY_NAMES = sorted((name for name in html5 if not name.endswith(";")), key=len, reverse=True)
_ATOM = re.compile(
    r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;|(?:"
    + "|".join(_LEGACY_NAMES)
    + "))|.",
    re.DOTALL,
)
#: Diff tokens: merge fields and links whole (so they are kept or replaced as a unit), then
#: words and single punctuation characters. Whitespace between tokens is the separator.
_TOKEN = re.compile(
    r"\{\{.*?\}\}|\{![^}\s]*\}|\*\|[^|\s]*\|\*|%[A-Za-z][A-Za-z0-9_]*%|\[\[[^\]\n]*\]\]"
    r"|\[[^\[\]\n]*\]|\{[^{}\s]*\}|https?://\S+|\w+|[^\w\s]"
)


@dataclass
class _Node:
    kind: str  # "start" | "end" | "text" | "other" (comments, declarations, hidden text)
    raw: str
    name: str = ""
    attrs: list[tuple[str, str | None]] = field(default_factory=list)
    atoms: list[tuple[str, str]] = field(default_factory=list)  # (raw, decoded) of text
    leaf: int | None = None  # index of the innermost open block's start tag
    closed_by: int | None = None  # for a start tag: index of its end tag


class _Tokenizer(HTMLParser):
    """Records each parser event with its offset; the raw slices come from the offsets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[tuple[int, int], str, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append((self.getpos(), "start", tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append((self.getpos(), "void", tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.events.append((self.getpos(), "end", tag, []))

    def handle_data(self, data: str) -> None:
        self.events.append((self.getpos(), "text", "", []))

    def handle_comment(self, data: str) -> None:
        self.events.append((self.getpos(), "other", "", []))

    def handle_decl(self, decl: str) -> None:
        self.events.append((self.getpos(), "other", "", []))

    def handle_pi(self, data: str) -> None:
        self.events.append((self.getpos(), "other", "", []))

    def unknown_decl(self, data: str) -> None:
        self.events.append((self.getpos(), "other", "", []))


def _atoms(raw: str) -> list[tuple[str, str]]:
    atoms = []
    for match in _ATOM.finditer(raw):
        piece = match.group()
        decoded = html.unescape(piece)
        if decoded == piece and len(piece) > 1:  # not an entity after all ("&unknown;")
            atoms += [(ch, ch) for ch in piece]
        else:
            atoms.append((piece, decoded))
    return atoms


def _parse(markup: str) -> list[_Node]:
    parser = _Tokenizer()
    parser.feed(markup)
    parser.close()
    # getpos() is (line, column) with lines counted on "\n" only, as the parser does.
    line_starts = [0] + [m.end() for m in re.finditer("\n", markup)]
    offsets = [line_starts[line - 1] + col for (line, col), *_ in parser.events]
    nodes: list[_Node] = []
    if offsets and offsets[0] > 0:
        nodes.append(_Node("other", markup[: offsets[0]]))
    bounds = [*offsets, len(markup)]
    stack: list[int] = []  # open elements (indexes of start tags)
    hidden = 0
    for k, (_, kind, name, attrs) in enumerate(parser.events):
        raw = markup[bounds[k] : bounds[k + 1]]
        if not raw:
            continue
        index = len(nodes)
        leaf = next((i for i in reversed(stack) if nodes[i].name in _BLOCK), None)
        if kind == "text":
            node = _Node("other" if hidden else "text", raw, leaf=leaf)
            if not hidden:
                node.atoms = _atoms(raw)
            nodes.append(node)
        elif kind == "other":
            nodes.append(_Node("other", raw))
        elif kind == "end":
            nodes.append(_Node("end", raw, name, leaf=leaf))
            if any(nodes[i].name == name for i in stack):
                while stack:
                    opened = stack.pop()
                    if nodes[opened].name in _HIDDEN:
                        hidden = max(0, hidden - 1)
                    if nodes[opened].name == name:
                        nodes[opened].closed_by = index
                        break
        else:
            nodes.append(_Node("start", raw, name, attrs, leaf=leaf))
            if name == "body":
                hidden = 0  # an unclosed <head> must not hide the body
            if kind == "start" and name not in _VOID:
                stack.append(index)
                if name in _HIDDEN:
                    hidden += 1
    return nodes


@dataclass
class _Text:
    """The extracted text and where each of its characters came from."""

    text: str
    #: Per character: the atoms it stands for ((node, atom) pairs); empty for a line break
    #: made by a tag.
    sources: list[list[tuple[int, int]]]
    #: Per character: the node it comes from (the tag, for a line break made by a tag).
    nodes: list[int]


def _extract(nodes: list[_Node]) -> _Text:
    chars: list[str] = []
    sources: list[list[tuple[int, int]]] = []
    where: list[int] = []
    space: list[tuple[int, int]] = []  # atoms of a pending run of whitespace
    space_node = -1
    breaks = 0  # pending line breaks from blocks
    brs = 0  # pending <br>s
    break_node = -1
    pre = 0

    def emit(ch: str, src: list[tuple[int, int]], node: int) -> None:
        chars.append(ch)
        sources.append(src)
        where.append(node)

    for n, node in enumerate(nodes):
        if node.kind in ("start", "end"):
            if node.name == "pre":
                pre = pre + 1 if node.kind == "start" else max(0, pre - 1)
            if node.name == "br" and node.kind == "start":
                brs += 1
                break_node = n
            elif node.name in _BLOCK:
                wanted = 2 if node.name in _PARAGRAPH else 1
                if wanted > breaks:
                    breaks = wanted
                    break_node = n
            continue
        if node.kind != "text":
            continue
        for a, (_, decoded) in enumerate(node.atoms):
            for ch in decoded:
                if ch in _WS and not (pre and ch != "\xa0"):
                    if not space:
                        space_node = n
                    space.append((n, a))
                    continue
                if chars:
                    count = min(2, max(breaks, brs))
                    if count:
                        for _ in range(count):
                            emit("\n", [], break_node)
                    elif space and chars[-1] != "\n":
                        emit(" ", space, space_node)
                breaks = brs = 0
                space = []
                emit(ch, [(n, a)], n)
    return _Text("".join(chars), sources, where)


def html_to_text(markup: str) -> str:
    """The visible text of `markup`: what a reader of the e-mail sees, as plain text."""
    return _extract(_parse(markup)).text


def _tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


def _breaks(count: int) -> str:
    return "<br>" * min(2, count)


def _inline(text: str) -> str:
    """Inserted text as markup: escaped, its line breaks as <br>."""
    parts = re.split(r"([ \t]*\n\s*)", text)
    out = []
    for i, part in enumerate(parts):
        out.append(_breaks(part.count("\n")) if i % 2 else html.escape(part, quote=False))
    return "".join(out)


class _Editor:
    def __init__(self, nodes: list[_Node], extracted: _Text) -> None:
        self.nodes = nodes
        self.x = extracted
        self.deleted: set[tuple[int, int]] = set()
        # (node, slot) -> markup to insert there. For a text node, slot k is before atom k;
        # for other nodes, slot 0 is before the node and slot 1 after it.
        self.inserts: dict[tuple[int, int], list[str]] = {}

    def delete(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.deleted.update(self.x.sources[i])

    def insert(self, pos: tuple[int, int], markup: str) -> None:
        if markup:
            self.inserts.setdefault(pos, []).append(markup)

    def synthetic(self, start: int, end: int) -> bool:
        return any(not self.x.sources[i] for i in range(start, end))

    def after(self, char: int) -> tuple[int, int]:
        """The position right after the atom of character `char`, moved past closing inline
        tags (so new text does not join a link or a bold run it only follows)."""
        node, atom = self.x.sources[char][-1]
        if atom + 1 < len(self.nodes[node].atoms):
            return node, atom + 1
        pos = (node, len(self.nodes[node].atoms))
        n = node + 1
        while n < len(self.nodes) and self.nodes[n].kind == "end":
            if self.nodes[n].name in _BLOCK:
                break
            pos, n = (n, 1), n + 1
        return pos

    def before(self, char: int, *, skip: bool = True) -> tuple[int, int]:
        """The position right before the atom of character `char`; with `skip`, moved before
        opening inline tags (new text at the start does not join the first link)."""
        node, atom = self.x.sources[char][0]
        if atom > 0 or not skip:
            return node, atom
        pos = (node, 0)
        n = node - 1
        while n >= 0 and self.nodes[n].kind == "start" and self.nodes[n].name not in _BLOCK:
            if self.nodes[n].name in _VOID:
                break
            pos, n = (n, 0), n - 1
        return pos

    def paragraph_after(self, char: int, following: int, text: str) -> bool:
        """Insert `text` as new paragraph(s) after the block holding character `char`, if
        that block ends before character `following` (the next kept text) starts."""
        leaf = self.nodes[self.x.nodes[char]].leaf
        if leaf is None:
            return False
        host = self.nodes[leaf]
        if host.name not in _PARAGRAPH_HOSTS or host.closed_by is None:
            return False
        if following < len(self.x.nodes) and host.closed_by > self.x.nodes[following]:
            return False
        name = "li" if host.name == "li" else "div" if host.name == "div" else "p"
        attrs = "".join(
            f' {key}="{html.escape(value)}"'
            for key, value in host.attrs
            if key in _COPIED_ATTRS and value is not None
        )
        for para in re.split(r"\s*\n\s*\n\s*", text.strip()):
            if para:
                self.insert((host.closed_by, 1), f"<{name}{attrs}>{_inline(para)}</{name}>")
        return True

    def append(self, text: str) -> None:
        """Text for a document without any visible text: a paragraph at the end of the body."""
        body_end = next(
            (i for i in range(len(self.nodes) - 1, -1, -1) if self.nodes[i].raw[:6] == "</body"),
            None,
        )
        markup = f"<p>{_inline(text.strip())}</p>"
        if body_end is not None:
            self.insert((body_end, 0), markup)
        elif self.nodes:
            self.insert((len(self.nodes) - 1, 1), markup)
        else:
            self.nodes.append(_Node("other", markup))

    def render(self) -> str:
        out: list[str] = []
        for n, node in enumerate(self.nodes):
            if node.kind == "text":
                for a, (raw, _) in enumerate(node.atoms):
                    out.extend(self.inserts.get((n, a), ()))
                    if (n, a) not in self.deleted:
                        out.append(raw)
                out.extend(self.inserts.get((n, len(node.atoms)), ()))
            else:
                out.extend(self.inserts.get((n, 0), ()))
                out.append(node.raw)
                out.extend(self.inserts.get((n, 1), ()))
        return "".join(out)


def rewrite_markup(markup: str, rewritten_text: str) -> str:
    """`markup` with its visible text changed into `rewritten_text` (a rewrite of
    `html_to_text(markup)`), keeping every tag and attribute of the original in order."""
    nodes = _parse(markup)
    extracted = _extract(nodes)
    edit = _Editor(nodes, extracted)
    old, new = extracted.text, rewritten_text
    old_tokens, new_tokens = _tokens(old), _tokens(new)
    if not old_tokens:
        if new.strip():
            edit.append(new)
        return edit.render()
    old_words = [old[s:e] for s, e in old_tokens]
    new_words = [new[s:e] for s, e in new_tokens]
    ops = SequenceMatcher(None, old_words, new_words, autojunk=False).get_opcodes()
    for step in _slide(ops, (old, old_tokens, old_words), (new, new_tokens, new_words)):
        op, i1, i2, j1, j2 = step.tag, step.i1, step.i2, step.j1, step.j2
        if op == "equal":
            _keep_separators(edit, old_tokens, new_tokens, i1, i2, j1)
            continue
        # The region between the kept neighbours, in both texts (separators included).
        o_start = old_tokens[i1 - 1][1] if i1 else 0
        o_end = old_tokens[i2][0] if i2 < len(old_tokens) else len(old)
        n_start = new_tokens[j1 - 1][1] if j1 else 0
        n_end = new_tokens[j2][0] if j2 < len(new_tokens) else len(new)
        region = new[n_start:n_end]
        edit.delete(o_start, o_end)
        body = region.strip()
        if not body:
            _separator(edit, region, o_start, o_end, i1)
            continue
        lead = region[: len(region) - len(region.lstrip())]
        trail = region[len(region.rstrip()) :]
        if i1 < i2:  # replaced: the new text takes the place (and formatting) of the old
            anchor = old_tokens[i1][0]
            pos = edit.before(anchor, skip=False)
            before, after = edit.synthetic(o_start, anchor), edit.synthetic(anchor, o_end)
        elif i1:
            pos = edit.after(o_start - 1)
            before, after = False, edit.synthetic(o_start, o_end)
            at_end = i1 == len(old_tokens)
            if (
                "\n\n" in lead
                and (after or at_end)
                and edit.paragraph_after(o_start - 1, o_end, body)
            ):
                continue
        else:
            pos = edit.before(o_end)
            before, after = False, False
        edit.insert(pos, _edge(lead, before) + _inline(body) + _edge(trail, after))
    return edit.render()


_Side = tuple[str, list[tuple[int, int]], list[str]]


@dataclass
class _Op:
    tag: str
    i1: int
    i2: int
    j1: int
    j2: int


def _boundary(text: str, tokens: list[tuple[int, int]], j: int) -> int:
    """How good a place the gap before token `j` is for an edit to start or end."""
    if j <= 0 or j >= len(tokens):
        return 4
    sep = text[tokens[j - 1][1] : tokens[j][0]]
    return 3 if "\n\n" in sep else 2 if "\n" in sep else 1 if sep else 0


def _slide(opcodes: Sequence[tuple[str, int, int, int, int]], old: _Side, new: _Side) -> list[_Op]:
    """Move each pure insertion or deletion to the equivalent place that best follows word and
    line boundaries. The diff may match the "." of "there." with the "." of an inserted
    "line.", inserting ".\n\nA new line" between "there" and "."; sliding by one token gives
    the same text with the insertion on the paragraph boundary, where it belongs."""
    ops = [_Op(*op) for op in opcodes]
    for k, op in enumerate(ops):
        if op.tag not in ("insert", "delete"):
            continue
        prev = ops[k - 1] if k and ops[k - 1].tag == "equal" else None
        nxt = ops[k + 1] if k + 1 < len(ops) and ops[k + 1].tag == "equal" else None
        text, tokens, words = new if op.tag == "insert" else old
        a, b = (op.j1, op.j2) if op.tag == "insert" else (op.i1, op.i2)
        left = right = 0
        if prev is not None:
            while left < prev.i2 - prev.i1 and words[a - left - 1] == words[b - left - 1]:
                left += 1
        if nxt is not None:
            while right < nxt.i2 - nxt.i1 and words[a + right] == words[b + right]:
                right += 1
        if not left and not right:
            continue
        shift = max(
            range(-left, right + 1),
            key=lambda s: (
                _boundary(text, tokens, a + s) + _boundary(text, tokens, b + s),
                -abs(s),
            ),
        )
        op.i1, op.i2, op.j1, op.j2 = op.i1 + shift, op.i2 + shift, op.j1 + shift, op.j2 + shift
        if prev is not None:
            prev.i2, prev.j2 = prev.i2 + shift, prev.j2 + shift
        if nxt is not None:
            nxt.i1, nxt.j1 = nxt.i1 + shift, nxt.j1 + shift
    return ops


def _edge(space: str, tag_break: bool) -> str:
    """The separator markup for whitespace at the edge of inserted text; none where a tag of
    the original already breaks the line."""
    if not space or tag_break:
        return ""
    return _breaks(space.count("\n")) if "\n" in space else " "


def _separator(edit: _Editor, region: str, start: int, end: int, i1: int) -> None:
    """Only whitespace is left between two kept tokens: make sure there is some exactly when
    the rewrite has some."""
    if region and not edit.synthetic(start, end) and i1:
        edit.insert(edit.after(start - 1), _edge(region, False))


def _keep_separators(
    edit: _Editor,
    old_tokens: list[tuple[int, int]],
    new_tokens: list[tuple[int, int]],
    i1: int,
    i2: int,
    j1: int,
) -> None:
    """Within a run of kept tokens, a separator the rewrite added or removed."""
    for k in range(1, i2 - i1):
        o_start, o_end = old_tokens[i1 + k - 1][1], old_tokens[i1 + k][0]
        n_start, n_end = new_tokens[j1 + k - 1][1], new_tokens[j1 + k][0]
        had, has = o_end > o_start, n_end > n_start
        if has and not had:
            edit.insert(edit.after(o_start - 1), " ")
        elif had and not has:
            edit.delete(o_start, o_end)
