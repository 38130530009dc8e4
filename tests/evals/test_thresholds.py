"""The eval gate: evals/thresholds.yaml parses, and a miss is reported per rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from coach.errors import ConfigError
from coach.evals.metrics import Confusion
from coach.evals.runner import EvalResult
from coach.evals.thresholds import Minimums, Thresholds, check, load_thresholds

REPO = Path(__file__).resolve().parents[2]


def result(**table: Confusion) -> EvalResult:
    return EvalResult("rules", "x", [], [], dict(table), {}, 0.0)


def test_the_committed_file_gates_the_rule_engine_only() -> None:
    gate = load_thresholds(REPO / "evals" / "thresholds.yaml", "rules")
    assert gate is not None
    assert {"no-cold-pitch", "give-first", "interest-in-them", "quality-over-quantity"} <= set(
        gate.per_rule
    )
    assert gate.macro_main.f1 is not None and gate.macro_main.accuracy is not None
    assert load_thresholds(REPO / "evals" / "thresholds.yaml", "llm") is None


def test_check_names_each_miss() -> None:
    # give-first: tp 8 fp 2 fn 0 tn 10 -> F1 8/9 = 0.8889, accuracy 0.9
    run = result(**{"give-first": Confusion(tp=8, fp=2, fn=0, tn=10)})
    gate = Thresholds(
        per_rule={
            "give-first": Minimums(f1=0.9, accuracy=0.9),
            "no-cold-pitch": Minimums(f1=0.5),
        }
    )
    assert check(run, gate) == [
        "give-first: F1 0.8889 < 0.9000",
        "no-cold-pitch: no F1 (rule not in the results)",
    ]
    assert check(run, Thresholds(per_rule={"give-first": Minimums(f1=0.88)})) == []


def test_macro_minimums() -> None:
    run = result(**{"give-first": Confusion(tp=1, fp=1, fn=0, tn=0)})  # main-rule macro over 1
    misses = check(run, Thresholds(macro_main=Minimums(accuracy=0.6)))
    assert misses == ["four main rules (macro): accuracy 0.5000 < 0.6000"]


@pytest.mark.parametrize(
    "text",
    ["- a list\n", "rules: {per_rule: {give-first: {f1: 1.5}}}\n", "rules: {typo: 1}\n", "{"],
)
def test_a_bad_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError, match="thresholds"):
        load_thresholds(path, "rules")
