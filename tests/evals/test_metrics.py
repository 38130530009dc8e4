"""Per-rule confusion matrices and macro averages, on hand-computed examples."""

from __future__ import annotations

import pytest

from coach.evals.metrics import MAIN_RULES, Confusion, Scored, macro, per_rule


def confusion(tp: int = 0, fp: int = 0, fn: int = 0, tn: int = 0) -> Confusion:
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


def test_add_fills_the_right_cell() -> None:
    c = Confusion()
    c.add(expected_fail=True, predicted_fail=True)
    c.add(expected_fail=False, predicted_fail=True)
    c.add(expected_fail=False, predicted_fail=True)
    c.add(expected_fail=True, predicted_fail=False)
    c.add(expected_fail=False, predicted_fail=False)
    c.add(expected_fail=False, predicted_fail=False)
    c.add(expected_fail=False, predicted_fail=False)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 2, 1, 3)
    assert c.n == 7


def test_precision_recall_f1_accuracy() -> None:
    c = confusion(tp=6, fp=2, fn=3, tn=9)
    assert c.precision == pytest.approx(6 / 8)
    assert c.recall == pytest.approx(6 / 9)
    assert c.f1 == pytest.approx(2 * (6 / 8) * (6 / 9) / (6 / 8 + 6 / 9))  # = 12/17
    assert c.f1 == pytest.approx(12 / 17)
    assert c.accuracy == pytest.approx(15 / 20)


def test_perfect_and_all_wrong() -> None:
    perfect = confusion(tp=3, tn=2)
    assert (perfect.precision, perfect.recall, perfect.f1, perfect.accuracy) == (1, 1, 1, 1)
    wrong = confusion(fp=2, fn=3)
    assert (wrong.precision, wrong.recall, wrong.f1, wrong.accuracy) == (0, 0, 0, 0)


def test_failing_everything_on_a_balanced_set_flatters_f1() -> None:
    c = confusion(tp=50, fp=50)
    assert c.f1 == pytest.approx(2 / 3)
    assert c.accuracy == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("c", "precision", "recall", "f1", "accuracy"),
    [
        (confusion(), 0.0, 0.0, 0.0, 0.0),  # empty
        (confusion(tn=4), 0.0, 0.0, 0.0, 1.0),  # no fail predicted or labelled
        (confusion(fn=2, tn=1), 0.0, 0.0, 0.0, 1 / 3),  # nothing predicted fail
        (confusion(fp=2, tn=2), 0.0, 0.0, 0.0, 0.5),  # nothing labelled fail
    ],
)
def test_zero_division_gives_zero(
    c: Confusion, precision: float, recall: float, f1: float, accuracy: float
) -> None:
    assert c.precision == precision
    assert c.recall == recall
    assert c.f1 == f1
    assert c.accuracy == pytest.approx(accuracy)


def test_as_dict_rounds_to_four_places() -> None:
    d = confusion(tp=1, fp=2, fn=0, tn=0).as_dict()
    assert d == {
        "n": 3,
        "tp": 1,
        "fp": 2,
        "fn": 0,
        "tn": 0,
        "precision": 0.3333,
        "recall": 1.0,
        "f1": 0.5,
        "accuracy": 0.3333,
    }


ROWS = [
    Scored("r1", {"a": "fail", "b": "pass"}, {"a": "fail", "b": "fail"}),
    Scored("r2", {"a": "fail", "b": "fail"}, {"a": "not_applicable", "b": "fail"}),
    Scored("r3", {"a": "pass"}, {"a": "pass", "b": "fail"}),  # b unlabelled: ignored
    Scored("r4", {"a": "pass", "b": "pass"}, {"a": "fail", "b": "not_applicable"}),
]


def test_per_rule_on_a_hand_computed_table() -> None:
    table = per_rule(ROWS)
    assert list(table) == ["a", "b"]
    a, b = table["a"], table["b"]
    assert (a.tp, a.fp, a.fn, a.tn) == (1, 1, 1, 1)
    assert (b.tp, b.fp, b.fn, b.tn) == (1, 1, 0, 1)
    assert a.f1 == pytest.approx(0.5)
    assert b.precision == pytest.approx(0.5)
    assert b.recall == pytest.approx(1.0)
    assert b.f1 == pytest.approx(2 / 3)
    assert b.accuracy == pytest.approx(2 / 3)


def test_not_applicable_and_missing_predictions_count_as_not_fail() -> None:
    rows = [
        Scored("x1", {"r": "fail"}, {"r": "not_applicable"}),
        Scored("x2", {"r": "fail"}, {}),
        Scored("x3", {"r": "pass"}, {"r": "not_applicable"}),
        Scored("x4", {"r": "pass"}, {}),
    ]
    c = per_rule(rows)["r"]
    assert (c.tp, c.fp, c.fn, c.tn) == (0, 0, 2, 2)


def test_per_rule_only_scores_labelled_rules() -> None:
    table = per_rule([Scored("x", {}, {"a": "fail", "b": "pass"})])
    assert table == {}


def test_per_rule_is_sorted_by_rule_id() -> None:
    rows = [Scored("x", {"zeta": "pass", "alpha": "fail", "mu": "pass"}, {})]
    assert list(per_rule(rows)) == ["alpha", "mu", "zeta"]


def test_macro_averages_f1_and_accuracy() -> None:
    result = macro(per_rule(ROWS))
    assert result["f1"] == pytest.approx(round((0.5 + 2 / 3) / 2, 4))
    assert result["accuracy"] == pytest.approx(round((0.5 + 2 / 3) / 2, 4))
    assert result == {"f1": 0.5833, "accuracy": 0.5833}


def test_macro_over_chosen_rules_ignores_missing_ones() -> None:
    table = per_rule(ROWS)
    assert macro(table, ["a"]) == {"f1": 0.5, "accuracy": 0.5}
    assert macro(table, ["b", "not-labelled"]) == {"f1": 0.6667, "accuracy": 0.6667}


def test_macro_skips_rules_without_cases() -> None:
    table = {"a": confusion(tp=1, tn=1), "empty": confusion()}
    assert macro(table) == {"f1": 1.0, "accuracy": 1.0}


def test_macro_of_nothing_is_zero() -> None:
    assert macro({}) == {"f1": 0.0, "accuracy": 0.0}
    assert macro({"a": confusion()}) == {"f1": 0.0, "accuracy": 0.0}
    assert macro({"a": confusion(tp=1)}, ["b"]) == {"f1": 0.0, "accuracy": 0.0}


def test_main_rules_are_the_four_main_rules() -> None:
    assert MAIN_RULES == (
        "no-cold-pitch",
        "give-first",
        "interest-in-them",
        "quality-over-quantity",
    )
