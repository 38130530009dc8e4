"""Regression gate: the rule engine's headline numbers on the dev and held-out sets.

Target from the issue: macro-F1 >= 0.85 and mean accuracy >= 0.85 over the four main rules on
the dev set; the held-out set (not tuned on) must stay >= 0.83. Do not lower these bars to make
a change pass: fix the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coach.evals.dataset import load_cases
from coach.evals.metrics import MAIN_RULES
from coach.evals.runner import EvalResult, run_eval
from coach.models import Kind, ReviewRequest
from coach.rulebook import BUILTIN_RULE_IDS
from coach.service import ReviewService

DATASETS = Path(__file__).resolve().parents[2] / "evals" / "datasets"
SERVICE = ReviewService()


def evaluate(name: str) -> EvalResult:
    path = DATASETS / name
    cases = load_cases([path], known_rules=set(BUILTIN_RULE_IDS))
    return run_eval(cases, SERVICE, engine="rules", datasets=[str(path)])


@pytest.mark.parametrize(
    ("dataset", "bar"),
    [pytest.param("dev.jsonl", 0.85, id="dev"), pytest.param("holdout.jsonl", 0.83, id="holdout")],
)
def test_macro_f1_and_mean_accuracy_over_main_rules(dataset: str, bar: float) -> None:
    result = evaluate(dataset)
    assert set(MAIN_RULES) <= set(result.table), "every main rule is labelled"
    for rule in MAIN_RULES:
        assert result.table[rule].n == len(result.rows), f"{rule} is not labelled on every case"
    headline = result.headline
    per_rule = {
        r: (round(result.table[r].f1, 3), round(result.table[r].accuracy, 3)) for r in MAIN_RULES
    }
    assert headline["f1"] >= bar, f"{dataset}: macro-F1 {headline['f1']} < {bar}; {per_rule}"
    assert headline["accuracy"] >= bar, (
        f"{dataset}: mean accuracy {headline['accuracy']} < {bar}; {per_rule}"
    )


def test_dev_set_shape_matches_the_issue() -> None:
    cases = load_cases([DATASETS / "dev.jsonl"])
    assert len(cases) >= 200
    assert sum(c.language is not None and c.language.value == "he" for c in cases) >= 50
    assert sum(c.kind is Kind.meeting_notes for c in cases) >= 40
    assert sum(c.kind is Kind.template for c in cases) >= 30


def test_engine_is_deterministic() -> None:
    cases = load_cases([DATASETS / "dev.jsonl"])[::7]
    extra = [
        ReviewRequest(text="היי 👋 המערכת שלנו חוסכת לך זמן. מתי נוח לך לדמו?"),
        ReviewRequest(
            text="Hi {{first_name}}, our platform helps {{company}}.", kind=Kind.template
        ),
    ]
    requests = [c.request() for c in cases] + extra
    first = [SERVICE.review_sync(r).model_dump_json() for r in requests]
    # A fresh service (fresh engine, same rulebook) and a second pass give the same JSON.
    second = [ReviewService().review_sync(r).model_dump_json() for r in requests]
    third = [SERVICE.review_sync(r).model_dump_json() for r in requests]
    assert first == second == third
    assert all(json.loads(j)["engine"] == "rules" for j in first)
