"""A fake OpenAI-compatible server for end-to-end tests, the eval harness and benchmarks.

Run it from the repository root::

    python -m tools.fake_openai --port 0 --seed 0 [--latency S] [--jitter S] [--error-rate P]
        [--rate-limit-rate P] [--retry-after S] [--rpm N] [--mode MODE] [--quiet]

It prints one line, ``fake-openai listening on http://HOST:PORT/v1``, and serves
``POST /v1/chat/completions``, the Azure form
``POST /openai/deployments/{deployment}/chat/completions``, ``GET /health`` and
``GET /v1/models`` until SIGTERM or SIGINT. Answers come from coach's rule engine, in the JSON
the LLM engine asks for. See `tools.fake_openai.server` for faults, headers and their order.

Per-request headers: ``X-Fake-Mode`` (normal, invalid-json, refusal, length, content-filter,
bad-quotes, insufficient-quota) and ``X-Fake-Fail-Times: N`` with ``X-Fake-Key: K`` (the first
N requests with key K get 500).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL_MODES",
    "CLI_MODES",
    "LISTENING_PREFIX",
    "MODEL_ID",
    "Config",
    "loopback_address",
    "parse_args",
]

# This module is the command line and the configuration, standard library only, so that a bad
# command line fails fast; the server (and coach) load in `tools.fake_openai.server`.

#: The one line printed to stdout on start, followed by the base URL (`http://HOST:PORT/v1`).
LISTENING_PREFIX = "fake-openai listening on "
MODEL_ID = "fake-coach"
CLI_MODES = ("normal", "invalid-json", "refusal", "length", "content-filter", "bad-quotes")
#: Modes a request may ask for with `X-Fake-Mode` (and `--mode`).
ALL_MODES = (*CLI_MODES, "insufficient-quota")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    rpm: int | None = None
    mode: str = "normal"
    quiet: bool = False


def loopback_address(host: str) -> tuple[str, int] | None:
    """The address to bind and its family, or None if `host` is not a loopback address."""
    if host.lower() == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    return str(address), socket.AF_INET6 if address.version == 6 else socket.AF_INET


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage block
        self.exit(2, f"fake-openai: error: {message}\n")


def _non_negative(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {raw!r}")
    return value


def _probability(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {raw!r}")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {raw!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = _Parser(
        prog="python -m tools.fake_openai",
        description="A fake OpenAI-compatible server (loopback only) that answers with coach's "
        "rule engine, with seeded faults, latency and rate limits.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.0/8, ::1 or localhost")
    parser.add_argument("--port", type=_port, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=_non_negative, default=0.0, metavar="SECONDS")
    parser.add_argument("--jitter", type=_non_negative, default=0.0, metavar="SECONDS")
    parser.add_argument("--error-rate", type=_probability, default=0.0, metavar="P")
    parser.add_argument("--rate-limit-rate", type=_probability, default=0.0, metavar="P")
    parser.add_argument("--retry-after", type=_non_negative, default=1.0, metavar="SECONDS")
    parser.add_argument("--rpm", type=_positive_int, default=None, metavar="N")
    parser.add_argument("--mode", choices=ALL_MODES, default="normal")
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(argv)
    if args.error_rate + args.rate_limit_rate > 1:
        parser.error("--error-rate plus --rate-limit-rate must be at most 1")
    if loopback_address(args.host) is None:
        parser.error(
            f"refusing to listen on {args.host!r}: not a loopback address "
            "(use 127.0.0.1, ::1 or localhost)"
        )
    return Config(
        host=args.host,
        port=args.port,
        seed=args.seed,
        latency=args.latency,
        jitter=args.jitter,
        error_rate=args.error_rate,
        rate_limit_rate=args.rate_limit_rate,
        retry_after=args.retry_after,
        rpm=args.rpm,
        mode=args.mode,
        quiet=args.quiet,
    )
