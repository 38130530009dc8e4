"""`coach eval compare`: pairing, per-rule statistics, the margin gate, reports and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DEV_DATASET, RunCli

from coach.cli.main import main
from coach.evals.compare import compare_runs, load_run

MAIN = "no-cold-pitch"


def write_rows(directory: Path, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "rows.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return directory


def row(
    case_id: str,
    expected: str,
    predicted: str | None,
    repeat: int = 0,
    rule: str = "r",
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "repeat": repeat,
        "expected": {rule: expected},
        "predicted": None if predicted is None else {rule: predicted},
        "error": error,
    }


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory written by `coach eval run` on the dev set."""
    out = tmp_path_factory.mktemp("run") / "a"
    with pytest.raises(SystemExit) as exc:
        main(["eval", "run", "--dataset", str(DEV_DATASET), "--out", str(out)])
    assert exc.value.code == 0
    return out


def flipped_copy(run: Path, out: Path, rule: str, every: int) -> tuple[Path, list[str]]:
    """Run B as rows.jsonl: A's predictions, with every `every`-th right `fail` on `rule`
    turned into a `pass` (a regression). Returns B and the regressed case ids."""
    loaded = load_run(run)
    rows, regressed, seen = [], [], 0
    for case_id, case in sorted(loaded.cases.items()):
        for repeat, predicted in sorted(case.predicted.items()):
            predicted = dict(predicted)
            right_fail = case.expected.get(rule) == "fail" and predicted.get(rule) == "fail"
            if right_fail and repeat == 0:
                seen += 1
                if seen % every == 0:
                    predicted[rule] = "pass"
                    regressed.append(case_id)
            rows.append(
                {
                    "case_id": case_id,
                    "repeat": repeat,
                    "expected": case.expected,
                    "predicted": predicted,
                    "error": None,
                }
            )
    return write_rows(out, rows), regressed


# --- reading and pairing ---------------------------------------------------------------------


def test_small_comparison_by_hand(tmp_path: Path) -> None:
    a = write_rows(
        tmp_path / "a",
        [
            # c1: fail, right in A on all three repeats; B gets two of three wrong → regression.
            *(row("c1", "fail", "fail", k) for k in range(3)),
            # c2: pass, wrong in A (majority fail), right in B → improvement.
            row("c2", "pass", "fail", 0),
            row("c2", "pass", "fail", 1),
            row("c2", "pass", "pass", 2),
            row("c3", "fail", "fail"),
            row("only-a", "fail", "fail"),
        ],
    )
    b = write_rows(
        tmp_path / "b",
        [
            row("c1", "fail", "fail", 0),
            row("c1", "fail", "pass", 1),
            row("c1", "fail", "not_applicable", 2),
            row("c2", "pass", "pass", 0),
            row("c3", "fail", None, 0, error="timeout"),
            row("c3", "fail", "fail", 1),
            row("c4", "pass", None, 0, error="rate_limited"),  # errored everywhere: not paired
            row("only-b", "pass", "pass"),
        ],
    )
    comparison = compare_runs(a, b, margin=None, resamples=100)
    assert comparison.paired == 3
    assert comparison.only_in_a == ["only-a"]
    assert comparison.only_in_b == ["c4", "only-b"]
    assert (comparison.run_a.errored_rows, comparison.run_b.errored_rows) == (0, 2)
    (rule,) = comparison.rules
    assert (rule.rule_id, rule.n, rule.b, rule.c) == ("r", 3, 1, 1)
    assert rule.p == 1.0
    # A: c1 tp 1, c2 fp 2/3, c3 tp 1 → F1 = 4 / (4 + 2/3). B: c1 tp 1/3, fn 2/3; c3 tp 1.
    assert rule.bootstrap.f1_a == pytest.approx(4 / (4 + 2 / 3))
    assert rule.bootstrap.f1_b == pytest.approx((8 / 3) / (8 / 3 + 2 / 3))
    assert [(f.case_id, f.regression) for f in rule.flips] == [("c1", True), ("c2", False)]
    assert rule.stable_a == pytest.approx(2 / 3)
    assert rule.warning is not None and "too few to tell" in rule.warning
    assert comparison.passed
    data = comparison.as_dict()
    assert data["rules"]["r"]["flips"][0] == {
        "case_id": "c1",
        "expected": "fail",
        "a": "fail",
        "b": "not fail",
        "kind": "regression",
    }
    assert data["errored_rows"] == {"a": 0, "b": 2}
    json.dumps(data)
    md = comparison.to_markdown()
    assert "| r | 3 |" in md and "−`c1`, +`c2`" in md and "Gate: none" in md


def test_a_run_of_eval_run_is_read(run_a: Path) -> None:
    loaded = load_run(run_a)
    assert len(loaded.cases) == 213
    assert loaded.errored_rows == 0
    assert all(list(case.predicted) == [0] for case in loaded.cases.values())


