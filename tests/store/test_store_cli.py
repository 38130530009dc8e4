"""`coach keys create|list|revoke` through `coach.cli.main.main`, on SQLite and PostgreSQL:
output, exit codes, and no key or hash where it should not be."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from coach.store.sql import hash_key
from coach.webhooks import generate_secret, tenant_secret
from store.store_support import BACKENDS, CliOutcome, database, store_at
from store.store_support import CliRunner as RunCli

KEY_RE = re.compile(r"coach_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture(params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The database in COACH_DATABASE_URL (and a data dir that must stay unused)."""
    with database(str(request.param), tmp_path) as url:
        monkeypatch.delenv("COACH_CONFIG", raising=False)
        monkeypatch.setenv("COACH_DATABASE_URL", url)
        monkeypatch.setenv("COACH_DATA_DIR", str(tmp_path / "unused"))
        yield url


def create(run_cli: RunCli, tenant: str = "acme") -> str:
    result = run_cli(["keys", "create", "--tenant", tenant])
    assert result.code == 0, result.err
    assert KEY_RE.fullmatch(result.out.strip()) and result.out.count("\n") == 1
    return result.out.strip()


def assert_error(result: CliOutcome, *fragments: str) -> None:
    assert result.code == 2, result
    assert result.out == ""
    assert result.err.startswith("coach: error:") and result.err.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.err


def test_create_prints_the_key_once(db_url: str, run_cli: RunCli, tmp_path: Path) -> None:
    key = create(run_cli)
    result = run_cli(["keys", "list"])
    assert result.code == 0
    assert key not in result.out + result.err
    assert not (tmp_path / "unused").exists()

    async def check() -> None:
        async with store_at(db_url, tmp_path) as store:
            principal = await store.authenticate(key)
            assert principal is not None and principal.tenant == "acme"

    asyncio.run(check())


def test_create_says_on_stderr_that_the_key_is_not_shown_again(
    db_url: str, run_cli: RunCli
) -> None:
    result = run_cli(["keys", "create", "--tenant", "acme"])
    assert result.code == 0
    assert "will not be shown again" in result.err
    assert result.out.strip() not in result.err
    assert result.out.strip()[:14] in result.err  # names the prefix for later


def test_list_shows_prefix_tenant_created_revoked_and_never_hashes(
    db_url: str, run_cli: RunCli
) -> None:
    first, second = create(run_cli, "acme"), create(run_cli, "globex")
    assert run_cli(["keys", "revoke", second[:14]]).code == 0
    result = run_cli(["keys", "list"])
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["PREFIX", "TENANT", "CREATED", "REVOKED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {first[:14], second[:14]}
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    assert rows[first[:14]][1] == "acme" and stamp.fullmatch(rows[first[:14]][2])
    assert rows[first[:14]][3] == "-"
    assert rows[second[:14]][1] == "globex" and stamp.fullmatch(rows[second[:14]][3])
    everything = result.out + result.err
    for key in (first, second):
        assert key not in everything and key[15:] not in everything
        assert hash_key(key) not in everything and hash_key(key)[:16] not in everything


def test_list_with_no_keys(db_url: str, run_cli: RunCli) -> None:
    result = run_cli(["keys", "list"])
    assert result.code == 0 and result.out == ""
    assert "no API keys" in result.err


def test_revoke_by_prefix_and_by_key(db_url: str, run_cli: RunCli, tmp_path: Path) -> None:
    by_prefix, by_key = create(run_cli), create(run_cli)
    result = run_cli(["keys", "revoke", by_prefix[:14]])
    assert result.code == 0 and f"revoked {by_prefix[:14]}" in result.out
    result = run_cli(["keys", "revoke", by_key])
    assert result.code == 0 and f"revoked {by_key[:14]}" in result.out
    assert by_key not in result.out + result.err
    # revoking again changes nothing and says so
    again = run_cli(["keys", "revoke", by_prefix[:14]])
    assert again.code == 0 and "already revoked" in again.out

    async def check() -> None:
        async with store_at(db_url, tmp_path) as store:
            assert await store.authenticate(by_prefix) is None
            assert await store.authenticate(by_key) is None

    asyncio.run(check())


def test_revoke_of_an_unknown_prefix_exits_2(db_url: str, run_cli: RunCli) -> None:
    key = create(run_cli)
    assert_error(run_cli(["keys", "revoke", "coach_00000000"]), "no API key matches")
    wrong = key[:15] + ("b" if key[15] != "b" else "c") + key[16:]
    result = run_cli(["keys", "revoke", wrong])
    assert_error(result, key[:14])
    assert wrong not in result.err and wrong[15:] not in result.err


@pytest.mark.parametrize("argument", ["nonsense", "coach_xyz", "Bearer token-1234567890"])
def test_revoke_of_malformed_input_exits_2_without_echoing_it(
    db_url: str, run_cli: RunCli, argument: str
) -> None:
    result = run_cli(["keys", "revoke", argument])
    assert_error(result, "KEY_OR_PREFIX")
    assert argument not in result.err


def test_create_with_a_bad_or_missing_tenant_exits_2(db_url: str, run_cli: RunCli) -> None:
    assert_error(run_cli(["keys", "create", "--tenant", "acme corp"]), "tenant")
    assert run_cli(["keys", "create"]).code == 2
    assert run_cli(["keys", "list"]).out == ""


def test_default_sqlite_database_is_created_in_the_data_dir(
    tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "first" / "start"
    monkeypatch.delenv("COACH_CONFIG", raising=False)
    monkeypatch.delenv("COACH_DATABASE_URL", raising=False)
    monkeypatch.setenv("COACH_DATA_DIR", str(data_dir))
    key = create(run_cli)
    assert (data_dir / "coach.db").is_file()
    result = run_cli(["keys", "list"])
    assert result.code == 0 and key[:14] in result.out


def test_an_unreachable_database_is_one_line_exit_2(
    tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COACH_CONFIG", raising=False)
    monkeypatch.setenv("COACH_DATABASE_URL", "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/x")
    result = run_cli(["keys", "list"])
    assert_error(result, "database")
    assert "s3cret" not in result.err


def test_webhook_secret_prints_the_tenants_derived_secrets(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COACH_CONFIG", raising=False)
    monkeypatch.delenv("COACH_WEBHOOK_SECRET", raising=False)
    assert_error(run_cli(["keys", "webhook-secret", "--tenant", "acme"]), "COACH_WEBHOOK_SECRET")
    new, old = generate_secret(), generate_secret()
    monkeypatch.setenv("COACH_WEBHOOK_SECRET", f"{new}, {old}")
    result = run_cli(["keys", "webhook-secret", "--tenant", "acme"])
    assert result.code == 0, result.err
    assert result.out.splitlines() == [tenant_secret(new, "acme"), tenant_secret(old, "acme")]
    assert new not in result.out and old not in result.out  # the server's secret stays put
