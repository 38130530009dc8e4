"""The LLM judge: its request, its validation, kappa against the labels, the untrusted flag, and
`coach eval run --judge` end to end against the fake server, then replayed offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli

from coach.engines.llm.call import CallStats, Completion, ModelCaller
from coach.engines.llm.judge import Judge
from coach.engines.llm.prompts import delimiters, render_rulebook
from coach.errors import LLMInvalidOutput
from coach.evals.dataset import Case
from coach.evals.judging import JudgeRun, judge_summary
from coach.evals.report import markdown
from coach.evals.runner import build_result
from coach.models import Context, Kind, Language
from coach.rulebook import load_rulebook
from coach.settings import Settings
from tools.fake_openai.process import running

REPO = Path(__file__).resolve().parents[2]
SLICE = REPO / "evals" / "datasets" / "dev-slice30.jsonl"
UNREACHABLE = "http://127.0.0.1:9/v1"
BOOK = load_rulebook(None)
RULES = [rule.id for rule in BOOK.enabled]


class StubCaller(ModelCaller):
    """Answers each draft with the verdicts given for it; records the requests."""

    def __init__(self, answers: dict[str, dict[str, str]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []

    async def complete(
        self, request: dict[str, Any], *, deadline: float, stats: CallStats
    ) -> Completion:
        self.requests.append(request)
        user = request["messages"][-1]["content"]
        for text, verdicts in self.answers.items():
            open_line, close_line = delimiters(text)
            if f"{open_line}\n{text}\n{close_line}" in user:
                rules = [
                    {"rule_id": r, "verdict": verdicts.get(r, "pass"), "confidence": 1,
                     "reason": "."}
                    for r in RULES
                ]  # fmt: skip
                return Completion(json.dumps({"rules": rules, "extra": 1}))
        return Completion("{}")


def settings(**updates: Any) -> Settings:
    return Settings(llm_model="judge-model", llm_base_url=UNREACHABLE).model_copy(update=updates)


def case(case_id: str, text: str, **expected: str) -> Case:
    return Case.model_validate(
        {"id": case_id, "kind": "message", "language": "en", "text": text, "expected": expected}
    )


def test_the_request_has_the_schema_the_delimiters_and_the_rulebook() -> None:
    stub = StubCaller({"Hello there": {}})
    judge = Judge(settings(), BOOK, caller=stub)
    context = Context.model_validate({"relationship": "new"})
    verdicts = asyncio.run(judge.judge("Hello there", Kind.message, Language.en, context))
    assert verdicts == dict.fromkeys(sorted(RULES), "pass")
    (request,) = stub.requests
    assert request["model"] == "judge-model"
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "coach_judge_v1"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["rules"]
    system, user = request["messages"]
    assert system["role"] == "system" and render_rulebook(BOOK) in system["content"]
    open_line, close_line = delimiters("Hello there")
    lines = user["content"].splitlines()
    assert lines[:4] == [
        "Kind of draft: message",
        "Language: en (English)",
        'Context (JSON): {"relationship": "new", "thread": []}',
        "Rewrite: no",
    ]
    assert lines[-3:] == [open_line, "Hello there", close_line]


def test_json_object_mode_puts_the_schema_in_the_prompt() -> None:
    stub = StubCaller({"Hi": {}})
    asyncio.run(
        Judge(settings(llm_response_format="json_object"), BOOK, caller=stub).judge(
            "Hi", Kind.message
        )
    )
    request = stub.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert '"rules"' in request["messages"][0]["content"]


def test_invalid_or_incomplete_answers_raise() -> None:
    judge = Judge(settings(), BOOK, caller=StubCaller({}))
    with pytest.raises(LLMInvalidOutput):
        asyncio.run(judge.judge("not known", Kind.message, Language.en))

    class Partial(StubCaller):
        async def complete(
            self, request: dict[str, Any], *, deadline: float, stats: CallStats
        ) -> Completion:
            one = {"rule_id": RULES[0], "verdict": "pass", "confidence": 1, "reason": "."}
            return Completion(json.dumps({"rules": [one]}))

    with pytest.raises(LLMInvalidOutput, match="no verdict for"):
        asyncio.run(Judge(settings(), BOOK, caller=Partial({})).judge("x", Kind.message))


def summary_for(
    answers: dict[str, dict[str, str]], cases: list[Case], rewrites: list[str]
) -> dict[str, Any]:
    judge = Judge(settings(), BOOK, caller=StubCaller(answers))
    by_text = {c.text: c for c in cases}
    todo = [(by_text.get(t, cases[0]), 0, t) for t in rewrites]
    run = asyncio.run(JudgeRun(judge).run(cases, todo))
    return judge_summary(run, model="judge-model", prompt={"version": "v1"}, has_rewrites=True)


A, B = RULES[0], RULES[1]


def test_kappa_against_the_labels_and_trusted_rewrites() -> None:
    cases = [
        case("c1", "one", **{A: "fail", B: "fail"}),
        case("c2", "two", **{A: "fail", B: "pass"}),
        case("c3", "three", **{A: "pass", B: "pass"}),
        case("c4", "four", **{A: "pass", B: "fail"}),
    ]
    answers = {
        # Rule A: judged exactly like the labels (kappa 1). Rule B: judge fails c1, c2
        # (labels fail, pass): pairs (F,F) (P,F) (P,P) (F,P) → po 0.5, pe 0.5 → kappa 0.
        "one": {A: "fail", B: "fail"},
        "two": {A: "fail", B: "fail"},
        "three": {A: "not_applicable", B: "pass"},
        "four": {A: "pass", B: "pass"},
        "fixed one": {},
        "fixed two": {B: "fail"},
    }
    summary = summary_for(answers, cases, ["fixed one", "fixed two"])
    agreement = summary["agreement"]
    assert agreement["rules"][A] == {"n": 4, "kappa": 1.0}
    assert agreement["rules"][B] == {"n": 4, "kappa": 0.0}
    # Pooled 8 pairs: labels F,F,F,P,P,P,P,F vs judge F,F,F,F,P,P,P,P: po 6/8, pe 0.5 → 0.5.
    assert agreement["n"] == 8 and agreement["kappa"] == 0.5
    assert agreement["cases"] == 4 and agreement["errors"] == {}
    assert summary["trusted"] is False
    rewrites = summary["rewrites"]
    assert rewrites["untrusted"] is True and rewrites["n"] == 2
    assert rewrites["rules"][A]["share"] == 1.0
    assert rewrites["rules"][B] == {
        "n": 2, "passed": 1, "share": 0.5, "wilson95": rewrites["rules"][B]["wilson95"]
    }  # fmt: skip
    assert rewrites["all_pass"]["passed"] == 1


def test_a_judge_that_agrees_is_trusted_and_errors_are_counted() -> None:
    cases = [case("c1", "one", **{A: "fail"}), case("c2", "two", **{A: "pass"})]
    answers = {"one": {A: "fail"}, "two": {}, "good": {}}
    summary = summary_for(answers, cases, ["good", "unknown to the judge"])
    assert summary["agreement"]["kappa"] == 1.0 and summary["trusted"] is True
    assert summary["rewrites"]["untrusted"] is False
    assert summary["rewrites"]["n"] == 1
    assert summary["rewrites"]["errors"] == {"invalid_output": 1}

    result = build_result([], engine="llm", rulebook_version="1", datasets=["d"], seconds=0)
    result.judge = summary
    text = markdown(result)
    assert "## LLM judge" in text and "trusted" in text and "Untrusted" not in text
    result.judge = summary | {
        "trusted": False,
        "rewrites": summary["rewrites"] | {"untrusted": True},
    }
    assert "**untrusted**" in markdown(result)


def test_eval_run_judge_records_with_the_fake_server_then_replays(
    tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COACH_LLM_MODEL", "fake-coach")
    monkeypatch.setenv("COACH_LLM_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("COACH_DATA_DIR", str(tmp_path / "data"))
    for name in ("COACH_LLM_API_KEY", "OPENAI_API_KEY", "COACH_CACHE_DIR", "COACH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    dataset = tmp_path / "first4.jsonl"
    dataset.write_text("".join(SLICE.read_text("utf-8").splitlines(True)[:4]), "utf-8")
    cache = tmp_path / "cache"
    base = ["eval", "run", "--engine", "llm", "--judge", "--rewrite", "--dataset", str(dataset),
            "--cache-dir", str(cache)]  # fmt: skip

    with running("--seed", "1") as fake:
        monkeypatch.setenv("COACH_LLM_BASE_URL", fake.base_url)
        result = run_cli([*base, "--out", str(tmp_path / "live")])
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "live" / "report.json").read_text("utf-8"))
    judge = report["judge"]
    assert judge["prompt"]["version"] == "v1" and judge["model"] == "fake-coach"
    assert judge["agreement"]["cases"] == 4 and judge["agreement"]["errors"] == {}
    assert judge["agreement"]["n"] > 0 and judge["agreement"]["kappa"] is not None
    assert judge["rewrites"]["n"] == 4 and judge["rewrites"]["errors"] == {}
    assert judge["rewrites"]["untrusted"] is (judge["agreement"]["kappa"] < 0.6)
    assert "## LLM judge" in (tmp_path / "live" / "report.md").read_text("utf-8")
    page = (tmp_path / "live" / "report.html").read_text("utf-8")
    assert "<h2>LLM judge</h2>" in page and "kappa" in page
    manifest = json.loads((tmp_path / "live" / "manifest.json").read_text("utf-8"))
    assert manifest["parameters"]["judge"] is True

    # Offline: the judge calls were recorded too.
    monkeypatch.setenv("COACH_LLM_BASE_URL", UNREACHABLE)
    result = run_cli([*base, "--replay", "--out", str(tmp_path / "replay")])
    assert result.code == 0, result.err
    replayed = json.loads((tmp_path / "replay" / "report.json").read_text("utf-8"))
    assert replayed["judge"]["agreement"] == judge["agreement"]
    assert replayed["judge"]["rewrites"] == judge["rewrites"]

    # The rule engine needs no recordings, but a fifth case's draft was never judged: exit 1.
    lines = SLICE.read_text("utf-8").splitlines(True)
    dataset.write_text("".join(lines[:5]), "utf-8")
    fifth = json.loads(lines[4])["id"]
    rules = [a for a in base if a not in ("--engine", "llm")]
    result = run_cli([*rules, "--replay", "--out", str(tmp_path / "miss")])
    assert result.code == 1
    assert f"replay: no recording for the judge of case {fifth}" in result.err
