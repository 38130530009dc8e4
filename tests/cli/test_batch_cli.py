"""`coach batch` end to end: a folder of .txt/.html/.eml, a CSV column and JSONL into .jsonl,
.csv and .md outputs (every item exactly once, merge fields kept, HTML markup kept); re-runs
that review nothing again, changed and deleted inputs; exit codes 1, 2, 3 and 130 (SIGINT in a
real process against the fake OpenAI server, then a resume)."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from batch.batch_support import REPO, counting_server, jsonl, wait_for
from conftest import RunCli
from cryptography.fernet import Fernet

import coach.batch.background as background_module
import coach.batch.run as run_module
from coach.cli.main import main
from coach.models import Review, ReviewRequest
from coach.service import ReviewService

MERGE_FIELDS = ("{{first_name}}", "*|FNAME|*", "%FIRSTNAME%")
ITEMS = {
    "drafts/a.txt",
    "drafts/b.html",
    "drafts/c.eml",
    "rows.csv:row=1",
    "rows.csv:row=2",
    "items.jsonl:id=j1",
    "items.jsonl:id=j2",
}
COMMAND = ["batch", "drafts", "rows.csv", "items.jsonl", "--column", "body", "--quiet"]


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A library of drafts in tmp_path (the working directory), and a store in tmp_path."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("COACH_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("COACH_DATA_DIR", str(tmp_path / "data"))
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    (drafts / "a.txt").write_text(
        "Hi {{first_name}}, could you introduce me to your head of procurement? "
        "*|FNAME|* %FIRSTNAME%",
        encoding="utf-8",
    )
    (drafts / "b.html").write_text(
        "<html><body><p>Hi <b>{{first_name}}</b>,</p>"
        "<p>Could you introduce me to your head of procurement?</p></body></html>",
        encoding="utf-8",
    )
    (drafts / "c.eml").write_text(
        "Subject: Quick question\nContent-Type: text/plain\n\n"
        "Hi Dana, could you introduce me to your head of procurement?\n",
        encoding="utf-8",
    )
    (drafts / "notes.bin").write_bytes(b"\x00skipped")
    (tmp_path / "rows.csv").write_text(
        'id,body\n1,"Hello {{name}}, can we talk?"\n'
        "2,Could you introduce me to your head of procurement?\n",
        encoding="utf-8",
    )
    (tmp_path / "items.jsonl").write_text(
        '{"id": "j1", "text": "Quick call tomorrow?"}\n'
        '{"id": "j2", "text": "Hi %NAME%, we help teams ship faster."}\n',
        encoding="utf-8",
    )
    return tmp_path


@pytest.fixture
def reviews(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every review `coach batch` performs, by draft text."""
    calls: Counter[str] = Counter()
    original = ReviewService.review

    async def spy(self: ReviewService, request: ReviewRequest, **kwargs: Any) -> Review:
        calls[request.text] += 1
        return await original(self, request, **kwargs)

    monkeypatch.setattr(ReviewService, "review", spy)
    return calls


def _by_item(path: Path) -> dict[str, dict[str, Any]]:
    rows = jsonl(path)
    keys = [r["item"] for r in rows]
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)
    return {r["item"]: r for r in rows}


def _attempts(library: Path) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(library / "data" / "coach.db") as db:
        return sorted(db.execute("SELECT key, attempts, completed_at FROM batch_items"))


