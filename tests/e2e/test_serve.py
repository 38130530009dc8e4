"""`coach serve` as a real process: it starts with zero set-up (SQLite created in the data
directory), answers, and shuts down cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_starts_answers_and_stops_gracefully(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "COACH_AUTH": "off", "COACH_DATA_DIR": str(tmp_path / "data")}
    for name in ("COACH_DATABASE_URL", "COACH_LLM_MODEL", "COACH_LLM_BASE_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "coach", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "coach serve did not become ready"
            time.sleep(0.2)
        review = httpx.post(
            f"{base}/v1/reviews", json={"text": "Can we hop on a call?"}, timeout=10
        )
        assert review.status_code in (200, 201) and review.json()["engine"] == "rules"
        assert (tmp_path / "data" / "coach.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
    _, err = process.communicate()
    # Uvicorn finishes in-flight work and the app's shutdown, then re-raises the signal so the
    # exit status says how the process ended.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in err
    assert "auth" in err.lower()  # the server says at start that auth is off
    assert "Can we hop on a call?" not in err
