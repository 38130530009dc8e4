"""The error tree of coach. Every error a user can cause or meet is one of these.

    CoachError                      base; carries a one-line, draft-free message
    ├── InputError                  the request itself is unusable (empty, too long, undecodable)
    ├── RulebookError               a rulebook file is malformed or names unknown rules
    └── DatasetError                an eval dataset line is invalid (names the file and line)

Messages never contain the text of a draft: they name fields, limits, files and lines.
"""

from __future__ import annotations

__all__ = ["CoachError", "DatasetError", "InputError", "RulebookError"]


class CoachError(Exception):
    """Base class for every error coach raises on purpose."""


class InputError(CoachError):
    """The draft or request cannot be reviewed as given."""


class RulebookError(CoachError):
    """A rulebook file cannot be loaded."""


class DatasetError(CoachError):
    """An evaluation dataset is invalid."""
