"""Where a `POST /v1/reviews` spends its time: the API's layers, in process, no network.

    .venv/bin/python bench/bench_layers.py [--quick] [--runs N]

bench_api.py measures servers under a load generator on loopback; this one calls each ASGI app
directly (a made-up HTTP scope, the same 600-character body) in a loop on one core, so that
the differences between the apps are what each layer costs, with no sockets, HTTP parser or
load generator to share the machine with. Four apps, each in its own process:

- echo: bench/echo_app.py, the bare Litestar endpoint of bench_api (the framework's floor);
- framework + coach's models: bench/models_app.py, a bare Litestar endpoint that takes coach's
  request model and answers a precomputed `Review` (the real shapes parsed, validated and
  serialised);
- coach's API alone: bench/api_only_app.py, the whole app (middleware, the log line, metrics,
  the rate limiter, the request id), the review precomputed;
- coach: bench/cold_app.py, the whole app reviewing each request as an unseen draft.

Each figure is microseconds per request (median over runs) and its multiple of the echo in the
same run; the table then splits a coach request into the framework, coach's layers and the
review.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_api import clean_env, message
from bench.common import ROOT, Headline, Section, Stat, fmt_stat, headline_table, table

TITLE = "Where a request's time goes (in process)"
BENCH = Path(__file__).resolve().parent
APPS = {
    "echo": "bare Litestar echo",
    "models": "framework + coach's request and response models",
    "api": "coach's API alone (the review precomputed)",
    "coach": "coach (each draft unseen)",
}

Message = MutableMapping[str, Any]


#: The module (in bench/) whose `app()` builds each app.
MODULES = {"echo": "echo_app", "models": "models_app", "api": "api_only_app", "coach": "cold_app"}


def _app(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    return importlib.import_module(MODULES[name]).app()


async def _lifespan(app: Any) -> Callable[[], Awaitable[None]]:
    """Starts the app's lifespan; returns the coroutine function that shuts it down."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        await outbox.put(message)

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app did not start: {started}")

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/reviews",
        "raw_path": b"/v1/reviews",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _measure(name: str, body: bytes, requests: int) -> float:
    """Microseconds per request of app `name`, after a warm-up."""
    app = _app(name)
    stop = await _lifespan(app)
    scope = _scope(body)
    request = {"type": "http.request", "body": body, "more_body": False}
    status: list[int] = []

    async def one() -> None:
        received = False

        async def receive() -> Message:
            nonlocal received
            if received:  # the app only asks again to watch for a disconnect
                await asyncio.Event().wait()
            received = True
            return request

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)

    try:
        for _ in range(max(50, requests // 10)):
            await one()
        status.clear()
        started = time.perf_counter()
        for _ in range(requests):
            await one()
        elapsed = time.perf_counter() - started
    finally:
        await stop()
    if set(status) != {200}:
        raise RuntimeError(f"{name}: statuses {sorted(set(status))}")
    return elapsed / requests * 1e6


def _child(name: str, body_file: Path, requests: int) -> float:
    """One app measured in a process of its own (its log lines go nowhere), on one core."""
    with tempfile.TemporaryDirectory(prefix="coach-bench-layers-") as tmp:
        out = Path(tmp) / "result.json"
        env = clean_env(COACH_AUTH="off", COACH_RATE_LIMIT=str(10**9), COACH_DATA_DIR=tmp)
        errors = Path(tmp) / "stderr.txt"
        with errors.open("w") as stderr:
            done = subprocess.run(
                [
                    *(sys.executable, __file__, "--child", name),
                    *("--body-file", str(body_file), "--requests", str(requests)),
                    *("--out", str(out)),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=600,
            )
        if done.returncode != 0:
            tail = errors.read_text(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{name}: exit {done.returncode}: {' '.join(tail)}")
        value: float = json.loads(out.read_text())["us"]
        return value


def run(*, quick: bool, runs: int) -> Section:
    requests = 200 if quick else 3000
    body = json.dumps({"text": message(), "kind": "message"}).encode()
    per_app: dict[str, list[float]] = {name: [] for name in APPS}
    times: dict[str, list[float]] = {name: [] for name in APPS}
    with tempfile.TemporaryDirectory(prefix="coach-bench-layers-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        for index in range(runs):
            names = list(APPS)
            if index % 2:
                names.reverse()
            this_run = {name: _child(name, body_file, requests) for name in names}
            for name in APPS:
                per_app[name].append(this_run[name])
                times[name].append(this_run[name] / this_run["echo"])
    rows = [
        [APPS[name], fmt_stat(Stat.of(per_app[name]), " µs"), fmt_stat(Stat.of(times[name]), "x")]
        for name in APPS
    ]
    coach = [per_app["coach"][i] for i in range(runs)]
    shares = {
        "the framework with coach's models": [per_app["models"][i] for i in range(runs)],
        "coach's layers (middleware, log line, metrics, limits)": [
            per_app["api"][i] - per_app["models"][i] for i in range(runs)
        ],
        "the review (rule engine, with the rewrite)": [
            per_app["coach"][i] - per_app["api"][i] for i in range(runs)
        ],
    }
    split = [
        [
            what,
            fmt_stat(Stat.of(v), " µs"),
            fmt_stat(Stat.of([x / c for x, c in zip(v, coach, strict=True)]), "x"),
        ]
        for what, v in shares.items()
    ]
    headlines = [
        Headline(f"{APPS[name]} / echo, µs per request", Stat.of(times[name]), "x")
        for name in ("models", "api", "coach")
    ]
    body_md = "\n".join(
        [
            f"Each app called directly as ASGI, {requests:,} requests of a "
            f"{len(json.loads(body)['text'])}-character message per app per run after a "
            f"warm-up, each app in its own process, {runs} run(s). Median (min–max) over runs. "
            "Echo's rate is what bench_api calls the ceiling; 0.6 of its rate means a request "
            "may cost at most 1/0.6 = 1.67x the echo's time.",
            "",
            table(["app", "per request", "x echo"], rows),
            "",
            "A coach request, split (differences between the apps above, same run):",
            "",
            table(["part", "per request", "share of a coach request"], split),
            "",
            headline_table(headlines),
        ]
    )
    return Section(TITLE, body_md, headlines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Where a request's time goes, in process.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", choices=list(APPS), help=argparse.SUPPRESS)
    parser.add_argument("--body-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=3000, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        body = args.body_file.read_bytes()
        us = asyncio.run(_measure(args.child, body, args.requests))
        args.out.write_text(json.dumps({"us": us}))
        return
    print(run(quick=args.quick, runs=args.runs).markdown())


if __name__ == "__main__":
    main()
