"""One delivery attempt of a webhook, and the backoff between attempts.

The outbox loop owns persistence and scheduling; this module decides only what one POST
achieved and whether trying again can help. It never raises for a receiver's behaviour, never
follows a redirect, never reads more than a few KiB of a response and never logs a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

import httpx

from coach.errors import InputError
from coach.logs import get_logger
from coach.webhooks.signing import signed_headers
from coach.webhooks.targets import Resolver, check_resolved

__all__ = ["BACKOFF_CAP_S", "BACKOFF_SCHEDULE_S", "Attempt", "backoff", "deliver"]

_log = get_logger("coach.webhooks")

#: Seconds to wait after failed attempt n (index n - 1); later attempts wait the last value.
BACKOFF_SCHEDULE_S: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
BACKOFF_CAP_S: float = BACKOFF_SCHEDULE_S[-1]
#: ±20 %: enough to spread a burst of failures across receivers, small enough to keep the
#: documented schedule meaningful.
_JITTER = 0.2
#: A Retry-After longer than this is clamped: a receiver may slow us down, not park a row
#: for weeks.
_MAX_RETRY_AFTER_S = 86400.0
#: Bytes of a response we drain so the connection can be reused; the rest is discarded unread.
_READ_CAP = 4096
#: Seconds we wait for those bytes once the status is known.
_DRAIN_S = 1.0
#: Statuses that say "not now" rather than "never" among the 4xx.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_USER_AGENT = "coach-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt achieved."""

    delivered: bool
    retry: bool  # whether a later attempt may succeed
    status: int | None
    error: str | None  # one line, no body
    retry_after_s: float | None = None  # from Retry-After on 429/503; use it instead of backoff


def backoff(attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`, after attempt `attempt` (1-based) failed:
    5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, then 8 h each, all ±20 % jitter."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    base = BACKOFF_SCHEDULE_S[min(attempt, len(BACKOFF_SCHEDULE_S)) - 1]
    spread = (rng or random).uniform(-_JITTER, _JITTER)
    return base * (1 + spread)


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date), or None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Nine digits already exceed the clamp; int() of thousands of digits would raise.
        seconds = float(int(value[:9]))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _classify(response: httpx.Response) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(delivered=True, retry=False, status=status, error=None)
    if 300 <= status < 400:
        # Following it would reach a host we never checked (possibly a private one).
        return Attempt(False, False, status, f"redirect {status} not followed: use the final URL")
    if status == 410:
        return Attempt(False, False, status, "410 Gone: the receiver asked us to stop")
    retry_after = (
        _retry_after(response.headers.get("retry-after"), time.time())
        if status in (429, 503)
        else None
    )
    if status in _RETRYABLE_4XX or status >= 500:
        return Attempt(False, True, status, f"HTTP {status}", retry_after)
    if 400 <= status < 500:
        return Attempt(False, False, status, f"HTTP {status}: rejected by the receiver")
    # 1xx as a final status is a broken server; it may be fixed.
    return Attempt(False, True, status, f"HTTP {status}: unexpected status")


async def _drain(response: httpx.Response) -> None:
    """Read at most a few KiB so a short answer leaves the connection reusable; a longer or
    slower one is abandoned (closing the response drops the connection). Best effort: the
    verdict is already taken from the status."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= _READ_CAP:
                    break


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    secret: str | Sequence[str],
    msg_id: str,
    body: bytes,
    *,
    allow_private: bool,
    timeout_s: float = 10.0,
    timestamp: int | None = None,
    resolver: Resolver | None = None,
) -> Attempt:
    """POST one signed webhook to `url` and say what happened. Never raises for anything the
    receiver or the network does; a bad secret (`ConfigError`) or message id (`InputError`) is
    our bug and raises before anything is sent.

    `timeout_s` bounds the whole attempt up to the response headers (name resolution, connect,
    TLS, sending, the receiver's processing), so a slow receiver cannot hold a worker. Several
    secrets add one signature each (rotation). Redirects are never followed, whatever the
    client's own setting. Give it a client of its own, without auth, cookies or base URL:
    whatever the client adds to a request goes to the customer.
    """
    # Sign before any I/O: a bad secret must fail loudly, not look like a receiver problem.
    headers = signed_headers(secret, msg_id, body, timestamp=timestamp)
    headers["user-agent"] = _USER_AGENT
    started = time.monotonic()
    response: httpx.Response | None = None
    try:
        # The deadline ends with the status line and headers: a receiver that answered 2xx has
        # the event, however slowly it then sends its body.
        async with asyncio.timeout(timeout_s):
            try:
                await check_resolved(url, allow_private=allow_private, resolver=resolver)
            except InputError as exc:
                attempt = Attempt(False, False, None, f"refused: {exc}")
            except OSError:
                attempt = Attempt(False, True, None, "could not resolve the host")
            else:
                request = client.build_request(
                    "POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout_s)
                )
                response = await client.send(request, stream=True, follow_redirects=False)
        if response is not None:
            attempt = _classify(response)
            await _drain(response)
    except (TimeoutError, httpx.TimeoutException):
        attempt = Attempt(False, True, None, f"timed out after {timeout_s:g} s")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        attempt = Attempt(False, False, None, "refused: not a URL coach can call")
    except httpx.TransportError as exc:
        # The class name only: httpx messages can quote the URL, whose query may hold a token.
        attempt = Attempt(False, True, None, f"connection failed ({type(exc).__name__})")
    finally:
        if response is not None:
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()
    _log.info(
        "webhook_attempt",
        msg_id=msg_id,
        host=_host(url),
        delivered=attempt.delivered,
        retry=attempt.retry,
        status=attempt.status,
        error=attempt.error,
        body_bytes=len(body),
        elapsed_ms=round((time.monotonic() - started) * 1000),
    )
    return attempt


def _host(url: str) -> str | None:
    # The host only: a path or query may carry the receiver's own token.
    try:
        return httpx.URL(url).host or None
    except (httpx.InvalidURL, ValueError):
        return None
