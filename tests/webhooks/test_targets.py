"""Webhook targets: what check_url refuses when the URL is given, and what check_resolved
refuses when the name resolves, before each delivery."""

from __future__ import annotations

import asyncio

import pytest

from coach.errors import InputError
from coach.webhooks import check_resolved, check_url, targets

PRIVATE_LITERALS = [
    "http://127.0.0.1/hook",
    "http://127.1/",  # inet_aton fills the missing bytes
    "http://127.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://017700000001/",  # ... as one octal number
    "http://127.0.0.1./",  # a final dot
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",  # documentation range
]

LOCAL_NAMES = [
    "http://localhost/",
    "http://LOCALHOST:8000/",
    "http://localhost./",
    "http://api.localhost/",
    "http://printer.local/",
    "http://metadata.google.internal/",
    "http://router.home.arpa/",
    "http://redis/",  # one label: resolved through our own search domains
]

MALFORMED = [
    ("ftp://example.com/", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("example.com/hook", "http or https"),
    ("https://user:pass@example.com/", "credentials"),
    ("https://user@example.com/", "credentials"),
    ("http://example.com\\@evil.com/", "credentials"),
    ("http:///hook", "no host"),
    ("https://example.com:99999/", "port"),
    ("http://%31%32%37.0.0.1/", "invalid host"),
    ("http://exa mple.com/", "spaces"),
    ("http://example.com/\r\nX-Injected: 1", "control"),
    ("https://example.com/" + "a" * 2048, "longer than"),
]


@pytest.mark.parametrize("url", PRIVATE_LITERALS)
def test_private_addresses_are_refused_in_every_spelling(url: str) -> None:
    with pytest.raises(InputError, match=r"^webhook_url: .*address"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", LOCAL_NAMES)
def test_local_names_are_refused(url: str) -> None:
    with pytest.raises(InputError, match=r"^webhook_url: "):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", [*PRIVATE_LITERALS, *LOCAL_NAMES])
def test_allow_private_lets_them_through(url: str) -> None:
    normalised = check_url(url, allow_private=True)
    assert normalised.startswith("http://")


@pytest.mark.parametrize(("url", "reason"), MALFORMED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_malformed_urls_are_refused_even_when_private_is_allowed(
    url: str, reason: str, allow_private: bool
) -> None:
    with pytest.raises(InputError, match=rf"^webhook_url: .*{reason}"):
        check_url(url, allow_private=allow_private)


def test_the_error_does_not_quote_the_url() -> None:
    with pytest.raises(InputError) as caught:
        check_url("https://user:s3cret@example.com/?token=abc", allow_private=False)
    assert "s3cret" not in str(caught.value) and "abc" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://example.com/hooks", "https://example.com/hooks"),
        ("HTTPS://Hooks.Example.COM:443/a?b=1#frag", "https://hooks.example.com/a?b=1"),
        ("http://example.com:80", "http://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("  https://example.com./x  ", "https://example.com/x"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://93.184.215.14/hook", "https://93.184.215.14/hook"),
        ("https://[2606:4700:4700::1111]/", "https://[2606:4700:4700::1111]/"),
        ("https://[::ffff:8.8.8.8]/", "https://[::ffff:8.8.8.8]/"),
        ("http://172.32.0.1/", "http://172.32.0.1/"),  # just outside 172.16/12
        ("https://hooks_1.example.com/", "https://hooks_1.example.com/"),
    ],
)
def test_public_urls_come_back_normalised(url: str, normalised: str) -> None:
    assert check_url(url, allow_private=False) == normalised


def test_allow_private_writes_tricky_ipv4_canonically() -> None:
    assert check_url("http://0x7f.1:8080/x", allow_private=True) == "http://127.0.0.1:8080/x"


# -- check_resolved --------------------------------------------------------------------------


class FakeResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


def _check(url: str, resolver: FakeResolver, *, allow_private: bool = False) -> None:
    asyncio.run(check_resolved(url, allow_private=allow_private, resolver=resolver))


def test_a_name_resolving_to_public_addresses_passes() -> None:
    resolver = FakeResolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07::1"]})
    _check("https://hooks.example.com/x", resolver)
    assert resolver.asked == [("hooks.example.com", 443)]


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:192.168.1.1"],
        ["fe80::1%eth0"],
        ["93.184.215.14", "192.168.1.10"],  # one private answer among public ones is enough
    ],
)
def test_a_public_looking_name_resolving_to_a_private_address_is_refused(
    addresses: list[str],
) -> None:
    resolver = FakeResolver({"totally-public.example.com": addresses})
    with pytest.raises(InputError, match="resolves to a private"):
        _check("http://totally-public.example.com:8080/", resolver)
    assert resolver.asked == [("totally-public.example.com", 8080)]


def test_allow_private_skips_resolution() -> None:
    resolver = FakeResolver({})
    _check("http://db.internal/", resolver, allow_private=True)
    assert resolver.asked == []


def test_literal_addresses_need_no_resolution() -> None:
    resolver = FakeResolver({})
    _check("https://93.184.215.14/", resolver)
    with pytest.raises(InputError):
        _check("http://127.1/", resolver)
    assert resolver.asked == []


def test_a_url_check_failure_comes_before_any_lookup() -> None:
    resolver = FakeResolver({})
    with pytest.raises(InputError, match="credentials"):
        _check("https://u:p@hooks.example.com/", resolver)
    assert resolver.asked == []


def test_a_name_that_does_not_resolve_is_an_os_error_not_a_refusal() -> None:
    with pytest.raises(OSError):
        _check("https://nowhere.example.com/", FakeResolver({}))
    with pytest.raises(OSError):
        _check("https://empty.example.com/", FakeResolver({"empty.example.com": []}))


def test_the_default_resolver_reads_getaddrinfo_answers() -> None:
    # A numeric host resolves without any network, which is all a test may use.
    assert asyncio.run(targets._getaddrinfo("127.0.0.1", 80)) == ["127.0.0.1"]


def test_the_default_resolver_is_used_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(host: str, port: int) -> list[str]:
        return ["10.1.2.3"]

    monkeypatch.setattr(targets, "_getaddrinfo", fake)
    with pytest.raises(InputError, match="resolves to a private"):
        asyncio.run(check_resolved("https://hooks.example.com/", allow_private=False))
