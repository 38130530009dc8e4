"""Text utilities: language detection, masking and sentences, merge fields, spans."""

from coach.text.language import HEBREW_LETTER, detect_language
from coach.text.merge_fields import MergeField, find_merge_fields
from coach.text.segment import Sentence, mask, split_sentences
from coach.text.spans import Utf16Index, make_span

__all__ = [
    "HEBREW_LETTER",
    "MergeField",
    "Sentence",
    "Utf16Index",
    "detect_language",
    "find_merge_fields",
    "make_span",
    "mask",
    "split_sentences",
]
