"""Settings, built explicitly from the environment (never at import time).

Every setting is documented in the README's settings table. Secrets are `SecretStr`, so they
never appear in a repr, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from coach.errors import ConfigError

__all__ = ["DEFAULT_PROMPTS_DIR", "Settings"]

#: The repository's prompts/ folder (the package is installed from the repository).
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

_ENV: dict[str, str] = {
    "llm_base_url": "COACH_LLM_BASE_URL",
    "llm_model": "COACH_LLM_MODEL",
    "llm_provider": "COACH_LLM_PROVIDER",
    "llm_api_version": "COACH_LLM_API_VERSION",
    "llm_timeout_s": "COACH_LLM_TIMEOUT",
    "llm_deadline_s": "COACH_LLM_DEADLINE",
    "llm_max_attempts": "COACH_LLM_MAX_ATTEMPTS",
    "llm_max_connections": "COACH_LLM_MAX_CONNECTIONS",
    "llm_response_format": "COACH_LLM_RESPONSE_FORMAT",
    "llm_prompt_version": "COACH_LLM_PROMPT_VERSION",
    "llm_temperature": "COACH_LLM_TEMPERATURE",
    "llm_max_tokens": "COACH_LLM_MAX_TOKENS",
    "llm_prices_file": "COACH_LLM_PRICES_FILE",
    "prompts_dir": "COACH_PROMPTS_DIR",
    "cache_ttl_s": "COACH_CACHE_TTL",
    "cache_size": "COACH_CACHE_SIZE",
    "cache_dir": "COACH_CACHE_DIR",
    "cache_key": "COACH_CACHE_KEY",
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_provider: Literal["openai", "azure"] = "openai"
    llm_api_version: str = "2024-10-21"
    llm_timeout_s: float = Field(default=15.0, gt=0)
    llm_deadline_s: float = Field(default=20.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1, le=10)
    llm_max_connections: int = Field(default=20, ge=1)
    llm_response_format: Literal["json_schema", "json_object"] = "json_schema"
    llm_prompt_version: str = "v1"
    llm_temperature: float = Field(default=0.2, ge=0, le=2)
    llm_max_tokens: int = Field(default=2500, ge=256)
    llm_prices_file: Path | None = None
    prompts_dir: Path = DEFAULT_PROMPTS_DIR
    cache_ttl_s: float = Field(default=3600.0, ge=0)
    cache_size: int = Field(default=1024, ge=0)
    cache_dir: Path | None = None
    cache_key: SecretStr | None = None

    @property
    def llm_configured(self) -> bool:
        """An LLM can be called: a model and somewhere to send it (a URL or an OpenAI key)."""
        return bool(self.llm_model and (self.llm_base_url or self.llm_api_key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, object] = {
            field: environ[name] for field, name in _ENV.items() if environ.get(name, "").strip()
        }
        key = environ.get("COACH_LLM_API_KEY") or environ.get("OPENAI_API_KEY")
        if key:
            values["llm_api_key"] = key
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            name = _ENV.get(field, field)
            raise ConfigError(f"setting {name}: {err['msg']}") from None
