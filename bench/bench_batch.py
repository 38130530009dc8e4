"""`coach batch` at scale against the fake provider: throughput as a share of the ideal.

    .venv/bin/python bench/bench_batch.py [--quick] [--runs N] [--items N]

The fake OpenAI-compatible server (tools/fake_openai) answers every call after a fixed
latency and refuses calls beyond a requests-per-minute limit with 429. `coach batch` runs as a
real process on 10,000 distinct templates (JSONL) with the LLM engine, `--concurrency C`,
`--workers 2` (a second process: the machine has two cores) and the provider's limit as its
budget (`COACH_LLM_RPM`, shared out between the processes). The ideal rate is
`min(C / latency, rpm / 60)`; the headline is achieved / ideal (target >= 0.9), measured over
the review phase (first to last result in the store: process start-up and writing the output
file are reported apart). Also: the share of calls answered 429 (target < 2 %, counted from the
fake server's access log) and the peak RSS of the batch process, at 1/10 of the items and at
all of them — flat memory means the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Headline, Section, Stat, fmt_stat, headline_table, table
from tools.fake_openai import LISTENING_PREFIX, MODEL_ID

LATENCY_S = 0.5
RPM = 3_000
CONCURRENCY = 32
#: `coach batch --workers`: processes sharing the batch (the machine has 2 cores; the fake
#: provider runs on them too).
WORKERS = 2
ITEMS = 10_000
QUICK_ITEMS = 150

_TOPICS = (
    "onboarding",
    "pricing pages",
    "churn",
    "hiring engineers",
    "community events",
    "partner programs",
    "field sales",
    "customer interviews",
)


def templates(n: int, path: Path) -> None:
    """`n` distinct templates (no two identical, so none is reviewed only once by reuse)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            topic = _TOPICS[i % len(_TOPICS)]
            if i % 3 == 0:
                text = (
                    f"Hi {{{{first_name}}}}, I'm with Acme and we help teams with {topic}. "
                    f"Can we book 30 minutes this week to show you our platform? Ref {i}."
                )
            elif i % 3 == 1:
                text = (
                    f"Hi {{{{first_name}}}}, I enjoyed your post about {topic}. I put together "
                    f"notes from three teams who solved it; happy to share them. What is your "
                    f"biggest question about it right now? Ref {i}."
                )
            else:
                text = (
                    f"Hello %FIRSTNAME%, our group is organising a meetup on {topic} next month "
                    f"and I volunteered to host. Would you like to speak or just come? Ref {i}."
                )
            out.write(json.dumps({"id": f"t{i:06d}", "text": text}) + "\n")


@dataclass
class Outcome:
    items: int
    wall_s: float
    review_s: float
    calls: int
    throttled: int
    peak_rss_mib: float
    exit_code: int

    @property
    def rate(self) -> float:
        return self.items / self.review_s if self.review_s > 0 else 0.0


def _start_fake(log: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.fake_openai",
            "--port",
            "0",
            "--latency",
            str(LATENCY_S),
            "--rpm",
            str(RPM),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith(LISTENING_PREFIX):
        process.kill()
        raise RuntimeError("the fake server did not start")
    return process, line.removeprefix(LISTENING_PREFIX)


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    """The peak RSS of the batch process plus its worker processes (summed)."""
    peaks: dict[int, float] = {}
    while not stop.is_set():
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for proc in [pid, *map(int, children)]:
                peaks[proc] = max(peaks.get(proc, 0.0), _hwm_mib(proc))
        except OSError:
            pass
        if peaks:
            out.append(sum(peaks.values()))
        stop.wait(0.2)


def _review_span(db: Path) -> float:
    """Seconds from the first to the last result the store recorded."""
    with sqlite3.connect(db) as conn:
        first, last = conn.execute(
            "SELECT MIN(completed_at), MAX(completed_at) FROM batch_items WHERE state='done'"
        ).fetchone()
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    started = time.mktime(time.strptime(first[:26], fmt)) + float("0." + first[20:26])
    ended = time.mktime(time.strptime(last[:26], fmt)) + float("0." + last[20:26])
    return max(ended - started, 1e-6)


def run_once(items: int, workdir: Path) -> Outcome:
    source = workdir / "templates.jsonl"
    templates(items, source)
    log = workdir / "fake.log"
    fake, base_url = _start_fake(log)
    env = {
        **os.environ,
        "COACH_DATA_DIR": str(workdir / "data"),
        "COACH_LLM_BASE_URL": base_url,
        "COACH_LLM_MODEL": MODEL_ID,
        "COACH_LLM_RPM": str(RPM),
        "COACH_LOG_LEVEL": "WARNING",
    }
    try:
        started = time.perf_counter()
        batch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coach",
                "batch",
                str(source),
                "--out",
                str(workdir / "out.jsonl"),
                "--engine",
                "llm",
                "--concurrency",
                str(CONCURRENCY),
                "--workers",
                str(WORKERS),
                "--quiet",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_peak_rss, args=(batch.pid, stop, samples))
        watcher.start()
        code = batch.wait()
        wall = time.perf_counter() - started
        stop.set()
        watcher.join()
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    statuses = re.findall(r"POST \S+ (\d{3}) ", log.read_text())
    lines = sum(1 for _ in (workdir / "out.jsonl").open()) if code in (0, 1, 3) else 0
    if lines != items:
        raise RuntimeError(f"coach batch wrote {lines} of {items} items (exit {code})")
    return Outcome(
        items=items,
        wall_s=wall,
        review_s=_review_span(workdir / "data" / "coach.db"),
        calls=len(statuses),
        throttled=statuses.count("429"),
        peak_rss_mib=max(samples) if samples else float("nan"),
        exit_code=code,
    )


