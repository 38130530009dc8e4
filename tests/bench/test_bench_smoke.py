"""Smoke test of the bench scripts, so that they do not rot: each runs through
bench/run_all.py in quick mode (tiny inputs, one run, side by side) and its markdown has the
expected headers and numbers that parse. Figures are not checked: quick mode measures nothing.

proselint is an optional extra (CI installs `.[dev]` only): without it the engine bench
reports ours alone, and the ratio test is skipped.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = ("bench_peer", "bench_api", "bench_layers", "bench_sse")
_NUMBER = re.compile(r"^-?[\d,]*\.?\d+")


def _number(cell: str) -> float:
    match = _NUMBER.match(cell.strip())
    assert match, f"not a number: {cell!r}"
    return float(match.group().replace(",", ""))


def _rows(markdown: str, first: str) -> list[list[str]]:
    """The cells of every table row whose first cell starts with `first`."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0].startswith(first):
                rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("bench")
    processes = {
        name: subprocess.Popen(
            [
                *(sys.executable, str(BENCH / "run_all.py"), "--quick", "--runs", "1"),
                *("--only", name, "--out", str(out / f"{name}.md")),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCRIPTS
    }
    results = {}
    for name, process in processes.items():
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, f"{name}: {err[-3000:]}"
        results[name] = (out / f"{name}.md").read_text("utf-8")
    return results


@pytest.mark.parametrize("name", SCRIPTS)
def test_results_header(outputs: dict[str, str], name: str) -> None:
    text = outputs[name]
    assert text.startswith("# Benchmarks\n")
    assert "quick mode" in text
    for header in ("- Date:", "- Machine:", "- Python", "- Versions:", "## Headlines"):
        assert header in text
    assert "FAILED" not in text


def test_peer_section(outputs: dict[str, str]) -> None:
    text = outputs["bench_peer"]
    assert "## Offline engine vs proselint" in text
    rows = [r for r in _rows(text, "") if len(r) == 6 and r[1] in ("ours", "ours + rewrite")]
    assert {r[0] for r in rows} == {"dev set as is", "1,000 chars", "10,000 chars"}
    for row in rows:
        assert _number(row[3]) > 0 and _number(row[4]) > 0 and _number(row[5]) > 0
    (memory,) = [r for r in _rows(text, "ours") if len(r) == 3]
    assert _number(memory[1]) >= 0 and _number(memory[2]) > 0  # quick: in process


def test_peer_ratio_with_proselint(outputs: dict[str, str]) -> None:
    pytest.importorskip("proselint")
    text = outputs["bench_peer"]
    ratios = _rows(text, "ours / proselint docs/s")
    assert len(ratios) >= 3  # in the headlines and in the section
    for row in ratios:
        assert _number(row[1]) > 0 and row[2] == ">= 2x"
    assert any(len(r) == 3 and r[0] == "proselint" for r in _rows(text, "proselint"))


def test_api_section(outputs: dict[str, str]) -> None:
    text = outputs["bench_api"]
    assert "## API vs framework ceiling" in text
    servers = (
        "ceiling (bare Litestar echo)",
        "coach, auth off",
        "coach, auth + rate limit + metrics",
        "coach, auth off, the same draft again (sentence memo on)",
        "coach's API alone, auth off (a review precomputed, no engine)",
    )
    for server in servers:
        (row,) = [r for r in _rows(text, server) if len(r) == 5 and r[0] == server]
        assert _number(row[1]) > 0 and _number(row[2]) > 0 and _number(row[3]) > 0
        assert row[4] == "0"  # no errors, no 429s
    ratios = _rows(text, "coach, auth off / ceiling") + _rows(text, "coach, auth + rate limit")
    assert ratios and all(_number(r[1]) > 0 for r in ratios if len(r) == 4)


def test_layers_section(outputs: dict[str, str]) -> None:
    text = outputs["bench_layers"]
    assert "## Where a request's time goes (in process)" in text
    apps = (
        "bare Litestar echo",
        "framework + coach's request and response models",
        "coach's API alone (the review precomputed)",
        "coach (each draft unseen)",
    )
    for app in apps:
        (row,) = [r for r in _rows(text, app) if len(r) == 3]
        assert _number(row[1]) > 0 and _number(row[2]) > 0
    (echo,) = [r for r in _rows(text, apps[0]) if len(r) == 3]
    assert echo[2] == "1.00x"  # every app is timed against the echo of the same run
    parts = ("the framework with coach's models", "coach's layers", "the review")
    for part in parts:
        (row,) = _rows(text, part)
        assert _number(row[1]) != 0 and _number(row[2]) != 0


def test_sse_section(outputs: dict[str, str]) -> None:
    text = outputs["bench_sse"]
    assert "## Streaming: time to first event" in text
    assert "rules then review" in text
    for what in ("first event (`rules`)", "LLM event (`review`)", "plain `POST /v1/reviews`"):
        (row,) = _rows(text, what)
        assert _number(row[1]) > 0
    (first,) = _rows(text, "first event (`rules`)")
    (llm,) = _rows(text, "LLM event (`review`)")
    assert _number(first[1]) < _number(llm[1])


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optional_script_hook(tmp_path: Path) -> None:
    """bench_batch.py (another engineer's) is run when it exists: `run(*, quick, runs)`
    returning a common.Section; a missing file is skipped, a failing one is reported."""
    run_all = _run_all()
    good = tmp_path / "bench_batch.py"
    good.write_text(
        "from bench.common import Headline, Section, Stat\n"
        "def run(*, quick: bool, runs: int) -> Section:\n"
        "    ratio = Headline('batch / single', Stat.of([2.0] * runs), 'x', 1.0)\n"
        "    return Section('Batch', f'quick={quick} runs={runs}', [ratio])\n"
    )
    section = run_all.run_script(good, quick=True, runs=3)
    assert section.title == "Batch" and not section.failed
    report = run_all.report([section], quick=True, runs=3, command="x")
    assert "## Batch\n\nquick=True runs=3" in report
    assert "| batch / single | 2.00x | >= 1x | met |" in report
    assert run_all.run_script(tmp_path / "missing.py", quick=True, runs=1) is None
    bad = tmp_path / "bench_bad.py"
    bad.write_text("def run(*, quick: bool, runs: int) -> None:\n    raise ValueError('boom')\n")
    failed = run_all.run_script(bad, quick=True, runs=1)
    assert failed.failed and "ValueError: boom" in failed.body