def test_library_into_jsonl_csv_and_md(
    library: Path, run_cli: RunCli, reviews: Counter[str]
) -> None:
    result = run_cli([*COMMAND, "--out", "out.jsonl"])
    assert result.code == 0, result.err
    rows = _by_item(library / "out.jsonl")
    assert set(rows) == ITEMS
    assert sum(reviews.values()) == 7
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    assert rows["rows.csv:row=2"]["location"] == {"path": "rows.csv", "row": 2}
    assert rows["items.jsonl:id=j1"]["location"] == {"path": "items.jsonl", "id": "j1", "line": 1}
    assert rows["drafts/c.eml"]["location"] == {"path": "drafts/c.eml"}
    # merge fields reach the rewrite byte for byte
    rewrite = rows["drafts/a.txt"]["review"]["rewrite"]["text"]
    assert all(field in rewrite for field in MERGE_FIELDS), rewrite
    assert "%NAME%" in rows["items.jsonl:id=j2"]["review"]["rewrite"]["text"]
    assert "{{name}}" in rows["rows.csv:row=1"]["review"]["rewrite"]["text"]
    # the HTML rewrite keeps the markup
    markup = rows["drafts/b.html"]["rewrite_markup"]
    assert markup.startswith("<html><body><p>") and "<b>{{first_name}}</b>" in markup
    assert "rewrite_markup" not in rows["drafts/a.txt"]
    first = (library / "out.jsonl").read_bytes()
    stored = _attempts(library)

    # the same command into other formats: the same batch, nothing reviewed again
    result = run_cli([*COMMAND, "--out", "out.csv"])
    assert result.code == 0, result.err
    with (library / "out.csv").open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(r["item"] for r in table) == sorted(ITEMS)
    assert {r["status"] for r in table} == {"done"}
    result = run_cli([*COMMAND, "--out", "out.md"])
    assert result.code == 0, result.err
    markdown = (library / "out.md").read_text(encoding="utf-8")
    assert all(item in markdown for item in ITEMS)
    result = run_cli([*COMMAND, "--out", "out.jsonl"])
    assert result.code == 0, result.err
    assert sum(reviews.values()) == 7
    assert _attempts(library) == stored
    assert (library / "out.jsonl").read_bytes() == first
    assert not list(library.glob("*.partial"))


