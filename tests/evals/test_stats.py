"""Evaluation statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from coach.evals.metrics import Confusion
from coach.evals.stats import (
    PairedCase,
    bootstrap_delta_f1,
    cohen_kappa,
    f1_fail,
    flip_rate,
    holm,
    is_stable,
    majority,
    mcnemar_exact,
    percentile,
    wilson_interval,
)

# --- Wilson ------------------------------------------------------------------------------------


def test_wilson_8_of_10() -> None:
    # p = 0.8, z² = 3.8416: centre (0.8 + 0.19208) / 1.38416 = 0.71673,
    # half-width 1.96 · sqrt(0.016 + 0.009604) / 1.38416 = 0.22658.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(3.8416 / 13.8416, abs=1e-9)  # z²/(n + z²)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0)
    assert low == pytest.approx(10 / 13.8416, abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


# --- percentile --------------------------------------------------------------------------------


def test_percentile_interpolates_linearly() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85: 3 + 0.85 · (4 − 3)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- McNemar -----------------------------------------------------------------------------------


def test_mcnemar_b1_c9() -> None:
    # P(X <= 1) for Binomial(10, 1/2) = (1 + 10) / 1024; two-sided: 22 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(0.0215, abs=1e-4)
    assert mcnemar_exact(1, 9) == 22 / 1024
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)


def test_mcnemar_edges() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0  # capped
    assert mcnemar_exact(0, 6) == 2 / 64
    assert 0.0 <= mcnemar_exact(0, 2000) < 1e-300  # big n: exact integers, no overflow
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


# --- Holm --------------------------------------------------------------------------------------


def test_holm_step_down_monotone_and_capped() -> None:
    # sorted: a 0.01 · 3 = 0.03; c 0.03 · 2 = 0.06; b 0.04 · 1 = 0.04 → raised to 0.06.
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert list(adjusted) == ["a", "b", "c"]
    assert holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}
    assert holm({"only": 0.2}) == {"only": 0.2}
    assert holm({}) == {}


# --- Cohen's kappa -----------------------------------------------------------------------------


def test_kappa_on_a_two_by_two_table() -> None:
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15: po = 0.7, pe = 0.5·0.6 + 0.5·0.4 = 0.5.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_kappa_edges() -> None:
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert cohen_kappa([("a", "a")] * 3) == 1.0  # pe = 1: perfect agreement
    with pytest.raises(ValueError):
        cohen_kappa([])


# --- F1 and the paired bootstrap -------------------------------------------------------------


def test_f1_fail_matches_metrics() -> None:
    pairs = [(True, True)] * 6 + [(False, True)] * 2 + [(True, False)] * 3 + [(False, False)] * 9
    c = Confusion()
    for expected, predicted in pairs:
        c.add(expected, predicted)
    assert f1_fail(pairs) == pytest.approx(c.f1) == pytest.approx(12 / 17)
    assert f1_fail([(False, False)]) == 0.0


HAND: list[PairedCase] = [
    (True, [True], [True]),
    (True, [True], [False]),
    (False, [False], [True]),
    (False, [False], [False]),
]


def test_bootstrap_point_estimate_by_hand() -> None:
    # A: tp 2 → F1 1. B: tp 1, fp 1, fn 1 → 2 / (2 + 2) = 0.5.
    result = bootstrap_delta_f1(HAND, resamples=200)
    assert (result.f1_a, result.f1_b, result.delta) == (1.0, 0.5, -0.5)
    assert result.low <= result.delta <= result.high
    assert -1.0 <= result.low <= result.high <= 0.0


def test_bootstrap_repeats_weigh_one_case() -> None:
    # Two of three repeats say fail: tp 2/3, fn 1/3; the other case: fp 1.
    cases: list[PairedCase] = [(True, [True, True, False], [True]), (False, [True], [False])]
    result = bootstrap_delta_f1(cases, resamples=50)
    assert result.f1_a == pytest.approx((4 / 3) / (4 / 3 + 1 + 1 / 3))
    assert result.f1_b == 1.0


def test_bootstrap_is_deterministic() -> None:
    cases: list[PairedCase] = [(i % 2 == 0, [i % 3 == 0], [i % 5 != 0]) for i in range(60)]
    first = bootstrap_delta_f1(cases, seed=7)
    assert bootstrap_delta_f1(cases, seed=7) == first
    assert bootstrap_delta_f1(cases, seed=8) != first
    assert first.resamples == 2000
    assert first.low < first.delta < first.high


def test_bootstrap_resamples_cases_not_repeats() -> None:
    base: list[PairedCase] = [(i % 2 == 0, [i % 3 == 0], [i % 4 == 0]) for i in range(40)]
    # The same cases with every verdict repeated three times: the unit is still the case, so
    # the same draws give exactly the same resamples.
    tripled: list[PairedCase] = [(e, list(a) * 3, list(b) * 3) for e, a, b in base]
    assert bootstrap_delta_f1(tripled, seed=3) == bootstrap_delta_f1(base, seed=3)
    # Three independent copies of each case would be 120 units: a narrower interval.
    copies = [case for case in base for _ in range(3)]
    spread = bootstrap_delta_f1(copies, seed=3)
    one = bootstrap_delta_f1(base, seed=3)
    assert spread.delta == pytest.approx(one.delta)
    assert spread.high - spread.low < one.high - one.low


def test_bootstrap_identical_runs_and_no_cases() -> None:
    same: list[PairedCase] = [(i % 2 == 0, [i % 3 == 0], [i % 3 == 0]) for i in range(30)]
    result = bootstrap_delta_f1(same)
    assert (result.delta, result.low, result.high) == (0.0, 0.0, 0.0)
    empty = bootstrap_delta_f1([])
    assert (empty.delta, empty.low, empty.high) == (0.0, 0.0, 0.0)


# --- repeats -----------------------------------------------------------------------------------


def test_majority_flip_rate_and_stability() -> None:
    assert majority(["fail", "pass", "fail"]) == "fail"
    assert majority(["pass", "fail"]) == "pass"  # tie: the first repeat decides
    assert majority([False, True, True, False]) is False
    assert flip_rate(["fail", "pass", "fail"]) == pytest.approx(1 / 3)
    assert flip_rate(["pass"] * 4) == 0.0
    assert is_stable(["pass"] * 4)
    assert not is_stable(["pass", "fail"])
    assert math.isclose(flip_rate([True, False, True, True]), 0.25)
    with pytest.raises(ValueError):
        majority([])
