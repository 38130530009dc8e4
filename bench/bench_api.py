"""The HTTP API against its framework ceiling, on loopback.

    .venv/bin/python bench/bench_api.py [--quick] [--runs N]

Five servers, each `uvicorn --factory ... --workers 1` in its own process with the same flags
(those of `coach serve`: no access log, no server header, no proxy headers, log level info):

- ceiling: bench/echo_app.py, a bare Litestar `POST /v1/reviews` that decodes the JSON body and
  answers it back;
- coach, auth off: `coach.asgi:app` with COACH_AUTH=off (the rate limiter still runs for the
  tenant "local", with a limit no run reaches; metrics are always recorded);
- coach, auth + rate limit + metrics: an API key checked against the SQLite store on every
  request, the rate limiter, and a Prometheus scrape of /metrics every second during the load;
- coach, auth off, with the rule engine's sentence memo kept (the two above run
  bench/cold_app.py, which empties it before each review): the same message again is then
  answered mostly from the memo.
- coach's API alone: bench/api_only_app.py, auth off, every request answered with a review
  computed once (no engine): what the API itself costs, so the most any engine could reach.

The load generator is this script in a separate process (`--loadgen`): a closed loop of
CONNECTIONS keep-alive HTTP/1.1 connections on raw asyncio streams (cheaper per request than an
HTTP client library, so that more of the second core is left to measure), each sending the
same `POST /v1/reviews` with a 600-character message (`{"text": ..., "kind": "message"}`, rule
engine, the API's default rewrite) as soon as the previous answer is in. Nothing is pinned to a
core: on a shared 2-core machine a server pinned to a core that other work is using loses to
it, and the scheduler balances better than a fixed split (tried: pinned runs were noisier and
favoured whichever server slept most). The generator competes with the server for the two
cores, the same for every server. Each run measures the servers one after the other
(rotating the order); the headline is each coach server's requests per second over the
ceiling's in the same run (target >= 0.6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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
    percentile,
    table,
)

TITLE = "API vs framework ceiling"
TARGET = 0.6
CONNECTIONS = 8
MESSAGE_CHARS = 600
ENGINE_ALONE = "rule engine alone, in process"
WARM = "coach, auth off, the same draft again (sentence memo on)"
API_ONLY = "coach's API alone, auth off (a review precomputed, no engine)"
BENCH = Path(__file__).resolve().parent
UVICORN_FLAGS = [
    "--workers",
    "1",
    "--no-access-log",
    "--no-server-header",
    "--no-proxy-headers",
    "--log-level",
    "info",
]
START_TIMEOUT_S = 60.0


# -- the load generator (runs in its own process) ---------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection sending `request` in a closed loop until `stop_at`."""

    def __init__(self, gen: _Load) -> None:
        self.gen = gen
        self.buffer = bytearray()
        self.need: int | None = None
        self.status = 0
        self.sent_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if time.perf_counter() >= self.gen.stop_at:
            self.transport.close()
            return
        self.buffer.clear()
        self.need = None
        self.sent_at = time.perf_counter()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            start = head.find(b"\r\ncontent-length:")
            if start < 0:
                raise RuntimeError("response without Content-Length")
            stop = head.find(b"\r\n", start + 2)
            length = int(head[start + 17 : stop if stop > 0 else None])
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            now = time.perf_counter()
            if self.gen.measure_from <= now <= self.gen.stop_at:
                self.gen.latencies.append((now - self.sent_at) * 1000)
                if self.status != 200:
                    self.gen.errors += 1
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class _Load:
    request: bytes
    measure_from: float
    stop_at: float
    latencies: list[float]
    errors: int = 0


