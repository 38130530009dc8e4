"""Language detection by script: Hebrew letters against Latin letters."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from coach.models import Language

if TYPE_CHECKING:
    from coach.text.merge_fields import MergeField

__all__ = ["HEBREW_LETTER", "detect_language"]

HEBREW_LETTER = "\u05d0-\u05ea"
_HEBREW = re.compile(f"[{HEBREW_LETTER}]")
_LATIN = re.compile(r"[A-Za-z]")
#: Share of Hebrew among letters from which a draft counts as Hebrew. Low on purpose: Hebrew
#: business writing carries English brand names, product terms and URLs.
_HEBREW_SHARE = 0.3


def detect_language(text: str, merge_fields: list[MergeField] | None = None) -> Language:
    """Hebrew or English, by script. Links, e-mail addresses and merge fields do not count:
    they are Latin in any language. `merge_fields`: those of `text`, when the caller has them
    already."""
    from coach.text.merge_fields import find_merge_fields
    from coach.text.segment import mask

    if not _HEBREW.search(text):
        return Language.en  # no Hebrew letter, masked or not
    if merge_fields is None:
        merge_fields = find_merge_fields(text)
    text = mask(text, merge_fields, fill="")
    hebrew = len(_HEBREW.findall(text))
    if hebrew == 0:
        return Language.en
    latin = len(_LATIN.findall(text))
    return Language.he if hebrew >= _HEBREW_SHARE * (hebrew + latin) else Language.en
