"""The harness scores exactly what a model answers: a fake model that returns the gold labels
scores 1.0, and one that flips known labels scores what the confusion matrix says by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coach.evals.dataset import Case, load_cases
from coach.evals.runner import build_result, run_rows
from coach.models import Review, ReviewRequest, RuleResult, Severity, Suggestions, Verdict

ROOT = Path(__file__).resolve().parents[2]
RULE = "no-cold-pitch"


class LabelModel:
    """Answers each draft with the labels of its case, flipped for the ids in `flip`."""

    name = "oracle"

    def __init__(self, cases: list[Case], flip: frozenset[str] = frozenset()) -> None:
        self.by_text = {c.text: c for c in cases}
        self.flip = flip

    async def review(self, request: ReviewRequest, *, rewrite: bool = True) -> Review:
        case = self.by_text[request.text]
        results = []
        for rule_id, label in case.expected.items():
            fail = label == "fail"
            if case.id in self.flip:
                fail = not fail
            results.append(
                RuleResult(
                    rule_id=rule_id,
                    verdict=Verdict.failed if fail else Verdict.passed,
                    confidence=1.0,
                    reason="label",
                    severity=Severity.warning,
                )
            )
        return Review(
            rules=results,
            findings=[],
            summary="",
            score=100,
            suggestions=Suggestions(),
            rewrite=None,
            engine="llm",
            rulebook_version="test",
            language=request.language or "en",
            kind=request.kind,
        )


def _score(cases: list[Case], model: LabelModel) -> dict[str, object]:
    rows = asyncio.run(run_rows([(c, 0) for c in cases], model, engine="llm", concurrency=3))
    result = build_result(rows, engine="llm", rulebook_version="test", datasets=[], seconds=0.0)
    return result.as_dict()


def test_gold_labels_score_one() -> None:
    cases = load_cases([ROOT / "evals" / "datasets" / "dev.jsonl"])
    report = _score(cases, LabelModel(cases))
    rules = report["rules"]
    assert isinstance(rules, dict)
    for rule_id, entry in rules.items():
        assert entry["f1"] == 1.0 and entry["accuracy"] == 1.0, rule_id
    assert report["macro_main"] == {"f1": 1.0, "accuracy": 1.0}


def _case(case_id: str, label: str) -> Case:
    return Case.model_validate(
        {
            "id": case_id,
            "kind": "message",
            "text": f"Draft number {case_id}.",
            "expected": {RULE: label},
        }
    )


def test_flipped_labels_score_as_computed_by_hand() -> None:
    # 4 fails, 6 passes. Flip one fail (→ a false negative) and two passes (→ false positives):
    # tp 3, fn 1, fp 2, tn 4: precision 3/5, recall 3/4, F1 = 2·0.6·0.75/1.35 = 2/3, accuracy 7/10.
    cases = [_case(f"f{i}", "fail") for i in range(4)] + [_case(f"p{i}", "pass") for i in range(6)]
    entry = _score(cases, LabelModel(cases, flip=frozenset({"f0", "p0", "p1"})))["rules"][RULE]  # type: ignore[index]
    assert (entry["tp"], entry["fn"], entry["fp"], entry["tn"]) == (3, 1, 2, 4)
    assert entry["precision"] == 0.6 and entry["recall"] == 0.75
    assert entry["f1"] == round(2 / 3, 4) and entry["accuracy"] == 0.7
