"""`coach eval run --judge`: the LLM judge's agreement with the labels, then its rewrite scores.

(a) Agreement first: the judge reads every case's original draft; per rule and overall, Cohen's
kappa between its verdicts and the dataset labels (binary, `fail` against not `fail`, as the
metrics score; `not_applicable` counts as not failing; unlabelled rules are skipped).
(b) Rewrites: the judge reads each row's rewrite; per rule, the share that passes (anything but
`fail`) and the share passing every rule. Those shares are flagged untrusted when the overall
kappa is below `TRUST_KAPPA` (or unknown).

Judge calls go through the same caller as the engine (recording / replay, keyed by the request
body); a judge error is counted under `errors` by its code, never replaced by a guess.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coach.engines.llm.judge import Judge
from coach.errors import LLMError
from coach.evals.cache import TRACE, ReplayMiss, Trace
from coach.evals.dataset import Case
from coach.evals.stats import cohen_kappa, wilson_interval

__all__ = ["TRUST_KAPPA", "JudgeReplayMiss", "JudgeRun", "JudgeRunResult", "judge_summary"]

#: Below this overall kappa the judge's rewrite scores are reported as untrusted.
TRUST_KAPPA = 0.6
_Z95 = 1.959963984540054


@dataclass
class JudgeRunResult:
    #: (case id, labels, judge verdicts) per original draft judged.
    originals: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    #: Judge verdicts per rewrite judged.
    rewrites: list[dict[str, str]] = field(default_factory=list)
    original_errors: Counter[str] = field(default_factory=Counter)
    rewrite_errors: Counter[str] = field(default_factory=Counter)


class JudgeReplayMiss(Exception):
    """`--replay` and no recording for a judge call: the harness stops (exit 1)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"replay: no recording for the judge of {what}")


class JudgeRun:
    """Runs the judge over the originals of `cases` and the rewrites of `rows`."""

    def __init__(self, judge: Judge, *, concurrency: int = 4, replay: bool = False) -> None:
        self.judge = judge
        self.concurrency = max(1, concurrency)
        self.replay = replay

    async def run(
        self, cases: Sequence[Case], rewrites: Sequence[tuple[Case, int, str]]
    ) -> JudgeRunResult:
        """`rewrites`: (case, repeat, rewrite text) of each row with a rewrite."""
        result = JudgeRunResult()
        semaphore = asyncio.Semaphore(self.concurrency)
        originals: list[tuple[str, dict[str, str], dict[str, str]] | None] = [None] * len(cases)
        judged: list[dict[str, str] | None] = [None] * len(rewrites)

        async def one(case: Case, text: str, repeat: int, what: str) -> dict[str, str] | str:
            async with semaphore:
                TRACE.set(Trace(repeat=repeat))
                try:
                    return await self.judge.judge(text, case.kind, case.language, case.context)
                except ReplayMiss:
                    if self.replay:
                        raise JudgeReplayMiss(what) from None
                    return ReplayMiss.code
                except LLMError as exc:
                    return exc.code

        async def original(index: int, case: Case) -> None:
            answer = await one(case, case.text, 0, f"case {case.id}")
            if isinstance(answer, str):
                result.original_errors[answer] += 1
            else:
                originals[index] = (case.id, dict(case.expected), answer)

        async def rewrite(index: int, case: Case, repeat: int, text: str) -> None:
            answer = await one(case, text, repeat, f"the rewrite of case {case.id}")
            if isinstance(answer, str):
                result.rewrite_errors[answer] += 1
            else:
                judged[index] = answer

        try:
            async with asyncio.TaskGroup() as group:
                for i, case in enumerate(cases):
                    group.create_task(original(i, case))
                for i, (case, repeat, text) in enumerate(rewrites):
                    group.create_task(rewrite(i, case, repeat, text))
        except* JudgeReplayMiss as eg:
            raise eg.exceptions[0] from None
        result.originals = [o for o in originals if o is not None]
        result.rewrites = [j for j in judged if j is not None]
        return result


def _kappa(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    return {"n": len(pairs), "kappa": round(cohen_kappa(pairs), 4) if pairs else None}


def _share(ok: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(ok, n, _Z95)
    return {
        "n": n,
        "passed": ok,
        "share": round(ok / n, 4) if n else None,
        "wilson95": (round(low, 4), round(high, 4)),
    }


def judge_summary(
    run: JudgeRunResult, *, model: str, prompt: dict[str, str], has_rewrites: bool
) -> dict[str, Any]:
    """The `judge` section of report.json."""
    by_rule: dict[str, list[tuple[bool, bool]]] = {}
    for _case_id, labels, verdicts in run.originals:
        for rule, label in labels.items():
            if rule in verdicts:
                by_rule.setdefault(rule, []).append((label == "fail", verdicts[rule] == "fail"))
    pooled = [pair for pairs in by_rule.values() for pair in pairs]
    overall = _kappa(pooled)
    trusted = overall["kappa"] is not None and overall["kappa"] >= TRUST_KAPPA
    summary: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "trust_kappa": TRUST_KAPPA,
        "trusted": trusted,
        "agreement": {
            "cases": len(run.originals),
            "n": overall["n"],
            "kappa": overall["kappa"],
            "rules": {rule: _kappa(by_rule[rule]) for rule in sorted(by_rule)},
            "errors": dict(sorted(run.original_errors.items())),
        },
        "rewrites": None,
    }
    if has_rewrites:
        rules = sorted({rule for verdicts in run.rewrites for rule in verdicts})
        summary["rewrites"] = {
            "n": len(run.rewrites),
            "untrusted": not trusted,
            "all_pass": _share(
                sum(all(v != "fail" for v in verdicts.values()) for verdicts in run.rewrites),
                len(run.rewrites),
            ),
            "rules": {
                rule: _share(
                    sum(verdicts[rule] != "fail" for verdicts in run.rewrites if rule in verdicts),
                    sum(rule in verdicts for verdicts in run.rewrites),
                )
                for rule in rules
            },
            "errors": dict(sorted(run.rewrite_errors.items())),
        }
    return summary
