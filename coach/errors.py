"""The error tree of coach. Every error a user can cause or meet is one of these.

    CoachError                      base; carries a one-line, draft-free message
    ├── InputError                  the request itself is unusable (empty, too long, undecodable)
    ├── RulebookError               a rulebook file is malformed or names unknown rules
    ├── DatasetError                an eval dataset line is invalid (names the file and line)
    ├── ConfigError                 a setting (environment variable, price table) is invalid
    ├── PromptError                 a prompt file is missing, malformed, or misses a variable
    └── LLMError                    the model could not give a valid review; the engine falls
        │                           back to the rule engine and says why (`code`)
        ├── LLMTimeout              the per-review deadline passed
        ├── LLMRateLimited          429s outlasted the retries or the deadline
        ├── LLMQuotaExceeded        insufficient_quota: never retried
        ├── LLMProviderError        another HTTP error, or the server could not be reached
        ├── LLMRefusal              the model refused
        ├── LLMTruncated            finish_reason "length": the output was cut off
        ├── LLMContentFiltered      finish_reason "content_filter"
        └── LLMInvalidOutput        not valid JSON for the schema, even after one repair call

Messages never contain the text of a draft: they name fields, limits, files and lines.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = [
    "CoachError",
    "ConfigError",
    "DatasetError",
    "InputError",
    "LLMContentFiltered",
    "LLMError",
    "LLMInvalidOutput",
    "LLMProviderError",
    "LLMQuotaExceeded",
    "LLMRateLimited",
    "LLMRefusal",
    "LLMTimeout",
    "LLMTruncated",
    "PromptError",
    "RulebookError",
    "first_validation_error",
]


class CoachError(Exception):
    """Base class for every error coach raises on purpose."""


class InputError(CoachError):
    """The draft or request cannot be reviewed as given."""


class RulebookError(CoachError):
    """A rulebook file cannot be loaded."""


class DatasetError(CoachError):
    """An evaluation dataset is invalid."""


class ConfigError(CoachError):
    """A setting is invalid."""


class PromptError(CoachError):
    """A prompt cannot be loaded or rendered."""


class LLMError(CoachError):
    """The LLM engine could not produce a valid review. `code` is stable and goes into
    `degraded_reason`; the message never contains the draft."""

    code = "llm_error"


class LLMTimeout(LLMError):
    code = "timeout"


class LLMRateLimited(LLMError):
    code = "rate_limited"


class LLMQuotaExceeded(LLMError):
    code = "insufficient_quota"


class LLMProviderError(LLMError):
    code = "provider_error"


class LLMRefusal(LLMError):
    code = "refusal"


class LLMTruncated(LLMError):
    code = "truncated"


class LLMContentFiltered(LLMError):
    code = "content_filter"


class LLMInvalidOutput(LLMError):
    code = "invalid_output"


def first_validation_error(exc: ValidationError) -> str:
    """The first error of a pydantic validation as "field.path: message" (or the message alone).
    Built from the location and message only: never from the input, which may be a draft."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])
