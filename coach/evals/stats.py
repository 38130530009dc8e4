"""Statistics for evaluations, in plain Python: intervals, paired tests, agreement, repeats.

Everything here is a pure function of its arguments (the bootstrap takes a seed), so results
are reproducible and can be checked by hand:

- `wilson_interval`: a 95% interval for a proportion that behaves at 0 and n (unlike Wald).
- `percentile`: linear interpolation between order statistics (numpy's default), for p50/p95.
- `mcnemar_exact`: the exact two-sided McNemar test on the discordant pairs of a paired design.
- `holm`: Holm's step-down adjustment of several p-values (family-wise error rate).
- `cohen_kappa`: agreement of two raters beyond chance.
- `f1_fail`, `bootstrap_delta_f1`: F1 of the `fail` class and a paired, case-clustered bootstrap
  of the difference between two runs.
- `majority`, `flip_rate`, `is_stable`: canonical verdicts of repeated runs of one case.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "BootstrapResult",
    "PairedCase",
    "bootstrap_delta_f1",
    "bootstrap_f1",
    "cohen_kappa",
    "f1_fail",
    "flip_rate",
    "holm",
    "is_stable",
    "majority",
    "mcnemar_exact",
    "percentile",
    "wilson_interval",
]

T = TypeVar("T", bound=Hashable)

#: One case of a paired comparison: (expected_fail, predicted_fail in A per repeat,
#: predicted_fail in B per repeat). A and B may have different numbers of repeats (at least one).
PairedCase = tuple[bool, Sequence[bool], Sequence[bool]]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (z = 1.96: 95%).

    Returns (0.0, 1.0) when n is 0: nothing is known. Bounds are clamped to [0, 1].
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation between order statistics.

    The same definition as numpy's default ("linear"): rank = q/100 · (n − 1).
    Raises ValueError on an empty input or q outside [0, 100].
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under the null hypothesis each discordant pair goes either way with probability 1/2, so
    min(b, c) is Binomial(b + c, 1/2); the p-value doubles its lower tail, capped at 1.
    Returns 1.0 when b + c is 0 (no evidence either way).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))  # int / int: correctly rounded, even for big n


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values, keyed as given.

    With m p-values sorted ascending, the i-th (from 0) is multiplied by (m − i); the adjusted
    values are made monotone (each at least the previous one) and capped at 1. Ties are ordered
    by key, which does not change the result.
    """
    ordered = sorted(p_values.items(), key=lambda item: (item[1], item[0]))
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (key, p) in enumerate(ordered):
        if not 0 <= p <= 1:
            raise ValueError(f"p-value of {key!r} is not in [0, 1]: {p}")
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


def cohen_kappa(pairs: Iterable[tuple[Hashable, Hashable]]) -> float:
    """Cohen's kappa of two raters over (label_1, label_2) pairs: (po − pe) / (1 − pe).

    When chance agreement is already 1 (both raters always gave one and the same label),
    kappa is undefined; this returns 1.0 for that perfect agreement.
    Raises ValueError on no pairs.
    """
    items = list(pairs)
    if not items:
        raise ValueError("kappa of no pairs")
    n = len(items)
    observed = sum(1 for a, b in items if a == b) / n
    first = Counter(a for a, _ in items)
    second = Counter(b for _, b in items)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    if expected >= 1:
        return 1.0
    return (observed - expected) / (1 - expected)