def test_legacy_predictions_are_repeat_zero(tmp_path: Path) -> None:
    (tmp_path / "predictions.jsonl").write_text(
        json.dumps({"id": "c1", "expected": {"r": "fail"}, "predicted": {"r": "pass"}})
        + "\n"
        + json.dumps({"id": "c2", "expected": {"r": "pass"}, "predicted": {"r": "pass"}})
        + "\n",
        "utf-8",
    )
    loaded = load_run(tmp_path)
    assert loaded.source == "predictions.jsonl"
    assert {k: c.predicted for k, c in loaded.cases.items()} == {
        "c1": {0: {"r": "pass"}},
        "c2": {0: {"r": "pass"}},
    }


def test_identical_runs(run_a: Path) -> None:
    comparison = compare_runs(run_a, run_a, margin=0.02)
    assert comparison.paired == 213
    assert comparison.passed
    for rule in comparison.rules:
        boot = rule.bootstrap
        assert boot.delta == 0.0
        assert boot.low <= 0.0 <= boot.high
        assert (rule.b, rule.c, rule.p, rule.p_holm, rule.flips) == (0, 0, 1.0, 1.0, [])


def test_a_clearly_worse_b_fails_the_gate(run_a: Path, tmp_path: Path) -> None:
    b, regressed = flipped_copy(run_a, tmp_path / "b", MAIN, every=3)
    assert len(regressed) >= 10
    comparison = compare_runs(run_a, b, margin=0.02)
    assert not comparison.passed
    assert comparison.gate_failures == [MAIN]
    rule = next(r for r in comparison.rules if r.rule_id == MAIN)
    assert (rule.b, rule.c) == (len(regressed), 0)
    assert rule.bootstrap.delta < 0 and rule.bootstrap.high < 0
    assert rule.p < 0.01 and rule.p_holm <= min(1.0, rule.p * len(comparison.rules))
    assert [f.case_id for f in rule.regressions] == sorted(regressed)
    others = [r for r in comparison.rules if r.rule_id != MAIN]
    assert all(r.bootstrap.delta == 0 and not r.below_margin for r in others)


def test_unreadable_runs(tmp_path: Path) -> None:
    from coach.errors import InputError

    with pytest.raises(InputError, match="not a run directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no rows\.jsonl or predictions\.jsonl"):
        load_run(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "rows.jsonl").write_text(json.dumps(row("c", "fail", "fail")) + "\n{oops\n")
    with pytest.raises(InputError, match=r"rows\.jsonl:2: invalid JSON"):
        load_run(bad)
    (bad / "rows.jsonl").write_text(json.dumps(row("c", "maybe", "fail")) + "\n")
    with pytest.raises(InputError, match=r"rows\.jsonl:1: \"expected\""):
        load_run(bad)


# --- the command -------------------------------------------------------------------------------


def test_cli_identical_runs_pass_and_write_reports(
    run_a: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    out = tmp_path / "out"
    argv = ["eval", "compare", str(run_a), str(run_a), "--margin", "0.02", "--out", str(out)]
    result = run_cli(argv)
    assert result.code == 0, result.err
    assert "gate: pass" in result.out and MAIN in result.out
    data = json.loads((out / "compare.json").read_text("utf-8"))
    assert data["gate"] == {"applied": True, "passed": True, "failing_rules": []}
    assert data["rules"][MAIN]["delta_f1"] == 0
    assert "Gate: **pass**" in (out / "compare.md").read_text("utf-8")


def test_cli_worse_b_exits_3(run_a: Path, tmp_path: Path, run_cli: RunCli) -> None:
    b, _ = flipped_copy(run_a, tmp_path / "b", MAIN, every=3)
    result = run_cli(["eval", "compare", str(run_a), str(b), "--margin", "0.02"])
    assert result.code == 3
    assert "gate: FAIL" in result.out
    assert f"gate failed: ΔF1 lower bound below −0.02 for {MAIN}" in result.err
    # Without a margin there is no gate.
    assert run_cli(["eval", "compare", str(run_a), str(b)]).code == 0


def test_cli_json_and_markdown(run_a: Path, tmp_path: Path, run_cli: RunCli) -> None:
    b, regressed = flipped_copy(run_a, tmp_path / "b", MAIN, every=4)
    result = run_cli(["eval", "compare", str(run_a), str(b), "--format", "json"])
    assert result.code == 0
    data = json.loads(result.out)
    flips = data["rules"][MAIN]["flips"]
    assert [f["case_id"] for f in flips] == sorted(regressed)
    assert data["bootstrap"] == {"resamples": 2000, "seed": 0, "unit": "case"}
    result = run_cli(["eval", "compare", str(run_a), str(b), "--format", "markdown"])
    assert result.code == 0
    assert result.out.startswith("# Eval compare")
    assert f"**{MAIN}** ({len(regressed)} regressed, 0 improved)" in result.out


def test_cli_unreadable_run_exits_1(run_a: Path, tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli(["eval", "compare", str(run_a), str(tmp_path / "nope")])
    assert result.code == 1
    assert result.err.strip() == f"coach: error: {tmp_path / 'nope'}: not a run directory"
    assert result.out == ""


def test_cli_help_documents_exit_codes(run_cli: RunCli) -> None:
    result = run_cli(["eval", "compare", "--help"])
    assert result.code == 0
    assert "Exit codes:" in result.out
    assert "3  the gate failed" in result.out
