"""The Dockerfile cannot be built on these machines (no Docker engine), so its promises are
checked statically: multi-stage, non-root, a health check, and `coach serve`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text("utf-8")


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, re.MULTILINE)


def test_multi_stage() -> None:
    stages = _instructions("FROM")
    assert len(stages) >= 2
    assert any("--from=builder" in line for line in _instructions("COPY"))


def test_runs_as_a_non_root_user() -> None:
    users = _instructions("USER")
    assert users and users[-1].strip() not in {"root", "0"}


def test_has_a_healthcheck_on_healthz() -> None:
    assert re.search(r"^HEALTHCHECK .*\n?.*?/healthz", DOCKERFILE, re.MULTILINE | re.DOTALL)


def test_runs_coach_serve() -> None:
    assert _instructions("CMD")[-1].strip() == '["coach", "serve"]'


def test_ships_the_prompts_the_llm_engine_reads() -> None:
    assert "COPY prompts" in DOCKERFILE and "COACH_PROMPTS_DIR=/app/prompts" in DOCKERFILE


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
    for entry in (".git", ".venv", ".coach"):
        assert entry in ignored