async def _scrape(port: int, path: str, every: float, stop_at: float) -> int:
    """GET `path` every `every` seconds on its own connection (a Prometheus scrape)."""
    count = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        while time.perf_counter() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            await reader.readexactly(length)
            count += 1
            await asyncio.sleep(every)
    finally:
        writer.close()
    return count


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    body = Path(args.body_file).read_bytes()
    headers = [
        f"POST {args.path} HTTP/1.1",
        f"Host: 127.0.0.1:{args.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if args.key:
        headers.append(f"Authorization: Bearer {args.key}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    started = time.perf_counter()
    load = _Load(request, started + args.warmup, started + args.warmup + args.duration, [])
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(args.connections):
        _, client = await loop.create_connection(lambda: _Client(load), "127.0.0.1", args.port)
        clients.append(client)
    scraped = 0
    scrape = None
    if args.scrape:
        scrape = asyncio.create_task(_scrape(args.port, args.scrape, 1.0, load.stop_at))
    await asyncio.gather(*(c.done for c in clients))
    if scrape is not None:
        scraped = await scrape
    latencies = load.latencies
    return {
        "requests": len(latencies),
        "errors": load.errors,
        "rps": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 0.5) if latencies else 0.0,
        "p99_ms": percentile(latencies, 0.99) if latencies else 0.0,
        "scrapes": scraped,
    }


def _engine_alone(args: argparse.Namespace) -> dict[str, Any]:
    """The rule engine on the same body in a plain loop, no HTTP: the most any server can do."""
    from coach.engines.rules.lexicon import forget_chunks
    from coach.models import ReviewRequest
    from coach.service import ReviewService

    data = json.loads(Path(args.body_file).read_bytes())
    # As the servers run (bench/cold_app.py): every request a draft not seen before.
    forget: Callable[[], None] = (lambda: None) if args.warm else forget_chunks
    service = ReviewService()
    request = ReviewRequest(text=data["text"], kind=data["kind"])
    service.review_sync(request)  # loads the lexicon, compiles the patterns
    count = 0
    started = time.perf_counter()
    measure_from = started + args.warmup
    stop_at = measure_from + args.duration
    while (now := time.perf_counter()) < stop_at:
        forget()
        service.review_sync(request, rewrite=True)  # the API's default
        if now >= measure_from:
            count += 1
    return {"rps": count / args.duration}


# -- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    key: str = ""
    scrape: str = ""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    env.update(extra)
    return env


def wait_ready(server: Server, body: bytes) -> None:
    import httpx

    headers = {"Content-Type": "application/json"}
    if server.key:
        headers["Authorization"] = f"Bearer {server.key}"
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{server.port}/v1/reviews"
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name}: server exited ({server.process.returncode})")
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=5)
            if answer.status_code != 200:
                raise RuntimeError(f"{server.name}: HTTP {answer.status_code}: {answer.text[:200]}")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: not ready in {START_TIMEOUT_S:.0f}s") from None
            time.sleep(0.1)


