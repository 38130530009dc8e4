"""Latency of the offline rule engine on 1,000-character drafts, on one core.

    .venv/bin/python bench/bench_engine.py [--rounds N] [--out bench/engine.md]

Builds 1,000-character drafts by repeating dev-set messages (English and Hebrew), warms up,
then times each review with perf_counter_ns, first as unseen drafts (the sentence memo off),
then the same drafts again (memo on). Reports median and p99 per draft for the review
alone (what the browser extension calls on every keystroke pause) and with the structural
rewrite. Noisy machines: compare the ratio rewrite/review from the same run, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from coach.engines.rules.lexicon import set_chunk_memo_size
from coach.evals.dataset import load_cases
from coach.models import Kind, ReviewRequest
from coach.service import ReviewService

ROOT = Path(__file__).resolve().parent.parent


def drafts(length: int) -> list[ReviewRequest]:
    cases = load_cases([ROOT / "evals" / "datasets" / "dev.jsonl"])
    out = []
    for case in cases:
        if case.kind is not Kind.message:
            continue
        text = case.text
        while len(text) < length:
            text = f"{text}\n{case.text}"
        out.append(ReviewRequest(text=text[:length], kind=case.kind, context=case.context))
    return out


def measure(
    service: ReviewService, requests: list[ReviewRequest], rounds: int, rewrite: bool
) -> list[float]:
    for request in requests[:20]:
        service.review_sync(request, rewrite=rewrite)
    samples = []
    for _ in range(rounds):
        for request in requests:
            started = time.perf_counter_ns()
            service.review_sync(request, rewrite=rewrite)
            samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "engine.md")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    service = ReviewService()
    requests = drafts(args.length)
    # Unseen drafts first (the sentence memo off), then the same drafts again with it on: what
    # a client re-checking a draft it sent before gets.
    set_chunk_memo_size(0)
    review = measure(service, requests, args.rounds, rewrite=False)
    full = measure(service, requests, args.rounds, rewrite=True)
    set_chunk_memo_size()
    again = measure(service, requests, args.rounds, rewrite=False)
    again_full = measure(service, requests, args.rounds, rewrite=True)
    rows = [
        ("review", review),
        ("review + structural rewrite", full),
        ("review, the same draft again", again),
        ("review + rewrite, the same draft again", again_full),
    ]
    lines = [
        f"# Offline engine latency, {args.length}-character drafts, one core",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, {platform.machine()}, "
        f"{len(requests)} drafts x {args.rounds} rounds.",
        "",
        "| path | median ms | p99 ms | drafts/s |",
        "|---|---|---|---|",
    ]
    for name, samples in rows:
        median = statistics.median(samples)
        lines.append(f"| {name} | {median:.3f} | {pct(samples, 0.99):.3f} | {1000 / median:,.0f} |")
    ratio = statistics.median(full) / statistics.median(review)
    lines += [
        "",
        f"Rewrite costs {ratio:.1f}x the review alone (same run). The first two rows review "
        "every draft as unseen (the sentence memo off); the last two review drafts already "
        "seen, whose sentences the memo answers.",
    ]
    report = "\n".join(lines) + "\n"
    args.out.write_text(report, "utf-8")
    print(report)


if __name__ == "__main__":
    main()
