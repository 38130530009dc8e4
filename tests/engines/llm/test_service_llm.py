"""The LLM engine behind the service and the CLI: engine choice, settings from the environment,
and privacy (a draft never reaches the logs, on success or on fallback)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llm_fakes import (
    API_KEY,
    ASK_DRAFT,
    BASE_URL,
    CHAT_URL,
    MODEL,
    completion,
    error,
    finding,
    fresh_logging,
    make_request,
    make_settings,
    mock_llm,
    review_body,
    sent,
)

from coach.cli.main import main
from coach.errors import InputError
from coach.models import Review, ReviewRequest
from coach.service import ReviewService
from coach.settings import Settings

CANARY = "Hi Orly, zebra-canary-5521 speaking: could you introduce me to your head of procurement?"
CANARY_WORD = "zebra-canary-5521"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No COACH_* or OPENAI_* variable from the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith(("COACH_", "OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name)
    with fresh_logging():
        yield


def llm_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    monkeypatch.setenv("COACH_LLM_BASE_URL", BASE_URL)
    monkeypatch.setenv("COACH_LLM_MODEL", MODEL)
    monkeypatch.setenv("COACH_LLM_API_KEY", API_KEY)
    monkeypatch.setenv("COACH_LLM_DEADLINE", "2")
    monkeypatch.setenv("COACH_LLM_MAX_ATTEMPTS", "1")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def serve(settings: Settings, request: ReviewRequest, engine: str) -> Review:
    service = ReviewService(settings=settings)
    try:
        return service.review_sync(request, engine=engine)
    finally:
        service.close()


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def draft_file(tmp_path: Path, text: str = ASK_DRAFT) -> str:
    path = tmp_path / "draft.txt"
    path.write_text(text, "utf-8")
    return str(path)


# --- the service -----------------------------------------------------------------------------


def test_auto_uses_the_llm_when_configured() -> None:
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        review = serve(make_settings(), make_request(ASK_DRAFT), "auto")
    assert route.call_count == 1
    assert review.engine == "llm" and not review.degraded
    assert review.usage is not None and review.usage.model == MODEL


def test_auto_uses_the_rules_when_not_configured() -> None:
    with mock_llm() as router:
        route = router.route().mock(return_value=completion())
        review = serve(Settings(), make_request(ASK_DRAFT), "auto")
    assert route.call_count == 0
    assert review.engine == "rules" and not review.degraded and review.usage is None


def test_auto_falls_back_to_the_rules_when_the_llm_fails() -> None:
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=error(503))
        review = serve(make_settings(llm_max_attempts=1), make_request(ASK_DRAFT), "auto")
    assert route.call_count == 1
    assert review.engine == "rules" and review.degraded


def test_engine_llm_unconfigured_is_an_input_error() -> None:
    service = ReviewService(settings=Settings(llm_model=MODEL))  # a model but nowhere to send it
    with pytest.raises(InputError, match="not configured"):
        service.review_sync(make_request(ASK_DRAFT), engine="llm")
    assert service.resolve("auto") == "rules"
    assert ReviewService(settings=make_settings()).resolve("auto") == "llm"


def test_the_service_keeps_one_engine_so_its_cache_works_across_calls() -> None:
    service = ReviewService(settings=make_settings())
    try:
        with mock_llm() as router:
            route = router.post(CHAT_URL).mock(return_value=completion())
            first = service.review_sync(make_request(ASK_DRAFT), engine="llm")
            second = service.review_sync(make_request(ASK_DRAFT), engine="llm")
    finally:
        service.close()
    assert route.call_count == 1
    assert first.engine == second.engine == "llm"
    assert second.usage is not None and second.usage.cache_hit


# --- settings from the environment -----------------------------------------------------------


def test_openai_api_key_is_used_when_coach_llm_api_key_is_absent() -> None:
    settings = Settings.from_env(
        {"COACH_LLM_BASE_URL": BASE_URL, "COACH_LLM_MODEL": MODEL, "OPENAI_API_KEY": "sk-openai-1"}
    )
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-openai-1"
    both = Settings.from_env(
        {"COACH_LLM_MODEL": MODEL, "OPENAI_API_KEY": "sk-openai-1", "COACH_LLM_API_KEY": API_KEY}
    )
    assert both.llm_api_key is not None and both.llm_api_key.get_secret_value() == API_KEY
    assert both.llm_configured  # a model and an OpenAI key are enough


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_review_engine_llm_uses_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_env(monkeypatch)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        code, out, err = run_cli(
            capsys, ["review", "--engine", "llm", "--format", "json", draft_file(tmp_path)]
        )
    assert code == 0, err
    result = json.loads(out)
    assert result["engine"] == "llm" and result["degraded"] is False
    assert result["usage"]["model"] == MODEL
    assert route.call_count == 1
    assert route.calls[0].request.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent(route)["model"] == MODEL


def test_cli_uses_openai_api_key_when_coach_key_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_env(monkeypatch)
    monkeypatch.delenv("COACH_LLM_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        code, out, err = run_cli(
            capsys, ["review", "--engine", "llm", "--format", "json", draft_file(tmp_path)]
        )
    assert code == 0, err
    assert json.loads(out)["engine"] == "llm"
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-from-openai-env"
    assert "sk-from-openai-env" not in out + err


def test_cli_auto_picks_the_llm_with_the_environment_and_the_rules_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = draft_file(tmp_path)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        code, out, _ = run_cli(capsys, ["review", "--engine", "auto", "--format", "json", path])
        assert code == 0 and json.loads(out)["engine"] == "rules"
        assert route.call_count == 0
        llm_env(monkeypatch)
        code, out, _ = run_cli(capsys, ["review", "--engine", "auto", "--format", "json", path])
        assert code == 0 and json.loads(out)["engine"] == "llm"
        assert route.call_count == 1


def test_cli_engine_llm_unconfigured_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, ["review", "--engine", "llm", draft_file(tmp_path)])
    assert code == 2
    assert out == ""
    assert err.startswith("coach: error:") and "not configured" in err


def test_cli_falls_back_to_the_rules_when_the_llm_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_env(monkeypatch)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=error(500))
        code, out, err = run_cli(
            capsys, ["review", "--engine", "llm", "--format", "json", draft_file(tmp_path)]
        )
    assert code == 0, err
    result = json.loads(out)
    assert result["engine"] == "rules" and result["degraded"] is True
    assert result["degraded_reason"].startswith("provider_error: ")
    assert route.call_count == 1  # COACH_LLM_MAX_ATTEMPTS=1


# --- privacy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("responses", "engine"),
    [
        pytest.param(
            [completion(review_body(findings=[finding("give-first", CANARY_WORD)]))],
            "llm",
            id="success",
        ),
        pytest.param([error(500)], "rules", id="fallback-5xx"),
        pytest.param(
            # A provider that echoes the input in its error message.
            [error(400, f"bad request near '{CANARY}'")],
            "rules",
            id="fallback-400-echo",
        ),
        pytest.param([completion(CANARY), completion(CANARY)], "rules", id="fallback-invalid"),
        pytest.param([RuntimeError(CANARY)], "rules", id="fallback-internal"),
    ],
)
def test_a_draft_never_reaches_the_logs(
    responses: list[httpx.Response | Exception], engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with fresh_logging("DEBUG"), mock_llm() as router:
        router.post(CHAT_URL).mock(side_effect=responses)
        review = serve(
            make_settings(llm_max_attempts=1, llm_deadline_s=5), make_request(CANARY), "llm"
        )
    out, err = capsys.readouterr()
    assert review.engine == engine
    # The logs were written (so the check below is not vacuous) ...
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    names = {e["event"] for e in events}
    assert ("llm_review" if engine == "llm" else "llm_fallback") in names
    assert "review" in names  # the service's own line
    # ... and none of them carries the draft.
    assert CANARY_WORD not in err and CANARY not in err
    assert CANARY_WORD not in out
    if review.degraded:
        assert review.degraded_reason is not None
        assert CANARY_WORD not in review.degraded_reason


def test_the_cli_never_logs_the_draft_on_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_env(monkeypatch)
    with mock_llm() as router:
        router.post(CHAT_URL).mock(return_value=error(400, f"cannot process '{CANARY}'"))
        code, out, err = run_cli(
            capsys, ["review", "--engine", "llm", "--format", "json", draft_file(tmp_path, CANARY)]
        )
    assert code == 0
    assert "llm_fallback" in err  # the warning is there ...
    assert CANARY_WORD not in err  # ... without the draft
    assert json.loads(out)["degraded"] is True