def test_with_a_store_key_the_store_holds_no_draft_and_the_output_is_in_clear(
    library: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COACH_STORE_KEY", Fernet.generate_key().decode())
    result = run_cli([*COMMAND, "--out", "out.jsonl"])
    assert result.code == 0, result.err
    rows = _by_item(library / "out.jsonl")
    assert set(rows) == ITEMS and all(r["status"] == "done" for r in rows.values())
    assert "<b>{{first_name}}</b>" in rows["drafts/b.html"]["rewrite_markup"]
    with sqlite3.connect(library / "data" / "coach.db") as db:
        stored = db.execute("SELECT request, markup, result FROM batch_items").fetchall()
    assert len(stored) == len(ITEMS)
    dump = repr(stored)
    # Phrases with spaces or braces: base64 ciphertext never contains one by chance.
    assert "head of procurement" not in dump and "{{first_name}}" not in dump
    # Without the key the next run stops with a one-line error instead of reviewing again.
    monkeypatch.delenv("COACH_STORE_KEY")
    result = run_cli([*COMMAND, "--out", "again.jsonl"])
    assert result.code == 2 and "COACH_STORE_KEY" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


def test_changed_file_is_reviewed_again_and_deleted_file_disappears(
    library: Path, run_cli: RunCli, reviews: Counter[str]
) -> None:
    assert run_cli([*COMMAND, "--out", "out.jsonl"]).code == 0
    before = _by_item(library / "out.jsonl")
    reviews.clear()
    changed = "Hi Sam, I loved your post on onboarding. How do you measure time-to-value?"
    (library / "drafts" / "a.txt").write_text(changed, encoding="utf-8")
    (library / "drafts" / "c.eml").unlink()
    result = run_cli([*COMMAND, "--out", "out.jsonl"])
    assert result.code == 0, result.err
    assert dict(reviews) == {changed: 1}
    after = _by_item(library / "out.jsonl")
    assert set(after) == ITEMS - {"drafts/c.eml"}
    assert after["drafts/a.txt"]["review"] != before["drafts/a.txt"]["review"]
    for key in ITEMS - {"drafts/c.eml", "drafts/a.txt"}:
        assert after[key] == before[key]


def test_fail_on_exits_1(library: Path, run_cli: RunCli) -> None:
    result = run_cli([*COMMAND, "--out", "out.jsonl", "--fail-on", "error"])
    assert result.code == 1, result.err
    assert set(_by_item(library / "out.jsonl")) == ITEMS  # the output is still written
    # without the one draft that fails an error-severity rule (items.jsonl j2): exit 0
    warnings_only = ["batch", "drafts", "rows.csv", "--column", "body", "--quiet"]
    assert run_cli([*warnings_only, "--out", "w.jsonl", "--fail-on", "error"]).code == 0
    assert run_cli([*warnings_only, "--out", "w.jsonl", "--fail-on", "warning"]).code == 1


def test_unreadable_item_exits_3_and_is_listed(library: Path, run_cli: RunCli) -> None:
    (library / "drafts" / "empty.txt").write_text("   \n", encoding="utf-8")
    (library / "drafts" / "latin1.txt").write_bytes("Caf\xe9 tomorrow?".encode("latin-1"))
    result = run_cli([*COMMAND, "--out", "out.jsonl"])
    assert result.code == 3, result.err
    rows = _by_item(library / "out.jsonl")
    assert set(rows) == ITEMS | {"drafts/empty.txt", "drafts/latin1.txt"}
    for key in ("drafts/empty.txt", "drafts/latin1.txt"):
        assert rows[key]["status"] == "failed" and rows[key]["error"]
        assert "review" not in rows[key]
    # still failing on a re-run: exit 3 again, the other items untouched
    assert run_cli([*COMMAND, "--out", "out.jsonl"]).code == 3
    (library / "drafts" / "empty.txt").write_text("Now a real draft, ok?", encoding="utf-8")
    (library / "drafts" / "latin1.txt").unlink()
    assert run_cli([*COMMAND, "--out", "out.jsonl"]).code == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["batch", "missing-folder", "--out", "o.jsonl"], "missing-folder"),
        (["batch", "rows.csv", "--out", "o.jsonl"], "--column"),
        (["batch", "drafts", "--out", "o.txt"], "--out"),
        (["batch", "rows.csv", "--column", "nope", "--out", "o.jsonl"], "nope"),
    ],
)
def test_bad_command_exits_2(library: Path, run_cli: RunCli, argv: list[str], message: str) -> None:
    result = run_cli(argv)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coach: error:"), result.err
    assert message in lines[0]
    assert not list(library.glob("o.*"))


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(
                conn.execute("SELECT count(*) FROM batch_items WHERE state = 'done'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def _drafts(tmp_path: Path, n: int) -> Path:
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    for i in range(n):
        (drafts / f"d{i:03d}.txt").write_text(f"Hi {{{{first_name}}}}, note {i}: can we talk?")
    return drafts


def _env(tmp_path: Path, llm: dict[str, str]) -> dict[str, str]:
    """This environment without coach's settings, plus the fake LLM and a store in tmp_path."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("COACH_") and k != "OPENAI_API_KEY"
    }
    env.update(llm, COACH_DATA_DIR=str(tmp_path / "data"))
    return env


def _llm_batch(drafts: Path, out: Path, *options: str) -> list[str]:
    """`coach batch DRAFTS --engine llm --out OUT --quiet OPTIONS`, to run as a process."""
    command = [sys.executable, "-m", "coach", "batch", str(drafts), "--engine", "llm"]
    return [*command, "--out", str(out), "--quiet", *options]


def test_sigint_exits_130_and_a_rerun_resumes(tmp_path: Path) -> None:
    n = 60
    drafts = _drafts(tmp_path, n)
    out = tmp_path / "out.jsonl"
    db = tmp_path / "data" / "coach.db"
    with counting_server(tmp_path / "fake.log", "--latency", "0.1") as fake:
        env = _env(tmp_path, fake.env())
        argv = _llm_batch(drafts, out, "--concurrency", "4")
        process = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: _done(db) >= 10 or process.poll() is not None, timeout=60)
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130, err
        assert b"interrupted" in err
        assert not out.exists() and not list(tmp_path.glob("*.partial"))
        done_at_stop = _done(db)
        assert 10 <= done_at_stop < n

        rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        rows = _by_item(out)
        assert set(rows) == {(drafts / f"d{i:03d}.txt").as_posix() for i in range(n)}
        assert all(r["status"] == "done" and r["review"]["engine"] == "llm" for r in rows.values())
        time.sleep(0.3)  # the server logs a request after its latency
        # nothing finished before the interruption was reviewed again; the reviews cut off
        # by the interruption (at most the concurrency) were done once more
        assert n <= fake.completions() <= n + 4


def test_workers_share_one_batch_and_review_each_item_once(tmp_path: Path) -> None:
    n = 80
    drafts = _drafts(tmp_path, n)
    out = tmp_path / "out.jsonl"
    db = tmp_path / "data" / "coach.db"
    with counting_server(tmp_path / "fake.log", "--latency", "0.2") as fake:
        env = _env(tmp_path, fake.env())
        argv = _llm_batch(drafts, out, "--concurrency", "8", "--workers", "2")
        run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr
        time.sleep(0.3)  # the server logs a request after its latency
        assert fake.completions() == n, "an item was reviewed twice (or not at all)"
    rows = _by_item(out)
    assert len(rows) == n and all(r["status"] == "done" for r in rows.values())
    with sqlite3.connect(db) as conn:
        owners = {
            str(owner): int(count)
            for owner, count in conn.execute(
                "SELECT lease_owner, COUNT(*) FROM batch_items GROUP BY 1"
            )
        }
        (attempts,) = conn.execute("SELECT MAX(attempts) FROM batch_items").fetchone()
    assert len(owners) == 2, owners  # both processes did part of the work
    assert attempts == 1
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "coach worker --batch" not in processes, "a helper process outlived the batch"


def _exited(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # a zombie: exited, waiting for whoever adopted it


def test_sigkill_of_coach_batch_stops_its_helpers_and_a_rerun_resumes_at_once(
    tmp_path: Path,
) -> None:
    n = 60
    drafts = _drafts(tmp_path, n)
    out = tmp_path / "out.jsonl"
    db = tmp_path / "data" / "coach.db"
    with counting_server(tmp_path / "fake.log", "--latency", "0.2") as fake:
        # The default 120 s lease: a re-run that waited for the killed leases would time out.
        env = _env(tmp_path, fake.env())
        argv = _llm_batch(drafts, out, "--concurrency", "4", "--workers", "2")
        log = tmp_path / "batch.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stderr=stderr)
        try:
            assert wait_for(lambda: _done(db) >= 10 or process.poll() is not None, timeout=60)
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            helpers = [int(pid) for pid in children.split()]
            assert len(helpers) == 1
            process.kill()
            process.wait()
            # The orphaned helper notices and stops (handing back its items).
            assert wait_for(lambda: all(map(_exited, helpers)), timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        started = time.monotonic()
        rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=90)
        assert rerun.returncode == 0, rerun.stderr
        assert time.monotonic() - started < 60  # not the 120 s lease
        rows = _by_item(out)
        assert len(rows) == n and all(r["status"] == "done" for r in rows.values())
        time.sleep(0.5)  # the server logs a request after its latency
        # Only the reviews cut off by the kill (at most the concurrency) were done again.
        assert n <= fake.completions() <= n + 4


def test_helpers_know_their_parent_and_how_many_share_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coach batch --workers 3` starts two `coach worker` helpers that stop with it and pace
    at a third of the budget from their first call (not after their first check-in)."""
    started: list[tuple[str, ...]] = []

    async def spawn(*argv: str, **_: Any) -> object:
        started.append(argv)
        return object()

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    options = run_module.BatchOptions(inputs=[], out=tmp_path / "o.jsonl", helpers=2)
    asyncio.run(run_module._start_helpers(options, "b1"))
    assert len(started) == 2
    for argv in started:
        assert argv[-6:] == ("--batch", "b1", "--parent", str(os.getpid()), "--peers", "3")

    seen: dict[str, Any] = {}

    class Spy:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.update(kwargs)

        async def run(self, **_: Any) -> None:
            return None

    monkeypatch.setattr(background_module, "BackgroundWorkers", Spy)
    monkeypatch.setenv("COACH_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--batch", "b1", "--once", "--peers", "3"])
    assert exit_.value.code in (0, None)
    assert seen["workers_at_least"] == 3 and seen["batch_id"] == "b1"