def _f1(tp: float, fp: float, fn: float) -> float:
    """F1 = 2tp / (2tp + fp + fn), equal to 2PR/(P+R); 0 when undefined (no tp)."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if tp and denominator else 0.0


def f1_fail(pairs: Iterable[tuple[bool, bool]]) -> float:
    """F1 of the `fail` class over (expected_fail, predicted_fail) pairs, as in
    `coach.evals.metrics.Confusion.f1` (0 when undefined)."""
    tp = fp = fn = 0
    for expected, predicted in pairs:
        tp += expected and predicted
        fp += predicted and not expected
        fn += expected and not predicted
    return _f1(tp, fp, fn)


def _case_counts(expected_fail: bool, predicted: Sequence[bool]) -> tuple[float, float, float]:
    """(tp, fp, fn) of one case, each repeat weighing 1/K so that every case weighs 1."""
    if not predicted:
        raise ValueError("a case needs at least one repeat")
    share = sum(predicted) / len(predicted)
    return (share, 0.0, 1 - share) if expected_fail else (0.0, share, 0.0)


@dataclass(frozen=True)
class BootstrapResult:
    """ΔF1 = F1(B) − F1(A), with a percentile interval over case resamples."""

    f1_a: float
    f1_b: float
    delta: float
    low: float
    high: float
    resamples: int
    confidence: float


def bootstrap_delta_f1(
    cases: Sequence[PairedCase],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of ΔF1 (B − A) for one rule.

    The F1 is that of the `fail` class. Each case contributes its repeats with weight 1/K
    (K = that run's repeats of the case), so a case counts once however often it was repeated;
    with one repeat everywhere this is exactly the F1 of `coach.evals.metrics`.

    Resampling draws CASES with replacement (a drawn case brings all its repeats in both runs,
    which keeps the pairing and the clustering of repeats). The interval is the percentile
    interval of the resampled differences. `random.Random(seed)` makes it deterministic.
    With no cases every value is 0.
    """
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if not cases:
        return BootstrapResult(0.0, 0.0, 0.0, 0.0, 0.0, resamples, confidence)
    # One row per case: (tp, fp, fn) in A then in B, the six counts a resample adds up.
    rows = [(*_case_counts(e, a), *_case_counts(e, b)) for e, a, b in cases]
    totals = [sum(r[k] for r in rows) for k in range(6)]
    f1_a, f1_b = _f1(*totals[:3]), _f1(*totals[3:])
    rng = random.Random(seed)
    n = len(rows)
    deltas: list[float] = []
    for _ in range(resamples):
        tpa = fpa = fna = tpb = fpb = fnb = 0.0
        for i in rng.choices(range(n), k=n):
            r = rows[i]
            tpa += r[0]
            fpa += r[1]
            fna += r[2]
            tpb += r[3]
            fpb += r[4]
            fnb += r[5]
        deltas.append(_f1(tpb, fpb, fnb) - _f1(tpa, fpa, fna))
    tail = (1 - confidence) / 2 * 100
    return BootstrapResult(
        f1_a=f1_a,
        f1_b=f1_b,
        delta=f1_b - f1_a,
        low=percentile(deltas, tail),
        high=percentile(deltas, 100 - tail),
        resamples=resamples,
        confidence=confidence,
    )


def majority(values: Sequence[T]) -> T:
    """The most common value of a case's repeats; a tie goes to the tied value seen first
    (so repeat 0 decides between equally common verdicts). ValueError when empty."""
    if not values:
        raise ValueError("majority of no values")
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def flip_rate(values: Sequence[Hashable]) -> float:
    """Share of a case's repeats that differ from its majority verdict (0 when stable)."""
    if not values:
        raise ValueError("flip rate of no values")
    canonical = majority(values)
    return sum(1 for v in values if v != canonical) / len(values)


def is_stable(values: Sequence[Hashable]) -> bool:
    """True when every repeat gave the same verdict."""
    return len(set(values)) <= 1


def bootstrap_f1(
    cases: Sequence[tuple[bool, Sequence[bool]]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one run's F1 (class `fail`) over (expected_fail,
    predicted_fail per repeat) cases; cases are resampled, repeats stay with their case and
    weigh 1/K. (0, 0) with no cases."""
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    if not cases:
        return (0.0, 0.0)
    rows = [_case_counts(e, p) for e, p in cases]
    rng = random.Random(seed)
    n = len(rows)
    values: list[float] = []
    for _ in range(resamples):
        tp = fp = fn = 0.0
        for i in rng.choices(range(n), k=n):
            r = rows[i]
            tp += r[0]
            fp += r[1]
            fn += r[2]
        values.append(_f1(tp, fp, fn))
    tail = (1 - confidence) / 2 * 100
    return (percentile(values, tail), percentile(values, 100 - tail))
