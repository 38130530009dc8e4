"""Shared by the bench scripts: machine facts, statistics and the `Section` interface.

A bench script is a module in bench/ named `bench_*.py` (run as a script: it puts the
repository root on sys.path and imports `from bench.common import ...`) that exposes

    def run(*, quick: bool, runs: int) -> Section

and may also be run on its own (`python bench/bench_x.py [--quick] [--runs N]`, printing its
section). `bench/run_all.py` calls `run` of each script in turn and writes every section into
bench/results.md under one header (machine, versions, date). The contract:

- `quick=True` is for the smoke test (tests/bench/test_bench_smoke.py): tiny inputs, a few
  seconds at most, the same markdown shape with numbers that parse.
- `runs` is how many times to repeat each measurement; report medians and min–max ranges over
  the runs (`fmt_stat` / `Stat`), never the result of one run.
- The machine is noisy (2 cores, other work on it): every headline figure is a ratio against a
  reference measured in the same run (`Headline`), the absolute figures are context.
- `Section.body` is markdown without the `## title` line (run_all adds it); keep tables to
  `| a | b |` rows so numbers can be read back by tests.
- A script may restrict its own CPU affinity but must restore it before returning
  (`pinned_to_one_core`), and must stop every process it started.

An optional script (bench/bench_batch.py) is picked up by run_all when the file exists.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "ROOT",
    "Headline",
    "Section",
    "Stat",
    "fmt_stat",
    "headline_table",
    "machine_lines",
    "p99",
    "percentile",
    "pinned_to_one_core",
    "table",
]

ROOT = Path(__file__).resolve().parent.parent

#: Packages whose versions go into the results header.
VERSIONED = ("coach", "litestar", "uvicorn", "pydantic", "httpx", "proselint", "pyinstrument")


@dataclass(frozen=True)
class Headline:
    """One headline figure: a same-run ratio (or a latency) and the target it is held to.

    `higher_is_better` says which side of `target` passes; `target` None means no target.
    """

    name: str
    stat: Stat
    unit: str = "x"
    target: float | None = None
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.higher_is_better:
            return self.stat.median >= self.target
        return self.stat.median <= self.target

    def row(self) -> str:
        target = "-"
        if self.target is not None:
            sign = ">=" if self.higher_is_better else "<="
            target = f"{sign} {self.target:g}{self.unit}"
        verdict = {True: "met", False: "NOT met", None: "-"}[self.met]
        return f"| {self.name} | {fmt_stat(self.stat, self.unit)} | {target} | {verdict} |"


@dataclass
class Section:
    """What one bench script reports: a title, headline figures and a markdown body."""

    title: str
    body: str
    headlines: list[Headline] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the script, filled in by run_all
    failed: bool = False  # set by run_all when the script raised

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.body.rstrip()}\n"


@dataclass(frozen=True)
class Stat:
    """The median and the min–max range of one figure over several runs."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values), len(values))


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of `samples`."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 0.99)


def _num(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_stat(stat: Stat, unit: str = "") -> str:
    """`median unit (low–high)`, or the median alone for one run."""
    if stat.n == 1 or stat.low == stat.high:
        return f"{_num(stat.median)}{unit}"
    return f"{_num(stat.median)}{unit} ({_num(stat.low)}–{_num(stat.high)})"


def headline_table(headlines: Sequence[Headline]) -> str:
    """The headline figures as a markdown table (name, median (range), target, verdict)."""
    lines = ["| figure | median (min–max) | target | |", "|---|---|---|---|"]
    return "\n".join(lines + [h.row() for h in headlines])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_lines() -> list[str]:
    """Markdown bullet lines: date, machine, Python, package versions, commit."""
    cores = os.cpu_count() or 0
    versions = []
    for name in VERSIONED:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {_git_commit()}",
        f"- Machine: {_cpu_model()}, {cores} cores, {_memory_gib()} RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Versions: {', '.join(versions)}",
    ]


@contextmanager
def pinned_to_one_core() -> Iterator[None]:
    """Runs the block on one core (where the OS allows it), then restores the affinity."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
