"""The README's two set-up commands are the ones CI and users actually run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text("utf-8")
    run = re.search(r"\*\*Run coach\*\*.*?```bash\n(.+?)\n```", readme, re.S)
    test = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.+?)\n```", readme, re.S)
    assert run and test, "README lost its two quick-start commands"
    return run.group(1).strip(), test.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert test in ci.splitlines()


def test_readme_run_command_uses_a_shipped_example() -> None:
    run, _ = _commands()
    example = run.split("coach review", 1)[1].split()[0]
    assert (ROOT / example).is_file()


def test_readme_names_every_rule_of_the_default_rulebook() -> None:
    from coach.rulebook import default_rulebook

    readme = (ROOT / "README.md").read_text("utf-8")
    for rule_id in default_rulebook().ids:
        assert f"`{rule_id}`" in readme


def test_readme_documents_every_setting() -> None:
    from coach.settings import _ENV

    readme = (ROOT / "README.md").read_text("utf-8")
    for name in [*_ENV.values(), "COACH_LLM_API_KEY", "COACH_CONFIG"]:
        assert f"`{name}`" in readme, name