def run(*, quick: bool, runs: int) -> Section:
    items = QUICK_ITEMS if quick else ITEMS
    small = max(QUICK_ITEMS // 3, items // 10)
    ideal = min(CONCURRENCY / LATENCY_S, RPM / 60)
    outcomes: list[Outcome] = []
    smalls: list[Outcome] = []
    for _ in range(max(1, runs if not quick else 1)):
        with tempfile.TemporaryDirectory(prefix="coach-bench-batch-") as tmp:
            outcomes.append(run_once(items, Path(tmp)))
        with tempfile.TemporaryDirectory(prefix="coach-bench-batch-") as tmp:
            smalls.append(run_once(small, Path(tmp)))
    share = Stat.of([o.rate / ideal for o in outcomes])
    throttled = Stat.of([100 * o.throttled / max(o.calls, 1) for o in outcomes])
    memory = Stat.of(
        [o.peak_rss_mib / s.peak_rss_mib for o, s in zip(outcomes, smalls, strict=True)]
    )
    headlines = [
        Headline("throughput / ideal", share, "x", target=0.9),
        Headline("calls answered 429", throttled, "%", target=2.0, higher_is_better=False),
        Headline(f"peak RSS, {items:,} / {small:,} items", memory, "x"),
    ]
    rows = [
        ["items", f"{items:,}"],
        ["fake provider", f"latency {LATENCY_S:g} s, {RPM:,} requests/min"],
        ["concurrency", f"{CONCURRENCY} over {WORKERS} processes (`--workers {WORKERS}`)"],
        ["ideal rate", f"{ideal:.1f} items/s = min({CONCURRENCY}/{LATENCY_S:g}, {RPM}/60)"],
        ["achieved rate (review phase)", fmt_stat(Stat.of([o.rate for o in outcomes]), " items/s")],
        ["whole command (start to output)", fmt_stat(Stat.of([o.wall_s for o in outcomes]), " s")],
        ["calls / 429s", ", ".join(f"{o.calls:,} / {o.throttled:,}" for o in outcomes)],
        ["peak RSS (all processes)", fmt_stat(Stat.of([o.peak_rss_mib for o in outcomes]), " MiB")],
        [
            f"peak RSS at {small:,} items",
            fmt_stat(Stat.of([s.peak_rss_mib for s in smalls]), " MiB"),
        ],
    ]
    body = "\n\n".join(
        [
            headline_table(headlines),
            table(["", ""], rows),
            "`coach batch FILE.jsonl --engine llm --concurrency "
            f"{CONCURRENCY} --workers {WORKERS}` as a process, `COACH_LLM_RPM={RPM}`, against "
            f"`python -m tools.fake_openai --latency {LATENCY_S:g} --rpm {RPM}`, on SQLite. "
            "The review phase runs from the first to the last result recorded in the store.",
        ]
    )
    return Section(f"Batch: {items:,} templates against a rate-limited provider", body, headlines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(run(quick=args.quick, runs=args.runs).markdown())


if __name__ == "__main__":
    main()
