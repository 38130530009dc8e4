"""`coach eval run`: the run directory, the gate's exit codes, --retry-errors, --max-cost,
recording with the fake server and offline replay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DEV_DATASET, RunCli

from tools.fake_openai.process import FakeServer, running

REPO = Path(__file__).resolve().parents[2]
SLICE = REPO / "evals" / "datasets" / "dev-slice30.jsonl"
RECORDINGS = REPO / "evals" / "recordings" / "fake-coach-dev-slice30"
THRESHOLDS = REPO / "evals" / "thresholds.yaml"
UNREACHABLE = "http://127.0.0.1:9/v1"
ROW_FIELDS = {
    "case_id", "repeat", "engine", "language", "kind", "tags", "expected", "predicted", "error",
    "findings", "rewrite", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "latency_ms",
    "cache_hit", "evidence", "rewrite_checks",
}  # fmt: skip


def rows_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rows.jsonl").read_text("utf-8").splitlines()]


def small_dataset(tmp_path: Path, n: int, source: Path = SLICE) -> Path:
    path = tmp_path / f"first{n}.jsonl"
    path.write_text("".join(source.read_text("utf-8").splitlines(True)[:n]), "utf-8")
    return path


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COACH_LLM_MODEL", "fake-coach")
    monkeypatch.setenv("COACH_LLM_BASE_URL", UNREACHABLE)
    monkeypatch.setenv("COACH_LLM_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("COACH_DATA_DIR", str(tmp_path / "data"))
    for name in ("COACH_LLM_API_KEY", "OPENAI_API_KEY", "COACH_CACHE_DIR", "COACH_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with running("--seed", "1") as server:
        yield server


def test_rules_run_writes_manifest_and_rows(tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "run"
    dataset = small_dataset(tmp_path, 12, DEV_DATASET)
    result = run_cli(["eval", "run", "--dataset", str(dataset), "--repeat", "2", "--out", str(out)])
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["engine"] == "rules" and manifest["model"] is None
    assert manifest["prompt"] is None and manifest["rulebook_version"]
    assert manifest["datasets"][0]["path"] == str(dataset)
    assert len(manifest["datasets"][0]["sha256"]) == 64
    assert manifest["parameters"]["repeat"] == 2
    assert {"concurrency", "max_cost"} <= set(manifest["parameters"])
    assert manifest["started"] <= manifest["ended"]
    assert "git_commit" in manifest
    rows = rows_of(out)
    assert len(rows) == 24
    assert all(set(r) == ROW_FIELDS for r in rows)
    assert sorted({(r["case_id"], r["repeat"]) for r in rows}) == sorted(
        (r["case_id"], k) for r in rows[::2] for k in (0, 1)
    )
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["repeats"]["stable_share"] == 1.0  # the rule engine is deterministic
    assert (out / "report.md").is_file()


def test_thresholds_pass_on_the_dev_set(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli(
        ["eval", "run", "--dataset", str(DEV_DATASET), "--thresholds", str(THRESHOLDS),
         "--out", str(tmp_path / "run")]
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "thresholds: pass" in result.out


def test_a_threshold_miss_exits_3(tmp_path: Path, run_cli: RunCli) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  per_rule:\n    give-first: {f1: 0.999}\n", "utf-8")
    dataset = small_dataset(tmp_path, 20, DEV_DATASET)
    args = ["eval", "run", "--dataset", str(dataset), "--out", str(tmp_path / "run")]
    result = run_cli([*args, "--thresholds", str(gate)])
    assert result.code == 3, result.err
    assert "give-first: F1" in result.err
    gate.write_text("rules: {per_rule: {give-first: {f1: 2}}}\n", "utf-8")
    assert run_cli([*args, "--thresholds", str(gate)]).code == 1  # a bad gate file


def test_retry_errors_reruns_only_the_errored_rows(tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "run"
    dataset = small_dataset(tmp_path, 5, DEV_DATASET)
    args = ["eval", "run", "--dataset", str(dataset), "--out", str(out)]
    assert run_cli(args).code == 0
    rows = rows_of(out)
    rows[1] |= {"error": "provider_error", "predicted": None}
    rows[0]["latency_ms"] = 12345.0  # a marker: a kept row is not re-run
    del rows[4]  # a missing row is run too
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    result = run_cli([*args, "--retry-errors"])
    assert result.code == 0, result.err
    again = rows_of(out)
    assert [r["case_id"] for r in again] == [
        json.loads(x)["id"] for x in dataset.read_text("utf-8").splitlines()
    ]
    assert again[0]["latency_ms"] == 12345.0
    assert again[1]["error"] is None and again[1]["predicted"]
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["parameters"]["retried_rows"] == 2


def test_retry_errors_needs_an_existing_run(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli(
        ["eval", "run", "--dataset", str(DEV_DATASET), "--retry-errors", "--out", str(tmp_path)]
    )
    assert result.code == 2 and "rows.jsonl" in result.err


def test_replay_from_committed_recordings_makes_no_http_call(
    tmp_path: Path, run_cli: RunCli, llm_env: None
) -> None:
    out = tmp_path / "run"
    result = run_cli(
        ["eval", "run", "--engine", "llm", "--replay", "--dataset", str(SLICE),
         "--cache-dir", str(RECORDINGS), "--out", str(out)]
    )  # fmt: skip
    assert result.code == 0, result.err
    rows = rows_of(out)
    assert len(rows) == 30
    # The base URL is unreachable: any call would have been an error row.
    assert all(r["error"] is None and r["cache_hit"] and r["cost_usd"] == 0 for r in rows)
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["model"] == "fake-coach"
    assert manifest["prompt"]["version"] == "v1" and manifest["prompt"]["digest"]


def test_a_replay_miss_exits_1_naming_the_case(
    tmp_path: Path, run_cli: RunCli, llm_env: None
) -> None:
    dataset = small_dataset(tmp_path, 3)
    first = json.loads(dataset.read_text("utf-8").splitlines()[0])["id"]
    result = run_cli(
        ["eval", "run", "--engine", "llm", "--replay", "--dataset", str(dataset), "--repeat", "2",
         "--concurrency", "1", "--cache-dir", str(RECORDINGS), "--out", str(tmp_path / "o")]
    )  # fmt: skip
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert f"case {first} (repeat 1)" in result.err


def test_record_then_rerun_costs_nothing_and_max_cost_stops(
    tmp_path: Path,
    run_cli: RunCli,
    llm_env: None,
    fake: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COACH_LLM_BASE_URL", fake.base_url)
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "prices:\n  fake-coach: {input: 1000.0, cached_input: 1000.0, output: 1000.0}\n", "utf-8"
    )
    monkeypatch.setenv("COACH_LLM_PRICES_FILE", str(prices))
    dataset = small_dataset(tmp_path, 4)
    cache = tmp_path / "cache"
    base = ["eval", "run", "--engine", "llm", "--dataset", str(dataset), "--cache-dir", str(cache)]

    # A budget of about two reviews: the first runs alone to give the estimate.
    out = tmp_path / "budget"
    result = run_cli([*base, "--max-cost", "5", "--concurrency", "4", "--out", str(out)])
    assert result.code == 0, result.err
    rows = rows_of(out)
    paid = [r for r in rows if r["error"] is None]
    assert 1 <= len(paid) < 4
    assert sum(r["cost_usd"] for r in paid) <= 5
    assert {r["error"] for r in rows if r["error"]} == {"budget"}

    # --retry-errors fills in the rest; the paid rows are kept.
    result = run_cli([*base, "--retry-errors", "--out", str(out)])
    assert result.code == 0, result.err
    assert all(r["error"] is None for r in rows_of(out))

    # Everything is recorded now: offline replay, at no cost.
    monkeypatch.setenv("COACH_LLM_BASE_URL", UNREACHABLE)
    result = run_cli([*base, "--replay", "--out", str(tmp_path / "replay")])
    assert result.code == 0, result.err
    replayed = rows_of(tmp_path / "replay")
    assert all(r["cache_hit"] and r["cost_usd"] == 0 and r["error"] is None for r in replayed)
    assert [r["predicted"] for r in replayed] == [r["predicted"] for r in rows_of(out)]
