"""The offline rule engine against proselint, in one process, on the same texts.

    .venv/bin/python bench/bench_peer.py [--quick] [--runs N]

Texts: the dev set as it is (every kind and language), and each of its drafts repeated to
1,000 and 10,000 characters (every 5th draft at 10,000, to bound the run time). Both checkers
run on one core, alternating which goes first in each run. Headline: ours/proselint documents
per second in the same run (target >= 2x). Ours is the review alone (`rewrite=False`, what a
checker does); the review with the structural rewrite is reported beside it. Ours runs with
its sentence memo off: every document is checked as if unseen. Memory: resident
set added by loading and warming each checker, and the peak traced allocation while checking
one 10,000-character document, each measured in a fresh process.

proselint is optional (`pip install -e '.[bench]'`): without it only ours is measured.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Headline,
    Section,
    Stat,
    fmt_stat,
    headline_table,
    p99,
    percentile,
    pinned_to_one_core,
    table,
)

TITLE = "Offline engine vs proselint"
SIZES = (("dev set as is", 0, 1), ("1,000 chars", 1000, 1), ("10,000 chars", 10_000, 5))
TARGET = 2.0

Check = Callable[[str, Any], object]


@dataclass(frozen=True)
class Doc:
    text: str
    kind: Any
    context: Any


def proselint_available() -> bool:
    try:
        importlib.import_module("proselint")
    except ImportError:
        return False
    return True


def _repeat(text: str, length: int) -> str:
    out = text
    while len(out) < length:
        out = f"{out}\n{text}"
    return out[:length]


def documents(length: int, every: int, limit: int | None) -> list[Doc]:
    from coach.evals.dataset import load_cases

    cases = load_cases([ROOT / "evals" / "datasets" / "dev.jsonl"])[::every]
    if limit is not None:
        cases = cases[:limit]
    return [
        Doc(case.text if not length else _repeat(case.text, length), case.kind, case.context)
        for case in cases
    ]


def ours(rewrite: bool) -> Callable[[Doc], object]:
    from coach.models import ReviewRequest
    from coach.service import ReviewService

    service = ReviewService()

    def check(doc: Doc) -> object:
        request = ReviewRequest(text=doc.text, kind=doc.kind, context=doc.context)
        return service.review_sync(request, rewrite=rewrite)

    return check


def proselint() -> Callable[[Doc], object]:
    # Imported by name: proselint is an optional extra (CI type-checks without it).
    checks: Any = importlib.import_module("proselint.checks")
    registry: Any = importlib.import_module("proselint.registry")
    tools: Any = importlib.import_module("proselint.tools")
    if not registry.CheckRegistry().checks:
        registry.CheckRegistry().register_many(checks.__register__)

    def check(doc: Doc) -> object:
        return tools.LintFile("<bench>", doc.text).lint()

    return check


def _pass(check: Callable[[Doc], object], docs: list[Doc]) -> tuple[float, list[float]]:
    """Documents per second over one pass, and each document's latency in ms."""
    samples = []
    started = time.perf_counter_ns()
    for doc in docs:
        t0 = time.perf_counter_ns()
        check(doc)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return len(docs) / elapsed, samples


