"""`coach eval compare`: two runs of the same dataset, paired by case id, rule by rule.

A run directory holds `rows.jsonl`, one JSON object per case × repeat:

    {"case_id": str, "repeat": int, "expected": {rule: "pass"|"fail"},
     "predicted": {rule: "pass"|"fail"|"not_applicable"} | null, "error": str | null, ...}

A row with an error (or no predictions) is an errored row: it is skipped and counted, never
scored as a wrong answer. Without `rows.jsonl`, the older `predictions.jsonl`
({"id", "expected", "predicted", "wrong"}, one row a case) is read as repeat 0.

Per rule, over the cases both runs scored:
- F1 of the `fail` class in A and B, and ΔF1 = B − A with a paired bootstrap 95% interval
  (cases resampled, repeats clustered within their case);
- McNemar's exact test on the correctness of each case's majority verdict
  (b = right in A and wrong in B, c = wrong in A and right in B), Holm-adjusted across rules;
- the cases whose correctness flipped, regressions first;
- a warning when n < 30 or b + c < 10: too few to tell.

Non-inferiority gate: with a margin m, the comparison fails when the lower bound of ΔF1 is
below −m for any rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coach.errors import InputError
from coach.evals.htmlreport import render_compare
from coach.evals.stats import (
    BootstrapResult,
    PairedCase,
    bootstrap_delta_f1,
    holm,
    is_stable,
    majority,
    mcnemar_exact,
)

__all__ = [
    "MIN_CASES",
    "MIN_DISCORDANT",
    "CaseRuns",
    "Comparison",
    "Flip",
    "RuleComparison",
    "Run",
    "compare_runs",
    "load_run",
]

#: Below these, a rule's comparison carries a "too few to tell" warning.
MIN_CASES = 30
MIN_DISCORDANT = 10

_LABELS = ("pass", "fail")


@dataclass
class CaseRuns:
    """One case of one run: its labels and the predictions of each scored repeat."""

    expected: dict[str, str]
    predicted: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass
class Run:
    """A run directory as read: scored cases by id, and how many rows errored."""

    path: str
    source: str  # "rows.jsonl" or "predictions.jsonl"
    cases: dict[str, CaseRuns]
    errored_rows: int
    rows: int


def _bad(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


def _labels(value: Any, where: str, name: str, allowed: tuple[str, ...] | None) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(where, f'"{name}" must be an object of rule id to verdict')
    if allowed is not None:
        wrong = sorted(k for k, v in value.items() if v not in allowed)
        if wrong:
            raise _bad(where, f'"{name}" of {", ".join(wrong)} is not one of {", ".join(allowed)}')
    return dict(value)


def load_run(directory: Path) -> Run:
    """Read a run directory; InputError (naming the file and line) when it cannot be used."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a run directory")
    rows_path = directory / "rows.jsonl"
    legacy = not rows_path.is_file()
    path = directory / "predictions.jsonl" if legacy else rows_path
    if not path.is_file():
        raise InputError(f"{directory}: no rows.jsonl or predictions.jsonl")
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None

    cases: dict[str, CaseRuns] = {}
    errored: set[tuple[str, int]] = set()
    rows = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(where, f"invalid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise _bad(where, "expected a JSON object")
        rows += 1
        case_id = data.get("id" if legacy else "case_id")
        if not isinstance(case_id, str) or not case_id:
            raise _bad(where, f'"{"id" if legacy else "case_id"}" must be a non-empty string')
        repeat = 0 if legacy else data.get("repeat")
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 0:
            raise _bad(where, '"repeat" must be an integer >= 0')
        expected = _labels(data.get("expected"), where, "expected", _LABELS)
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise _bad(where, '"error" must be a string or null')
        raw_predicted = data.get("predicted")
        entry = cases.setdefault(case_id, CaseRuns(expected))
        if entry.expected != expected:
            raise _bad(where, f"case {case_id!r} has other labels than on an earlier row")
        if error is not None or raw_predicted is None:
            if repeat not in entry.predicted:
                errored.add((case_id, repeat))
            continue
        # A later successful row (say, from --retry-errors) replaces an errored one.
        entry.predicted[repeat] = _labels(raw_predicted, where, "predicted", None)
        errored.discard((case_id, repeat))
    if not rows:
        raise InputError(f"{path}: no rows")
    return Run(str(directory), path.name, cases, len(errored), rows)


@dataclass(frozen=True)
class Flip:
    """A case whose majority verdict was right in one run and wrong in the other."""

    case_id: str
    expected: str
    a: str  # majority verdict in A: "fail" or "not fail"
    b: str
    regression: bool  # right in A, wrong in B

    def as_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "expected": self.expected,
            "a": self.a,
            "b": self.b,
            "kind": "regression" if self.regression else "improvement",
        }


