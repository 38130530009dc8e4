"""The price table behind `usage.cost_usd` (data: `data/prices.yaml`, or COACH_LLM_PRICES_FILE)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from coach.errors import ConfigError

__all__ = ["Price", "estimate_cost", "load_prices"]


class Price(BaseModel):
    input: float
    cached_input: float
    output: float


@cache
def load_prices(path: Path | None) -> dict[str, Price]:
    try:
        text = (
            path.read_text("utf-8")
            if path
            else resources.files("coach.engines.llm")
            .joinpath("data/prices.yaml")
            .read_text("utf-8")
        )
        raw = yaml.safe_load(text)["prices"]
        return {str(name): Price.model_validate(value) for name, value in raw.items()}
    except (OSError, KeyError, TypeError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(
            f"price table {path or 'default'}: invalid ({exc.__class__.__name__})"
        ) from None


def estimate_cost(
    prices: dict[str, Price], model: str, tokens_in: int, tokens_cached: int, tokens_out: int
) -> float | None:
    price = prices.get(model)
    if price is None:
        prefixes = [k for k in prices if k.endswith("*") and model.startswith(k[:-1])]
        price = prices[max(prefixes, key=len)] if prefixes else None
    if price is None:
        return None
    fresh = max(0, tokens_in - tokens_cached)
    dollars = fresh * price.input + tokens_cached * price.cached_input + tokens_out * price.output
    return round(dollars / 1_000_000, 6)