def _memory(names: list[str], quick: bool) -> dict[str, dict[str, float]]:
    """Each in a fresh process (side by side): RSS added by loading + warming, and the traced
    peak while checking one 10,000-character document."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--memory", name] + (["--quick"] if quick else []),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    results = {}
    for name, process in processes.items():
        out, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            raise RuntimeError(f"memory measurement of {name} failed ({process.returncode})")
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_memory(which: str, quick: bool) -> dict[str, float]:
    """RSS added by loading + warming `which` in this process, and the median traced peak
    while checking one 10,000-character document."""
    base = _rss_mib()
    docs = documents(10_000, 5, 2 if quick else 10)
    check = proselint() if which == "proselint" else ours(rewrite=False)
    for doc in docs:
        check(doc)
    loaded = _rss_mib()
    peaks = []
    for doc in docs:
        tracemalloc.start()
        check(doc)
        peaks.append(tracemalloc.get_traced_memory()[1] / 1024 / 1024)
        tracemalloc.stop()
    return {"rss_mib": loaded - base, "peak_mib": percentile(peaks, 0.5)}


def run(*, quick: bool, runs: int) -> Section:
    from coach.engines.rules.lexicon import set_chunk_memo_size

    # Every document as if unseen: the sentence memo would otherwise answer from the earlier
    # runs (and from the repeats inside the long documents), which proselint cannot do.
    set_chunk_memo_size(0)
    try:
        return _run(quick=quick, runs=runs)
    finally:
        set_chunk_memo_size()


def _run(*, quick: bool, runs: int) -> Section:
    have_peer = proselint_available()
    limit = 3 if quick else None
    contenders: dict[str, Callable[[Doc], object]] = {
        "ours": ours(rewrite=False),
        "ours + rewrite": ours(rewrite=True),
    }
    if have_peer:
        contenders["proselint"] = proselint()
    rows = []
    headlines = []
    for label, length, every in SIZES:
        docs = documents(length, every, limit)
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        latencies: dict[str, list[float]] = {name: [] for name in contenders}
        ratios: list[float] = []
        with pinned_to_one_core():
            for check in contenders.values():  # warm-up: compiled patterns, caches
                for doc in docs[:5]:
                    check(doc)
            for index in range(runs):
                order = list(contenders.items())
                if index % 2:
                    order.reverse()
                this_run = {}
                for name, check in order:
                    rate, samples = _pass(check, docs)
                    this_run[name] = rate
                    rates[name].append(rate)
                    latencies[name].extend(samples)
                if have_peer:
                    ratios.append(this_run["ours"] / this_run["proselint"])
        for name in contenders:
            rows.append(
                [
                    label,
                    name,
                    str(len(docs)),
                    fmt_stat(Stat.of(rates[name])),
                    f"{percentile(latencies[name], 0.5):.3f}",
                    f"{p99(latencies[name]):.3f}",
                ]
            )
        if have_peer:
            headlines.append(
                Headline(f"ours / proselint docs/s, {label}", Stat.of(ratios), "x", TARGET)
            )
    parts = [
        f"Same texts for both, in one process pinned to one core, {runs} run(s); docs/s is the "
        "median (min–max) over runs, latencies are over every document of every run. "
        "`ours` is the review alone (`rewrite=False`); `ours + rewrite` adds the structural "
        "rewrite (the API's default). Ours runs with its sentence memo off, so every document "
        "is checked as if never seen (no answers from earlier runs or from repeats).",
        "",
        table(["texts", "checker", "docs", "docs/s", "median ms", "p99 ms"], rows),
        "",
    ]
    if have_peer:
        parts += [
            headline_table(headlines),
            "",
        ]
    else:
        parts += ["proselint is not installed (`pip install -e '.[bench]'`): no ratio.", ""]
    names = ["ours"] + (["proselint"] if have_peer else [])
    if quick:  # in this process (figures meaningless), to spare the smoke test two imports
        memory = {name: measure_memory(name, quick) for name in names}
    else:
        memory = _memory(names, quick)
    memory_rows = [
        [name, f"{mem['rss_mib']:.1f}", f"{mem['peak_mib']:.2f}"] for name, mem in memory.items()
    ]
    parts += [
        "Memory, each in a fresh process: resident set added by importing, loading and "
        "warming the checker; median peak traced allocation while checking one "
        "10,000-character document.",
        "",
        table(["checker", "RSS added MiB", "peak per 10k doc MiB"], memory_rows),
    ]
    return Section(TITLE, "\n".join(parts), headlines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory", choices=["ours", "proselint"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory(args.memory, args.quick)))
        return
    print(run(quick=args.quick, runs=args.runs).markdown())


if __name__ == "__main__":
    main()
