"""One delivery attempt against respx-mocked receivers: what counts as delivered, what is
retried, what is never retried, and what the receiver sees. No test touches the network."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
import structlog

from coach.errors import ConfigError
from coach.logs import configure_logging
from coach.webhooks import Attempt, backoff, deliver, delivery, verify
from coach.webhooks.delivery import BACKOFF_CAP_S, BACKOFF_SCHEDULE_S
from coach.webhooks.signing import generate_secret
from coach.webhooks.targets import Resolver

URL = "https://hooks.example.com/coach?token=t0ken"
SECRET = generate_secret()
BODY = b'{"type":"batch.completed","data":{"batch_id":"b1","secret_words":"do not log"}}'
PUBLIC = {"hooks.example.com": ["93.184.215.14"], "other.example.com": ["93.184.215.15"]}


async def _resolver(host: str, port: int) -> list[str]:
    if host not in PUBLIC:
        raise OSError("no such host")
    return PUBLIC[host]


def _deliver(
    url: str = URL,
    *,
    secret: str | list[str] = SECRET,
    allow_private: bool = False,
    resolver: Resolver = _resolver,
    timeout_s: float = 10.0,
    timestamp: int | None = None,
) -> Attempt:
    async def run() -> Attempt:
        async with httpx.AsyncClient() as client:
            return await deliver(
                client,
                url,
                secret,
                "msg_1",
                BODY,
                allow_private=allow_private,
                resolver=resolver,
                timeout_s=timeout_s,
                timestamp=timestamp,
            )

    return asyncio.run(run())


@respx.mock
def test_a_2xx_is_delivered_with_verifiable_headers() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(204))
    attempt = _deliver()
    assert attempt == Attempt(delivered=True, retry=False, status=204, error=None)
    request = route.calls.last.request
    assert request.content == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["user-agent"].startswith("coach-webhooks/")
    verify(SECRET, request.headers, request.content)


@respx.mock
def test_a_fixed_timestamp_is_signed() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    _deliver(timestamp=1_700_000_000)
    headers = route.calls.last.request.headers
    assert headers["webhook-timestamp"] == "1700000000"
    verify(SECRET, headers, BODY, now=1_700_000_000)


@respx.mock
def test_rotation_sends_one_signature_per_secret() -> None:
    old = generate_secret()
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    assert _deliver(secret=[SECRET, old]).delivered
    headers = route.calls.last.request.headers
    verify(old, headers, BODY)
    verify(SECRET, headers, BODY)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 425, 429])
@respx.mock
def test_server_errors_and_not_now_statuses_are_retried(status: int) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status, text="internal details"))
    attempt = _deliver()
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, True, status)
    assert attempt.error == f"HTTP {status}"
    assert attempt.retry_after_s is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422])
@respx.mock
def test_other_client_errors_are_not_retried(status: int) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status, text="why it failed"))
    attempt = _deliver()
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, False, status)
    assert attempt.error is not None and "why it failed" not in attempt.error


@respx.mock
def test_410_gone_means_stop() -> None:
    respx.post(URL).mock(return_value=httpx.Response(410))
    attempt = _deliver()
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, False, 410)
    assert attempt.error is not None and "stop" in attempt.error


@pytest.mark.parametrize(("status", "value"), [(429, "120"), (503, "7")])
@respx.mock
def test_retry_after_seconds_is_honoured(status: int, value: str) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status, headers={"Retry-After": value}))
    attempt = _deliver()
    assert attempt.retry and attempt.retry_after_s == float(value)


@respx.mock
def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = datetime.now(UTC) + timedelta(minutes=10)
    respx.post(URL).mock(
        return_value=httpx.Response(429, headers={"Retry-After": format_datetime(when, True)})
    )
    attempt = _deliver()
    assert attempt.retry_after_s is not None and 590 <= attempt.retry_after_s <= 600


@pytest.mark.parametrize(
    ("value", "expected"),
    [("soon", None), ("", None), ("99999999999", 86400.0), ("Mon, 01 Jan 2001 00:00:00 GMT", 0.0)],
)
@respx.mock
def test_odd_retry_after_values_are_ignored_or_clamped(value: str, expected: float | None) -> None:
    respx.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": value}))
    assert _deliver().retry_after_s == expected


@respx.mock
def test_retry_after_is_ignored_on_other_statuses() -> None:
    respx.post(URL).mock(return_value=httpx.Response(500, headers={"Retry-After": "60"}))
    assert _deliver().retry_after_s is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@respx.mock
def test_redirects_are_not_followed_and_not_retried(status: int) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(status, headers={"Location": "http://169.254.169.254/"})
    )
    metadata = respx.route(host="169.254.169.254").mock(return_value=httpx.Response(200))
    attempt = _deliver()
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, False, status)
    assert attempt.error is not None and "redirect" in attempt.error
    assert not metadata.called


@respx.mock
def test_redirects_are_not_followed_even_by_a_client_that_would() -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(307, headers={"Location": "https://other.example.com/"})
    )
    other = respx.post("https://other.example.com/").mock(return_value=httpx.Response(200))

    async def run() -> Attempt:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            return await deliver(
                client, URL, SECRET, "m", BODY, allow_private=False, resolver=_resolver
            )

    assert asyncio.run(run()).status == 307
    assert not other.called


@pytest.mark.parametrize(
    "error", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout]
)
@respx.mock
def test_timeouts_are_retried(error: type[Exception]) -> None:
    respx.post(URL).mock(side_effect=error)
    attempt = _deliver(timeout_s=2.5)
    assert attempt == Attempt(False, True, None, "timed out after 2.5 s")


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError])
@respx.mock
def test_connection_errors_are_retried_without_quoting_the_url(error: type[Exception]) -> None:
    respx.post(URL).mock(side_effect=error(f"failed talking to {URL}"))
    attempt = _deliver()
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, True, None)
    assert attempt.error == f"connection failed ({error.__name__})"


@respx.mock
def test_the_whole_attempt_has_a_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    respx.post(URL).mock(side_effect=slow)
    attempt = _deliver(timeout_s=0.05)
    assert (attempt.delivered, attempt.retry) == (False, True)
    assert attempt.error is not None and "timed out" in attempt.error


@respx.mock
def test_a_slow_resolver_counts_against_the_deadline() -> None:
    async def slow_resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["93.184.215.14"]

    route = respx.post(URL).mock(return_value=httpx.Response(200))
    attempt = _deliver(timeout_s=0.05, resolver=slow_resolver)
    assert attempt.retry and not route.called


@respx.mock
def test_a_large_response_body_is_not_read_in_full() -> None:
    chunks_sent = 0

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            nonlocal chunks_sent
            while True:
                chunks_sent += 1
                yield b"x" * 1024

    respx.post(URL).mock(return_value=httpx.Response(200, stream=Endless()))
    assert _deliver().delivered
    assert chunks_sent <= 5


@respx.mock
def test_a_2xx_with_a_stalling_body_is_still_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The receiver has the event once it answered 2xx; a stalled body must not turn that into
    # a timeout and a duplicate delivery.
    monkeypatch.setattr(delivery, "_DRAIN_S", 0.05)

    class Stalling(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"ok"
            await asyncio.sleep(5)

    respx.post(URL).mock(return_value=httpx.Response(200, stream=Stalling()))
    assert _deliver(timeout_s=0.5).delivered


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/",
        "https://u:p@hooks.example.com/",
        "ftp://hooks.example.com/",
    ],
)
@respx.mock
def test_refused_targets_are_not_contacted_nor_retried(url: str) -> None:
    catch_all = respx.route().mock(return_value=httpx.Response(200))
    attempt = _deliver(url)
    assert (attempt.delivered, attempt.retry, attempt.status) == (False, False, None)
    assert attempt.error is not None and attempt.error.startswith("refused: webhook_url: ")
    assert not catch_all.called


@respx.mock
def test_a_name_resolving_to_a_private_address_is_refused_at_delivery() -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["10.0.0.5"]

    catch_all = respx.route().mock(return_value=httpx.Response(200))
    attempt = _deliver(resolver=rebinding)
    assert (attempt.retry, attempt.error) == (
        False,
        "refused: webhook_url: host resolves to a private, loopback, link-local or reserved "
        "address",
    )
    assert not catch_all.called


@respx.mock
def test_a_name_that_does_not_resolve_is_retried() -> None:
    catch_all = respx.route().mock(return_value=httpx.Response(200))
    attempt = _deliver("https://gone.example.com/")
    assert attempt == Attempt(False, True, None, "could not resolve the host")
    assert not catch_all.called


@respx.mock
def test_allow_private_delivers_to_a_local_receiver() -> None:
    route = respx.post("http://127.0.0.1:8080/hook").mock(return_value=httpx.Response(200))
    assert _deliver("http://127.0.0.1:8080/hook", allow_private=True).delivered
    assert route.called


def test_a_bad_secret_raises_before_anything_is_sent() -> None:
    with respx.mock(assert_all_called=False) as mock:
        catch_all = mock.route().mock(return_value=httpx.Response(200))
        with pytest.raises(ConfigError):
            _deliver(secret="whsec_***")
        assert not catch_all.called


@pytest.fixture
def info_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """JSON log lines at INFO and above, as coach writes them to stderr; config restored after."""
    saved = structlog.get_config()
    configure_logging("INFO", json=True)
    capsys.readouterr()
    try:
        yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    finally:
        structlog.configure(**saved)


@respx.mock
def test_the_log_line_names_the_host_never_the_body_path_or_query(
    info_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    respx.post(URL).mock(return_value=httpx.Response(500, text="receiver stack trace"))
    _deliver()
    [entry] = [e for e in info_logs() if e["event"] == "webhook_attempt"]
    assert entry["host"] == "hooks.example.com" and entry["msg_id"] == "msg_1"
    assert entry["status"] == 500 and entry["retry"] is True
    assert entry["body_bytes"] == len(BODY)
    flat = json.dumps(entry)
    for secret_bit in ("do not log", "t0ken", "receiver stack trace", SECRET):
        assert secret_bit not in flat


# -- backoff -----------------------------------------------------------------------------------


def test_backoff_follows_the_schedule_within_the_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(BACKOFF_SCHEDULE_S, start=1):
        for _ in range(50):
            assert base * 0.8 <= backoff(attempt, rng=rng) <= base * 1.2


def test_backoff_starts_at_5_seconds_and_is_capped() -> None:
    assert BACKOFF_SCHEDULE_S[:8] == (5, 30, 120, 600, 1800, 3600, 7200, 14400)
    rng = random.Random(1)
    assert all(backoff(n, rng=rng) <= BACKOFF_CAP_S * 1.2 for n in range(1, 200))
    assert backoff(1000, rng=random.Random(3)) >= BACKOFF_CAP_S * 0.8


def test_backoff_is_jittered_and_reproducible_with_a_seed() -> None:
    values = {backoff(3, rng=random.Random(seed)) for seed in range(20)}
    assert len(values) > 10
    assert backoff(3, rng=random.Random(5)) == backoff(3, rng=random.Random(5))


def test_backoff_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError):
        backoff(0)


# -- a real socket -----------------------------------------------------------------------------


def test_a_loopback_receiver_gets_a_verifiable_request() -> None:
    """The respx tests skip httpx's transport; this one goes through a real socket (loopback
    only) so streaming, draining and closing are exercised for real."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        received.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 9000\r\n\r\n" + b"x" * 9000)
        await writer.drain()
        writer.close()

    async def run() -> Attempt:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient() as client:
            return await deliver(
                client,
                f"http://127.0.0.1:{port}/hook",
                SECRET,
                "msg_real",
                BODY,
                allow_private=True,
            )

    attempt = asyncio.run(run())
    assert attempt == Attempt(delivered=True, retry=False, status=202, error=None)
    [raw] = received
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:])
    assert body == BODY
    verify(SECRET, headers, body)