@dataclass
class RuleComparison:
    rule_id: str
    n: int
    bootstrap: BootstrapResult
    b: int  # right in A, wrong in B
    c: int  # wrong in A, right in B
    p: float
    flips: list[Flip]
    stable_a: float  # share of cases whose repeats all agree, in A
    stable_b: float
    p_holm: float = 1.0
    below_margin: bool = False

    @property
    def warning(self) -> str | None:
        if self.n < MIN_CASES or self.b + self.c < MIN_DISCORDANT:
            return (
                f"too few to tell (n={self.n}, discordant={self.b + self.c}; "
                f"need n>={MIN_CASES} and discordant>={MIN_DISCORDANT})"
            )
        return None

    @property
    def regressions(self) -> list[Flip]:
        return [f for f in self.flips if f.regression]

    def as_dict(self) -> dict[str, Any]:
        boot = self.bootstrap
        return {
            "n": self.n,
            "f1_a": round(boot.f1_a, 4),
            "f1_b": round(boot.f1_b, 4),
            "delta_f1": round(boot.delta, 4),
            "ci95": [round(boot.low, 4), round(boot.high, 4)],
            "mcnemar": {"b": self.b, "c": self.c, "p": self.p, "p_holm": self.p_holm},
            "stable_a": round(self.stable_a, 4),
            "stable_b": round(self.stable_b, 4),
            "below_margin": self.below_margin,
            "warning": self.warning,
            "flips": [f.as_dict() for f in self.flips],
        }


