"""Streaming: time to the first server-sent event with a slow LLM behind the API.

    .venv/bin/python bench/bench_sse.py [--quick] [--runs N]

The fake OpenAI-compatible server (tools/fake_openai) runs as a real process answering after
2 s; coach runs under uvicorn (as in bench_api.py, auth off, the rule engine's sentence memo
off: bench/cold_app.py) with COACH_LLM_* pointing at it and its LLM cache off, so neither the
plain request nor the stream is answered from what the other just reviewed. Each run streams
`POST /v1/reviews/stream` with engine "llm" (a new draft each run) and times, on the client,
the first event (it must be `rules`, the rule engine's review) and the LLM's event (it must be
`review`, about 2 s). The reference for the first event is a plain `POST /v1/reviews` (rule
engine) on the same server in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.bench_api import BENCH, clean_env, free_port, message, serving, wait_ready
from bench.common import Headline, Section, Stat, fmt_stat, headline_table, table

TITLE = "Streaming: time to first event"
LATENCY_S = 2.0


def _stream(
    client: httpx.Client, base: str, text: str
) -> list[tuple[str, float, dict[str, object]]]:
    """(event, seconds since the request was sent, data) for each event of one stream."""
    events: list[tuple[str, float, dict[str, object]]] = []
    body = {"text": text, "kind": "message", "engine": "llm"}
    started = time.perf_counter()
    with client.stream("POST", f"{base}/v1/reviews/stream", json=body) as response:
        response.raise_for_status()
        name, data = "", ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif not line and name:
                events.append((name, time.perf_counter() - started, json.loads(data)))
                name, data = "", ""
    return events


def _plain(client: httpx.Client, base: str, text: str) -> float:
    started = time.perf_counter()
    answer = client.post(f"{base}/v1/reviews", json={"text": text, "kind": "message"})
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return elapsed


def run(*, quick: bool, runs: int) -> Section:
    from tools.fake_openai import MODEL_ID
    from tools.fake_openai.process import running

    latency = 0.3 if quick else LATENCY_S
    text = message()
    firsts: list[float] = []
    llms: list[float] = []
    plains: list[float] = []
    ratios: list[float] = []
    names: list[str] = []
    fake_port = free_port()
    with tempfile.TemporaryDirectory(prefix="coach-bench-sse-") as tmp:
        env = clean_env(
            COACH_AUTH="off",
            COACH_DATA_DIR=tmp,
            COACH_LLM_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
            COACH_LLM_MODEL=MODEL_ID,
            COACH_LLM_API_KEY="bench",
            COACH_LLM_MAX_ATTEMPTS="1",
            COACH_CACHE_SIZE="0",
            COACH_CACHE_TTL="0",
        )
        # Both start side by side; coach calls the provider only once asked to.
        with (
            serving(
                "coach", ["--app-dir", str(BENCH), "--factory", "cold_app:app"], env, None
            ) as server,
            running("--port", str(fake_port), "--latency", str(latency)),
            httpx.Client(timeout=30) as client,
        ):
            wait_ready(server, json.dumps({"text": text, "kind": "message"}).encode())
            base = f"http://127.0.0.1:{server.port}"
            _plain(client, base, f"{text} (warm-up)")
            _stream(client, base, f"{text} (warm-up)")
            for index in range(runs):
                draft = f"{text} (run {index})"
                plain = _plain(client, base, draft)
                events = _stream(client, base, draft)
                names.append(" then ".join(name for name, _, _ in events))
                first, first_at, first_data = events[0]
                if first != "rules" or first_data.get("engine") != "rules":
                    raise RuntimeError(f"the first event is {first!r}, not the rule engine's")
                if len(events) < 2 or events[1][0] != "review":
                    raise RuntimeError(f"no LLM review event: {names[-1]}")
                firsts.append(first_at * 1000)
                llms.append(events[1][1])
                plains.append(plain * 1000)
                ratios.append(first_at / plain)
    first_stat = Stat.of(firsts)
    headlines = [
        Headline("first SSE event (rules), ms", first_stat, " ms"),
        Headline("first SSE event / plain POST /v1/reviews", Stat.of(ratios), "x"),
        Headline(
            "first SSE event / LLM event",
            Stat.of([f / 1000 / s for f, s in zip(firsts, llms, strict=True)]),
            "x",
        ),
    ]
    rows = [
        ["first event (`rules`)", fmt_stat(first_stat, " ms")],
        ["LLM event (`review`)", fmt_stat(Stat.of([s * 1000 for s in llms]), " ms")],
        ["plain `POST /v1/reviews` (reference)", fmt_stat(Stat.of(plains), " ms")],
    ]
    body = "\n".join(
        [
            f"Fake provider at {latency:g} s latency (a real process), coach under uvicorn, "
            f"a {len(text)}-character message with engine `llm`, {runs} run(s), times on the "
            "client from sending the request. Events in every run: "
            f"{'; '.join(sorted(set(names)))}.",
            "",
            table(["what", "median (min–max)"], rows),
            "",
            headline_table(headlines),
        ]
    )
    return Section(TITLE, body, headlines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Time to the first SSE event.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(run(quick=args.quick, runs=args.runs).markdown())


if __name__ == "__main__":
    main()
