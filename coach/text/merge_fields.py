"""Merge fields of common mail-merge and CRM tools, recognised as slots in a template.

Supported syntaxes (one regex each, see `_SYNTAXES`): Handlebars/Liquid/HubSpot `{{first_name}}`,
`{{ contact.firstname }}`; Mailchimp `*|FNAME|*`; Salesforce `{!Contact.FirstName}`;
bracketed `[First Name]`; percent `%FIRSTNAME%`. The rule engine's rewrite slots
(`[[OFFER: …]]`) are recognised too, so a rewrite keeps them intact.

Whether a field is real personalisation is decided from its name against the word lists in
`coach/text/data/merge_fields.yaml`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

__all__ = ["MergeField", "field_kind", "find_merge_fields", "normalise_field_name"]

_SYNTAXES: tuple[tuple[str, str], ...] = (
    ("handlebars", r"\{\{\s*[^{}\n]{1,80}?\s*\}\}"),
    ("mailchimp", r"\*\|[A-Za-z0-9_:]{1,60}\|\*"),
    ("salesforce", r"\{![A-Za-z0-9_.]{1,80}\}"),
    (
        "bracket",
        r"(?<!\[)\[(?:[A-Z\u05D0-\u05EA][\w.\u05D0-\u05EA]*)(?: [\w.\u05D0-\u05EA]+){0,4}\](?!\])",
    ),
    ("percent", r"%[A-Za-z][A-Za-z0-9_]{1,40}%"),
    # The rule engine's own fill-in slots in a structural rewrite: [[DETAIL: their news]].
    ("slot", r"\[\[[A-Z][A-Z ]{1,30}:[^\]\n]{0,120}\]\]"),
)
#: What each syntax opens with; a draft without any has no merge field.
_OPENER = {
    "handlebars": "{{",
    "mailchimp": "*|",
    "salesforce": "{!",
    "bracket": "[",
    "percent": "%",
    "slot": "[[",
}


@cache
def _pattern(syntaxes: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for the given syntaxes, in _SYNTAXES order. A syntax whose opener is not in the
    text matches nowhere, so leaving it out changes no match, and a regex of fewer syntaxes is
    faster (one that starts with a literal is searched for like a substring)."""
    return re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _SYNTAXES if name in syntaxes))


#: Rewrite slots the writer fills with something true of the recipient.
_PERSONAL_SLOTS = frozenset({"detail", "their business"})
_TOOL_PREFIX = re.compile(
    r"^(?:contact|lead|account|company|recipient|user|person|prospect)[._]", re.I
)


@dataclass(frozen=True, slots=True)
class MergeField:
    start: int
    end: int
    raw: str
    syntax: str
    name: str  # normalised: lowercase, tool prefix removed, separators dropped
    kind: str  # "identity" | "personal" | "other"


def normalise_field_name(raw: str) -> str:
    inner = raw.strip("{}*|%![] ").strip()
    inner = inner.split("|", 1)[0].strip()  # Liquid filters: {{ name | default: "there" }}
    inner = _TOOL_PREFIX.sub("", inner)
    return re.sub(r"[^0-9a-z\u05D0-\u05EA]", "", inner.lower())


@cache
def _vocabulary() -> tuple[frozenset[str], tuple[str, ...]]:
    data = yaml.safe_load(
        resources.files("coach.text").joinpath("data/merge_fields.yaml").read_text("utf-8")
    )
    identity = frozenset(re.sub(r"[^0-9a-z\u05D0-\u05EA]", "", n.lower()) for n in data["identity"])
    personal = tuple(str(word).lower() for word in data["personal_words"])
    return identity, personal


def field_kind(name: str) -> str:
    identity, personal = _vocabulary()
    if name in identity:
        return "identity"
    if any(word in name for word in personal):
        return "personal"
    return "other"


def find_merge_fields(text: str) -> list[MergeField]:
    fields = []
    present = tuple(name for name, opener in _OPENER.items() if opener in text)
    if not present:
        return []
    for match in _pattern(present).finditer(text):
        syntax = match.lastgroup or "handlebars"
        if syntax == "slot":
            label = match.group()[2:].split(":", 1)[0].strip().lower()
            kind = "personal" if label in _PERSONAL_SLOTS else "other"
            fields.append(
                MergeField(match.start(), match.end(), match.group(), syntax, label, kind)
            )
            continue
        name = normalise_field_name(match.group())
        if not name:
            continue
        fields.append(
            MergeField(match.start(), match.end(), match.group(), syntax, name, field_kind(name))
        )
    return fields