@contextmanager
def serving(
    name: str, target: list[str], env: dict[str, str], cores: set[int] | None
) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", *target),
            *("--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if cores is not None:
            os.sched_setaffinity(process.pid, cores)
        yield Server(name, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _create_key(data_dir: Path) -> subprocess.Popen[str]:
    """`coach keys create` in the background (its stdout's last line is the key)."""
    return subprocess.Popen(
        [sys.executable, "-m", "coach", "keys", "create", "--tenant", "bench"],
        cwd=ROOT,
        env=clean_env(COACH_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _key(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"coach keys create failed ({process.returncode})")
    return out.strip().splitlines()[-1]


def message(chars: int = MESSAGE_CHARS) -> str:
    """English messages of the dev set joined and cut to `chars` characters. (Read as plain
    JSON lines: this process does not import coach.)"""
    lines = (ROOT / "evals" / "datasets" / "dev.jsonl").read_text("utf-8").splitlines()
    cases = [json.loads(line) for line in lines if line.strip()]
    texts: list[str] = [
        c["text"] for c in cases if c["kind"] == "message" and c.get("language") == "en"
    ]
    out = texts[0]
    for text in texts[1:] * 10:
        if len(out) >= chars:
            break
        out = f"{out}\n\n{text}"
    return out[:chars]


def _child(
    mode: str, body_file: Path, duration: float, warmup: float, *extra: str
) -> dict[str, Any]:
    command = [sys.executable, __file__, mode, *extra, "--body-file", str(body_file)]
    command += ["--duration", str(duration), "--warmup", str(warmup)]
    out = subprocess.run(
        command, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=duration + 300, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _load(server: Server, body_file: Path, duration: float, warmup: float) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--loadgen",
        "--port",
        str(server.port),
        "--body-file",
        str(body_file),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--connections",
        str(CONNECTIONS),
    ]
    if server.key:
        command += ["--key", server.key]
    if server.scrape:
        command += ["--scrape", server.scrape]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=duration + warmup + 120)
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}) on {server.name}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run(*, quick: bool, runs: int) -> Section:
    duration, warmup = (0.3, 0.1) if quick else (3.0, 0.5)
    text = message()
    body = json.dumps({"text": text, "kind": "message"}).encode()
    high = str(1_000_000_000)
    with tempfile.TemporaryDirectory(prefix="coach-bench-api-") as tmp, ExitStack() as stack:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        full_dir = Path(tmp) / "full"
        creating = _create_key(full_dir)  # while the other two servers start
        echo = stack.enter_context(
            serving(
                "ceiling (bare Litestar echo)",
                ["--app-dir", str(BENCH), "--factory", "echo_app:app"],
                clean_env(),
                None,
            )
        )
        cold = ["--app-dir", str(BENCH), "--factory", "cold_app:app"]
        plain = stack.enter_context(
            serving(
                "coach, auth off",
                cold,
                clean_env(
                    COACH_AUTH="off", COACH_RATE_LIMIT=high, COACH_DATA_DIR=str(Path(tmp) / "off")
                ),
                None,
            )
        )
        warm = stack.enter_context(
            serving(
                WARM,
                ["--factory", "coach.asgi:app"],
                clean_env(
                    COACH_AUTH="off", COACH_RATE_LIMIT=high, COACH_DATA_DIR=str(Path(tmp) / "warm")
                ),
                None,
            )
        )
        api_only = stack.enter_context(
            serving(
                API_ONLY,
                ["--app-dir", str(BENCH), "--factory", "api_only_app:app"],
                clean_env(
                    COACH_AUTH="off", COACH_RATE_LIMIT=high, COACH_DATA_DIR=str(Path(tmp) / "api")
                ),
                None,
            )
        )
        key = _key(creating)
        full = stack.enter_context(
            serving(
                "coach, auth + rate limit + metrics",
                cold,
                clean_env(COACH_AUTH="on", COACH_RATE_LIMIT=high, COACH_DATA_DIR=str(full_dir)),
                None,
            )
        )
        full.key = key
        full.scrape = "/metrics"
        servers = [echo, plain, full, warm, api_only]
        for server in servers:
            wait_ready(server, body)
        results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        ratios: dict[str, list[float]] = {
            plain.name: [],
            full.name: [],
            warm.name: [],
            api_only.name: [],
        }
        alone: list[float] = []
        versus_alone: list[float] = []
        for index in range(runs):
            order = servers[index % len(servers) :] + servers[: index % len(servers)]
            this_run = {}
            for server in order:
                this_run[server.name] = _load(server, body_file, duration, warmup)
                results[server.name].append(this_run[server.name])
            for name in ratios:
                ratios[name].append(this_run[name]["rps"] / this_run[echo.name]["rps"])
            engine = _child("--engine-alone", body_file, duration, warmup)["rps"]
            alone.append(engine)
            versus_alone.append(this_run[plain.name]["rps"] / engine)
    rows = []
    for server in servers:
        got = results[server.name]
        rows.append(
            [
                server.name,
                fmt_stat(Stat.of([r["rps"] for r in got])),
                fmt_stat(Stat.of([r["p50_ms"] for r in got])),
                fmt_stat(Stat.of([r["p99_ms"] for r in got])),
                str(sum(r["errors"] for r in got)),
            ]
        )
    rows.append([ENGINE_ALONE, fmt_stat(Stat.of(alone)), "-", "-", "-"])
    headlines = [
        Headline(
            f"{name} / ceiling, requests/s",
            Stat.of(values),
            "x",
            TARGET if name not in (WARM, API_ONLY) else None,
        )
        for name, values in ratios.items()
    ]
    headlines.append(Headline(f"{plain.name} / {ENGINE_ALONE}", Stat.of(versus_alone), "x"))
    body_md = "\n".join(
        [
            f"`POST /v1/reviews` with a {len(text)}-character message, {CONNECTIONS} keep-alive "
            f"connections in a closed loop, {warmup:g} s warm-up then {duration:g} s measured "
            f"per server per run, {runs} run(s). Figures are the median (min–max) "
            "over runs; latencies are each run's p50/p99 under that load. The first two coach "
            "servers empty the rule engine's sentence memo before each review, so each request "
            "is reviewed as a draft the server has not seen (real traffic; within the review, "
            "the rewrite still reuses the draft's sentences); the fourth server keeps it, which "
            "is what a client re-checking the same draft gets (a browser extension re-checking "
            "as the user types sees something in between). The fifth server is coach's API "
            "with the engine taken out (bench/api_only_app.py: every request gets a review "
            "computed once): the most any engine could reach behind this API. The last row is "
            "the same review (with the rewrite, as the API does by default, memo emptied) in a "
            "plain loop in its own process, no HTTP: the most a one-worker server could answer.",
            "",
            table(["server", "requests/s", "p50 ms", "p99 ms", "non-200"], rows),
            "",
            headline_table(headlines),
        ]
    )
    return Section(TITLE, body_md, headlines)


def main() -> None:
    parser = argparse.ArgumentParser(description="coach's API against its framework ceiling.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine-alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/v1/reviews", help=argparse.SUPPRESS)
    parser.add_argument("--body-file", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--scrape", default="", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(_loadgen(args))))
        return
    if args.engine_alone:
        print(json.dumps(_engine_alone(args)))
        return
    print(run(quick=args.quick, runs=args.runs).markdown())


if __name__ == "__main__":
    main()
