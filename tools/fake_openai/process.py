"""Start the fake server as a real process and stop it: for tests, the eval harness and bench.

with running("--seed", "1", "--latency", "0.05") as fake:
    settings = Settings(llm_base_url=fake.base_url, llm_model=MODEL_ID)
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from tools.fake_openai import LISTENING_PREFIX

__all__ = ["FakeServer", "running", "start"]

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass
class FakeServer:
    process: subprocess.Popen[str]
    base_url: str  # http://127.0.0.1:PORT/v1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(*args: str, access_log: Path | None = None) -> FakeServer:
    """Spawn `python -m tools.fake_openai --port 0 ARGS` and wait for its URL: quiet, or with
    its access log (one line per request) written to `access_log`."""
    quiet = [] if access_log is not None else ["--quiet"]
    with (
        access_log.open("w", encoding="utf-8") if access_log is not None else nullcontext()
    ) as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.fake_openai", "--port", "0", *quiet, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=sink if sink is not None else subprocess.DEVNULL,
            text=True,
        )
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    server = FakeServer(process, "")
    try:
        line = lines.get(timeout=START_TIMEOUT_S).strip()
    except queue.Empty:
        server.stop()
        raise RuntimeError(f"the fake server did not start within {START_TIMEOUT_S:.0f}s") from None
    if not line.startswith(LISTENING_PREFIX):
        server.stop()
        raise RuntimeError(f"the fake server did not start (exit code {process.poll()})")
    server.base_url = line.removeprefix(LISTENING_PREFIX)
    return server


@contextmanager
def running(*args: str) -> Iterator[FakeServer]:
    server = start(*args)
    try:
        yield server
    finally:
        server.stop()