@dataclass
class Comparison:
    run_a: Run
    run_b: Run
    rules: list[RuleComparison]
    paired: int
    only_in_a: list[str]
    only_in_b: list[str]
    label_mismatches: list[str]
    margin: float | None
    resamples: int
    seed: int

    @property
    def gate_failures(self) -> list[str]:
        return [r.rule_id for r in self.rules if r.below_margin]

    @property
    def passed(self) -> bool:
        """False when a margin was given and some rule's ΔF1 lower bound is below −margin."""
        return not self.gate_failures

    @property
    def warnings(self) -> list[str]:
        notes = []
        for run, name in ((self.run_a, "A"), (self.run_b, "B")):
            if run.errored_rows:
                notes.append(f"run {name}: {run.errored_rows} errored row(s) skipped")
        if self.only_in_a:
            notes.append(f"{len(self.only_in_a)} case(s) only in A (not compared)")
        if self.only_in_b:
            notes.append(f"{len(self.only_in_b)} case(s) only in B (not compared)")
        if self.label_mismatches:
            notes.append(
                f"{len(self.label_mismatches)} case(s) have other labels in B; A's labels are used"
            )
        return notes

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_a": {"path": self.run_a.path, "source": self.run_a.source},
            "run_b": {"path": self.run_b.path, "source": self.run_b.source},
            "paired_cases": self.paired,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "label_mismatches": self.label_mismatches,
            "errored_rows": {"a": self.run_a.errored_rows, "b": self.run_b.errored_rows},
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "unit": "case"},
            "margin": self.margin,
            "gate": {
                "applied": self.margin is not None,
                "passed": self.passed,
                "failing_rules": self.gate_failures,
            },
            "warnings": self.warnings,
            "rules": {r.rule_id: r.as_dict() for r in self.rules},
        }

    def to_html(self) -> str:
        """A self-contained HTML page (opens offline) with ΔF1 bars and interval whiskers."""
        return render_compare(self.as_dict())

    def to_markdown(self, max_flips: int = 10) -> str:
        """A report that fits a pull-request comment: at most `max_flips` flips per rule."""
        lines = [
            f"# Eval compare: `{self.run_a.path}` (A) vs `{self.run_b.path}` (B)",
            "",
            f"{self.paired} paired cases. ΔF1 = B − A (class `fail`), paired bootstrap 95% "
            f"interval ({self.resamples} case resamples, seed {self.seed}); exact McNemar on "
            "majority verdicts (b: A right, B wrong; c: A wrong, B right), Holm-adjusted.",
            "",
            "| rule | n | F1 A | F1 B | ΔF1 | 95% CI | b | c | p | p (Holm) | note |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in self.rules:
            boot = r.bootstrap
            note = "**below margin**" if r.below_margin else ""
            if r.warning:
                note = f"{note}; too few to tell" if note else "too few to tell"
            lines.append(
                f"| {r.rule_id} | {r.n} | {boot.f1_a:.3f} | {boot.f1_b:.3f} | "
                f"{boot.delta:+.3f} | [{boot.low:+.3f}, {boot.high:+.3f}] | {r.b} | {r.c} | "
                f"{r.p:.3g} | {r.p_holm:.3g} | {note} |"
            )
        lines.append("")
        if self.margin is None:
            lines.append("Gate: none (no `--margin`).")
        elif self.passed:
            lines.append(f"Gate: **pass** — no rule's ΔF1 lower bound is below −{self.margin:g}.")
        else:
            lines.append(
                f"Gate: **fail** — ΔF1 lower bound below −{self.margin:g} for "
                + ", ".join(f"`{r}`" for r in self.gate_failures)
                + "."
            )
        if self.warnings:
            lines += ["", *(f"- {w}" for w in self.warnings)]
        flipped = [r for r in self.rules if r.flips]
        if flipped:
            lines += ["", "## Flipped cases (regressions first)", ""]
            for r in flipped:
                shown = ", ".join(
                    f"{'−' if f.regression else '+'}`{f.case_id}`" for f in r.flips[:max_flips]
                )
                more = f" … and {len(r.flips) - max_flips} more" if len(r.flips) > max_flips else ""
                lines.append(
                    f"- **{r.rule_id}** ({len(r.regressions)} regressed, "
                    f"{len(r.flips) - len(r.regressions)} improved): {shown}{more}"
                )
        return "\n".join(lines) + "\n"


def _verdicts(case: CaseRuns, rule_id: str) -> list[bool]:
    """predicted_fail per scored repeat, in repeat order."""
    return [case.predicted[k].get(rule_id) == "fail" for k in sorted(case.predicted)]


def _name(predicted_fail: bool) -> str:
    return "fail" if predicted_fail else "not fail"


def _compare_rule(
    rule_id: str, pairs: list[tuple[str, CaseRuns, CaseRuns]], resamples: int, seed: int
) -> RuleComparison:
    cases: list[PairedCase] = []
    flips: list[Flip] = []
    b = c = stable_a = stable_b = 0
    for case_id, in_a, in_b in pairs:
        expected_fail = in_a.expected[rule_id] == "fail"
        va, vb = _verdicts(in_a, rule_id), _verdicts(in_b, rule_id)
        cases.append((expected_fail, va, vb))
        stable_a += is_stable(va)
        stable_b += is_stable(vb)
        ma, mb = majority(va), majority(vb)
        right_a, right_b = ma == expected_fail, mb == expected_fail
        if right_a != right_b:
            b += right_a
            c += right_b
            flips.append(Flip(case_id, in_a.expected[rule_id], _name(ma), _name(mb), right_a))
    flips.sort(key=lambda f: (not f.regression, f.case_id))
    n = len(cases)
    return RuleComparison(
        rule_id=rule_id,
        n=n,
        bootstrap=bootstrap_delta_f1(cases, resamples=resamples, seed=seed),
        b=b,
        c=c,
        p=mcnemar_exact(b, c),
        flips=flips,
        stable_a=stable_a / n if n else 0.0,
        stable_b=stable_b / n if n else 0.0,
    )


def compare_runs(
    dir_a: Path | str,
    dir_b: Path | str,
    *,
    margin: float | None,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare run B against run A (the baseline). InputError when a run cannot be read."""
    if margin is not None and margin < 0:
        raise ValueError("margin must be >= 0")
    run_a, run_b = load_run(Path(dir_a)), load_run(Path(dir_b))
    scored_a = {k: v for k, v in run_a.cases.items() if v.predicted}
    scored_b = {k: v for k, v in run_b.cases.items() if v.predicted}
    common = sorted(scored_a.keys() & scored_b.keys())
    only_a = sorted(run_a.cases.keys() - run_b.cases.keys())
    only_b = sorted(run_b.cases.keys() - run_a.cases.keys())
    mismatches = [k for k in common if scored_a[k].expected != scored_b[k].expected]
    pairs = [(k, scored_a[k], scored_b[k]) for k in common]
    rule_ids = sorted({rule for _, in_a, _ in pairs for rule in in_a.expected})
    rules = [
        _compare_rule(rule, [p for p in pairs if rule in p[1].expected], resamples, seed)
        for rule in rule_ids
    ]
    adjusted = holm({r.rule_id: r.p for r in rules})
    for r in rules:
        r.p_holm = adjusted[r.rule_id]
        r.below_margin = margin is not None and r.n > 0 and r.bootstrap.low < -margin
    return Comparison(
        run_a, run_b, rules, len(common), only_a, only_b, mismatches, margin, resamples, seed
    )
