"""Settings, built explicitly from the environment (never at import time).

Every setting is documented in the README's settings table. Secrets are `SecretStr`, so they
never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
    "store_key": "COACH_STORE_KEY",
    "database_url": "COACH_DATABASE_URL",
    "data_dir": "COACH_DATA_DIR",
    "auth": "COACH_AUTH",
    "cors_origins": "COACH_CORS_ORIGINS",
    "rate_limit_per_minute": "COACH_RATE_LIMIT",
    "redis_url": "COACH_REDIS_URL",
    "llm_concurrency_per_tenant": "COACH_LLM_CONCURRENCY",
    "host": "COACH_HOST",
    "port": "COACH_PORT",
    "workers": "COACH_WORKERS",
    "log_level": "COACH_LOG_LEVEL",
    "llm_rpm": "COACH_LLM_RPM",
    "llm_tpm": "COACH_LLM_TPM",
    "batch_concurrency": "COACH_BATCH_CONCURRENCY",
    "batch_max_attempts": "COACH_BATCH_MAX_ATTEMPTS",
    "batch_lease_s": "COACH_BATCH_LEASE",
    "batch_max_items": "COACH_BATCH_MAX_ITEMS",
    "batch_retention_days": "COACH_BATCH_RETENTION_DAYS",
    "worker_in_process": "COACH_WORKER_IN_PROCESS",
    "webhook_secret": "COACH_WEBHOOK_SECRET",
    "webhook_allow_private": "COACH_WEBHOOK_ALLOW_PRIVATE",
    "webhook_max_attempts": "COACH_WEBHOOK_MAX_ATTEMPTS",
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
    # -- the HTTP service ------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: SQLite in data_dir."
    )
    data_dir: Path = Path(".coach")
    #: Fernet key(s), comma-separated: batch drafts and results are stored encrypted.
    store_key: SecretStr | None = None
    auth: bool = True
    cors_origins: list[str] = Field(default_factory=list)
    rate_limit_per_minute: int = Field(default=120, ge=1)
    #: Shares the per-key rate limit between every API process (else each has its own).
    redis_url: str | None = None
    llm_concurrency_per_tenant: int = Field(default=4, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    # -- scheduling (batch, eval harness, API jobs) ----------------------------------------
    llm_rpm: int | None = Field(default=None, ge=1, description="Requests per minute budget.")
    llm_tpm: int | None = Field(default=None, ge=1, description="Tokens per minute budget.")
    batch_concurrency: int = Field(default=8, ge=1, le=1024)
    batch_max_attempts: int = Field(default=5, ge=1, le=100)
    batch_lease_s: float = Field(default=120.0, gt=0)
    batch_max_items: int = Field(default=10_000, ge=1)
    #: Finished batches (their drafts and results) are deleted this long after they finished;
    #: 0 keeps them until deleted by hand.
    batch_retention_days: float = Field(default=30.0, ge=0)
    worker_in_process: bool = True
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("auth", "worker_in_process", "webhook_allow_private", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"off", "no", "0", "false"}:
            return False
        if isinstance(value, str) and value.strip().lower() in {"on", "yes", "1", "true"}:
            return True
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database in force: COACH_DATABASE_URL, or SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'coach.db').resolve()}"

    @property
    def webhook_secrets(self) -> list[str]:
        """COACH_WEBHOOK_SECRET split at commas: the current secret first, then those being
        rotated out (events are signed with each)."""
        if self.webhook_secret is None:
            return []
        return [s.strip() for s in self.webhook_secret.get_secret_value().split(",") if s.strip()]

    @property
    def batch_retention_s(self) -> float | None:
        """COACH_BATCH_RETENTION_DAYS in seconds; None keeps finished batches."""
        return self.batch_retention_days * 86_400 if self.batch_retention_days else None

    @property
    def llm_configured(self) -> bool:
        """An LLM can be called: a model and somewhere to send it (a URL or an OpenAI key)."""
        if self.llm_provider == "azure":
            # Azure has no default endpoint: the resource URL is required.
            return bool(self.llm_model and self.llm_base_url and self.llm_api_key)
        return bool(self.llm_model and (self.llm_base_url or self.llm_api_key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from an optional config file (COACH_CONFIG, TOML with the same names in
        lowercase without the COACH_ prefix) overlaid by environment variables."""
        values: dict[str, object] = {}
        if config := environ.get("COACH_CONFIG", "").strip():
            values.update(_read_config(Path(config)))
        values.update(
            {field: environ[name] for field, name in _ENV.items() if environ.get(name, "").strip()}
        )
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


def _read_config(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
    names = {name.removeprefix("COACH_").lower(): field for field, name in _ENV.items()}
    names["llm_api_key"] = "llm_api_key"
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {names[key]: value for key, value in data.items()}
