"""Which webhook URLs coach will call: a customer must not be able to point our servers at
our own network (SSRF). Two checks:

- `check_url` when the URL is given: scheme, no credentials, and no private host written
  literally, including the spellings `inet_aton` accepts (127.1, 0x7f.0.0.1, 2130706433).
- `check_resolved` before each delivery: every address the name resolves to must be public.

Residual risk, accepted: the HTTP client resolves the name again when it connects, so a DNS
server that answers with a public address to the check and a private one a moment later (DNS
rebinding with a zero TTL) can still slip through. Closing that needs connecting to the checked
address itself, or an egress proxy / network policy that blocks private ranges; the latter is
the recommended deployment control (see docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable

import httpx

from coach.errors import InputError

__all__ = ["Resolver", "check_resolved", "check_url", "is_public_ip"]

Resolver = Callable[[str, int], Awaitable[list[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL = 2048
#: DNS names of letters, digits, hyphens and dots (after IDNA); underscores occur in real
#: records. Anything else (percent signs, spaces) is a parser trick, not a host.
_HOST_CHARS = re.compile(r"[a-z0-9._-]+")
#: Names reserved for private use: they only ever resolve inside someone's network.
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".lan")
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: NAT64 well-known prefix: the last 32 bits are an IPv4 address the gateway will reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _fail(reason: str) -> InputError:
    return InputError(f"webhook_url: {reason}")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address `inet_aton` (and so getaddrinfo) reads from a host such as "127.1",
    "0x7f.0.0.1", "0177.0.0.1" or "2130706433"; None when it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        try:
            if part[:2] in ("0x", "0X"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part[1:], 8))
            elif part.isascii() and part.isdigit():
                numbers.append(int(part))
            else:
                return None
        except ValueError:
            return None
    # Every leading part is one byte; the last fills the bytes that remain.
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (5 - len(numbers))):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (5 - len(numbers))) | last
    return ipaddress.IPv4Address(value)


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)


def is_public_ip(ip: IPAddress) -> bool:
    """True when `ip` is a globally routable unicast address, looking through the IPv6
    forms that embed an IPv4 address (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if not all(is_public_ip(v4) for v4 in embedded):
            return False
        if ip.ipv4_mapped is not None:
            return True
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_private
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_unspecified
    )


def _split(url: str) -> tuple[httpx.URL, str]:
    """The URL as the HTTP client will read it (so the check and the request cannot parse it
    differently) and its host, lower-case, IDNA-encoded, without brackets or a final dot."""
    if len(url) > _MAX_URL:
        raise _fail(f"longer than {_MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise _fail("must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise _fail("not a valid URL") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise _fail("must be an http or https URL")
    if parsed.userinfo:
        raise _fail("must not contain credentials")
    if not host:
        raise _fail("has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise _fail("port out of range")
    return parsed, host.removesuffix(".")


def _refuse_private_host(host: str, ip: IPAddress | None) -> None:
    if ip is not None:
        if not is_public_ip(ip):
            raise _fail("private, loopback, link-local or reserved address")
        return
    if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        raise _fail("host is a local name")
    if "." not in host:
        # A single label resolves through the search domains of our own network.
        raise _fail("host must be a fully qualified domain name")


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL normalised (lower-case scheme and host, IPv4 written canonically, default port
    and fragment dropped), or `InputError("webhook_url: ...")` when coach will not call it.
    `allow_private` (development, on-premise receivers) lifts only the private-host checks."""
    parsed, host = _split(url.strip())
    ip = _parse_ip(host.split("%", 1)[0]) if ":" in host else _parse_ip(host)
    if ip is None and not _HOST_CHARS.fullmatch(host):
        raise _fail("invalid host")
    if not allow_private:
        _refuse_private_host(host, ip)
    if ip is None:
        shown = host
    elif isinstance(ip, ipaddress.IPv6Address):
        shown = f"[{parsed.raw_host.decode('ascii').lower()}]"
    else:
        shown = str(ip)
    port = parsed.port
    netloc = shown if port is None or port == _DEFAULT_PORTS[parsed.scheme] else f"{shown}:{port}"
    path = parsed.raw_path.decode("ascii") or "/"
    return f"{parsed.scheme}://{netloc}{path}"


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_resolved(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> None:
    """Refuse (`InputError`) when the URL fails `check_url` or its host resolves to ANY
    non-public address: one private answer among public ones is enough to be steered to it.

    A name that does not resolve raises `OSError` (from the resolver): that may be transient,
    so the caller retries rather than refuses.
    """
    normalised = check_url(url, allow_private=allow_private)
    if allow_private:
        return
    parsed, host = _split(normalised)
    if _parse_ip(host.split("%", 1)[0]) is not None:
        return  # a literal address: check_url has judged it already
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    addresses = await (resolver or _getaddrinfo)(host, port)
    if not addresses:
        raise OSError(f"{host} resolved to no address")
    for address in addresses:
        ip = _parse_ip(address.split("%", 1)[0])
        if ip is None or not is_public_ip(ip):
            raise _fail("host resolves to a private, loopback, link-local or reserved address")
