"""The `coach` command: review, rules, eval run; exit codes and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import (
    BAD_DRAFT,
    DEV_DATASET,
    GOOD_DRAFT,
    PRICING_ANSWER,
    CliResult,
    RunCli,
)

from coach.models import MAX_TEXT_CHARS, Review, Severity, Verdict
from coach.rulebook import default_rulebook


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, "utf-8")
    return path


def json_review(result: CliResult) -> Review:
    assert result.code == 0, result.err
    return Review.model_validate_json(result.out)


def assert_usage_error(result: CliResult, *fragments: str) -> None:
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("coach: error:")
    assert result.err.endswith("\n")
    assert result.err.count("\n") == 1, result.err
    for fragment in fragments:
        assert fragment in result.err


# --- review: input and formats -----------------------------------------------------------------


def test_review_file_as_json(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    review = json_review(run_cli(["review", str(path), "--format", "json"]))
    assert [r.rule_id for r in review.rules] == default_rulebook().ids
    assert review.engine == "rules"
    assert review.verdict("give-first") is Verdict.failed
    assert review.rulebook_version == default_rulebook().version
    assert review.rewrite is not None
    for finding in review.findings:
        assert finding.span.quote == BAD_DRAFT[finding.span.start : finding.span.end]


def test_json_output_is_exactly_the_review_model(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", GOOD_DRAFT)
    result = run_cli(["review", str(path), "--format", "json"])
    data = json.loads(result.out)
    review = json_review(result)
    assert data == json.loads(review.model_dump_json())
    assert result.err == ""


def test_review_stdin_as_json(run_cli: RunCli) -> None:
    review = json_review(run_cli(["review", "-", "--format", "json"], stdin=GOOD_DRAFT.encode()))
    assert all(r.verdict is not Verdict.failed for r in review.rules)
    assert review.score == 100


def test_review_reads_stdin_when_no_file_is_given(run_cli: RunCli) -> None:
    review = json_review(run_cli(["review", "--format", "json"], stdin=BAD_DRAFT.encode()))
    assert review.verdict("give-first") is Verdict.failed


def test_review_without_file_on_a_terminal_is_a_usage_error(run_cli: RunCli) -> None:
    assert_usage_error(run_cli(["review"]), "stdin")


def test_review_text_format(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    result = run_cli(["review", str(path)])
    assert result.code == 0
    assert "procurement" in result.out
    for rule_id in default_rulebook().ids:
        assert rule_id in result.out
    assert "score" in result.out
    assert "fail" in result.out
    assert "rewrite" in result.out


def test_review_text_format_on_stdin_in_hebrew(run_cli: RunCli) -> None:
    draft = "היי דנה, שמחתי להתחבר! המערכת שלנו חוסכת חצי מזמן ההטמעה. לשלוח לך מחירון?"
    result = run_cli(["review", "-"], stdin=draft.encode())
    assert result.code == 0
    assert "מחירון" in result.out
    assert "no-cold-pitch" in result.out


def test_hebrew_review_is_written_in_hebrew(run_cli: RunCli) -> None:
    draft = "היי דנה, שמחתי להתחבר! המערכת שלנו חוסכת חצי מזמן ההטמעה. לשלוח לך מחירון?"
    review = json_review(run_cli(["review", "--format", "json"], stdin=draft.encode()))
    assert review.language.value == "he"
    hebrew = "\u05d0-\u05ea"
    for text in [review.summary, *(r.reason for r in review.rules)]:
        assert any(hebrew[0] <= ch <= hebrew[-1] for ch in text), text


def test_utf8_bom_is_accepted(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "bom.txt", "\ufeff".encode() + BAD_DRAFT.encode())
    review = json_review(run_cli(["review", str(path), "--format", "json"]))
    assert review.verdict("give-first") is Verdict.failed


def test_no_rewrite(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    review = json_review(run_cli(["review", str(path), "--format", "json", "--no-rewrite"]))
    assert review.rewrite is None


def test_language_option_overrides_detection(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    review = json_review(run_cli(["review", str(path), "--format", "json", "--language", "he"]))
    assert review.language.value == "he"


def test_kind_option(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", "Hi {{first_name}}, I would love to connect with you.")
    review = json_review(run_cli(["review", str(path), "--format", "json", "--kind", "template"]))
    assert review.kind.value == "template"
    assert review.verdict("quality-over-quantity") is Verdict.failed


# --- exit codes ------------------------------------------------------------------------------


def test_exit_0_by_default_even_when_rules_fail(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    result = run_cli(["review", str(path), "--format", "json"])
    assert result.code == 0
    assert Review.model_validate_json(result.out).verdict("give-first") is Verdict.failed


def test_fail_on_warning_exits_1_on_a_bad_draft(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    result = run_cli(["review", str(path), "--fail-on", "warning", "--format", "json"])
    assert result.code == 1
    # The review is still printed.
    assert Review.model_validate_json(result.out).verdict("give-first") is Verdict.failed


def test_fail_on_warning_exits_0_on_a_good_draft(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", GOOD_DRAFT)
    assert run_cli(["review", str(path), "--fail-on", "warning"]).code == 0


def test_fail_on_error_ignores_warnings(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    review = json_review(run_cli(["review", str(path), "--format", "json"]))
    failed = [r for r in review.rules if r.verdict is Verdict.failed]
    assert failed
    assert all(r.severity is not Severity.error for r in failed)
    assert run_cli(["review", str(path), "--fail-on", "error"]).code == 0
    assert run_cli(["review", str(path), "--fail-on", "suggestion"]).code == 1


def test_fail_on_error_exits_1_on_a_cold_pitch(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", PRICING_ANSWER)
    assert run_cli(["review", str(path), "--fail-on", "error"]).code == 1


def test_fail_on_follows_a_rulebook_severity_change(tmp_path: Path, run_cli: RunCli) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    book = write(
        tmp_path,
        "rb.yaml",
        yaml.safe_dump(
            {
                "version": "strict-1",
                "extends": "default",
                "overrides": {"give-first": {"severity": "error"}},
            }
        ),
    )
    result = run_cli(["review", str(draft), "--rulebook", str(book), "--fail-on", "error"])
    assert result.code == 1


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"   \n\t  \n", "whitespace"),
        (b"\xff\xfe\xfa", "UTF-8"),
        (b"Hi Dana, \xe2\x28\xa1 here", "UTF-8"),
    ],
)
def test_bad_input_file_exits_2(
    tmp_path: Path, run_cli: RunCli, data: bytes, fragment: str
) -> None:
    path = write(tmp_path, "draft.txt", data)
    assert_usage_error(run_cli(["review", str(path)]), fragment, str(path))


@pytest.mark.parametrize(("data", "fragment"), [(b"", "empty"), (b"\xff\xfe\xfa", "UTF-8")])
def test_bad_input_on_stdin_exits_2(run_cli: RunCli, data: bytes, fragment: str) -> None:
    assert_usage_error(run_cli(["review", "-"], stdin=data), fragment, "stdin")


def test_text_over_the_limit_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "long.txt", "a" * (MAX_TEXT_CHARS + 1))
    assert MAX_TEXT_CHARS == 20_000
    assert_usage_error(run_cli(["review", str(path)]), "20000", "20001")


def test_limit_counts_characters_not_bytes(tmp_path: Path, run_cli: RunCli) -> None:
    # 10,000 Hebrew letters are 20,000 UTF-8 bytes but only 10,000 characters.
    path = write(tmp_path, "he.txt", ("שלום " * 2000)[:10_000])
    assert run_cli(["review", str(path), "--format", "json"]).code == 0


def test_text_at_the_limit_is_reviewed(tmp_path: Path, run_cli: RunCli) -> None:
    text = ((BAD_DRAFT + " ") * (MAX_TEXT_CHARS // len(BAD_DRAFT) + 1))[: MAX_TEXT_CHARS - 1] + "?"
    assert len(text) == MAX_TEXT_CHARS
    path = write(tmp_path, "limit.txt", text)
    review = json_review(run_cli(["review", str(path), "--format", "json"]))
    assert review.verdict("give-first") is Verdict.failed


def test_missing_file_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    missing = tmp_path / "nope.txt"
    assert_usage_error(run_cli(["review", str(missing)]), "no such file")


def test_directory_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    assert_usage_error(run_cli(["review", str(tmp_path)]), "directory")


def test_rulebook_with_unknown_rule_id_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    book = write(
        tmp_path,
        "rb.yaml",
        "version: x\nextends: default\noverrides:\n  be-polite: {enabled: false}\n",
    )
    assert_usage_error(run_cli(["review", str(draft), "--rulebook", str(book)]), "be-polite")


def test_missing_rulebook_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    result = run_cli(["review", str(draft), "--rulebook", str(tmp_path / "none.yaml")])
    assert_usage_error(result, "none.yaml")


@pytest.mark.parametrize(
    "option", [["--kind", "tweet"], ["--relationship", "cousin"], ["--format", "xml"]]
)
def test_bad_option_value_exits_2(tmp_path: Path, run_cli: RunCli, option: list[str]) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    assert_usage_error(run_cli(["review", str(draft), *option]), option[0], option[1])


def test_unknown_command_exits_2(run_cli: RunCli) -> None:
    assert_usage_error(run_cli(["critique"]), "critique")


def test_help_exits_0(run_cli: RunCli) -> None:
    result = run_cli(["review", "--help"])
    assert result.code == 0
    assert "--fail-on" in result.out


# --- context ---------------------------------------------------------------------------------


def test_relationship_established_changes_a_verdict(tmp_path: Path, run_cli: RunCli) -> None:
    path = write(tmp_path, "draft.txt", BAD_DRAFT)
    cold = json_review(run_cli(["review", str(path), "--format", "json"]))
    warm = json_review(
        run_cli(["review", str(path), "--format", "json", "--relationship", "established"])
    )
    assert cold.verdict("give-first") is Verdict.failed
    assert warm.verdict("give-first") is Verdict.passed
    assert warm.score > cold.score


def test_context_file_with_a_thread(tmp_path: Path, run_cli: RunCli) -> None:
    draft = write(tmp_path, "draft.txt", PRICING_ANSWER)
    context = write(
        tmp_path,
        "context.json",
        json.dumps(
            {
                "relationship": "met",
                "channel": "email",
                "recipient": {"name": "Dana", "company": "Acme"},
                "thread": [
                    {"from": "me", "text": "Great to meet you at the expo."},
                    {"from": "them", "text": "Could you send me your pricing?"},
                ],
            }
        ),
    )
    alone = json_review(run_cli(["review", str(draft), "--format", "json"]))
    answered = json_review(
        run_cli(["review", str(draft), "--format", "json", "--context", str(context)])
    )
    assert alone.verdict("no-cold-pitch") is Verdict.failed
    assert answered.verdict("no-cold-pitch") is Verdict.passed
    assert answered.verdict("give-first") is Verdict.passed


def test_relationship_option_overrides_the_context_file(tmp_path: Path, run_cli: RunCli) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    context = write(tmp_path, "context.json", json.dumps({"relationship": "new"}))
    argv = ["review", str(draft), "--format", "json", "--context", str(context)]
    assert json_review(run_cli(argv)).verdict("give-first") is Verdict.failed
    warm = json_review(run_cli([*argv, "--relationship", "established"]))
    assert warm.verdict("give-first") is Verdict.passed


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"relationship": "cousin"}', "relationship"),
        ('{"thread": [{"from": "boss", "text": "hi"}]}', "thread"),
    ],
)
def test_bad_context_file_exits_2(
    tmp_path: Path, run_cli: RunCli, content: str, fragment: str
) -> None:
    draft = write(tmp_path, "draft.txt", BAD_DRAFT)
    context = write(tmp_path, "context.json", content)
    result = run_cli(["review", str(draft), "--context", str(context)])
    assert_usage_error(result, fragment)


# --- rules -----------------------------------------------------------------------------------


def test_rules_lists_the_rulebook(run_cli: RunCli) -> None:
    result = run_cli(["rules"])
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"rulebook {default_rulebook().version}"
    assert [line.split()[1] for line in lines[1:]] == default_rulebook().ids
    assert "[error]" in result.out and "[warning]" in result.out
    assert "Give before you ask" in result.out


def test_rules_in_hebrew(run_cli: RunCli) -> None:
    result = run_cli(["rules", "--language", "he"])
    assert result.code == 0
    assert "לתת לפני שמבקשים" in result.out


def test_rules_with_a_user_rulebook(tmp_path: Path, run_cli: RunCli) -> None:
    book = write(
        tmp_path,
        "rb.yaml",
        "version: acme-1\nextends: default\noverrides:\n"
        "  volunteer-to-lead: {enabled: false}\n  give-first: {severity: error}\n",
    )
    result = run_cli(["rules", "--rulebook", str(book)])
    assert result.code == 0
    assert "acme-1" in result.out.splitlines()[0]
    assert "volunteer-to-lead [suggestion] (disabled)" in result.out
    assert "give-first [error]" in result.out


# --- eval run --------------------------------------------------------------------------------


def test_eval_run_writes_the_reports(tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "run"
    result = run_cli(["eval", "run", "--dataset", str(DEV_DATASET), "--out", str(out)])
    assert result.code == 0, result.err
    assert "report.json" in result.out

    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["engine"] == "rules"
    assert report["cases"] >= 200
    assert report["rulebook_version"] == default_rulebook().version
    macro_main = report["macro_main"]
    assert set(macro_main) == {"f1", "accuracy"}
    assert 0.0 <= macro_main["f1"] <= 1.0
    assert 0.0 <= macro_main["accuracy"] <= 1.0
    assert set(report["main_rules"]) <= set(report["rules"])
    give = report["rules"]["give-first"]
    assert give["tp"] + give["fp"] + give["fn"] + give["tn"] == give["n"] == report["cases"]

    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()
    ]
    assert len(predictions) == report["cases"]
    assert {"id", "expected", "predicted", "wrong"} <= set(predictions[0])
    assert len({p["id"] for p in predictions}) == len(predictions)

    markdown = (out / "report.md").read_text("utf-8")
    assert "| rule |" in markdown
    assert "macro-F1" in markdown
    assert "give-first" in markdown


def test_eval_run_on_a_small_dataset_is_hand_checkable(tmp_path: Path, run_cli: RunCli) -> None:
    dataset = write(
        tmp_path,
        "tiny.jsonl",
        "\n".join(
            json.dumps({"id": case_id, "kind": "message", "text": text, "expected": expected})
            for case_id, text, expected in [
                ("t-1", BAD_DRAFT, {"give-first": "fail"}),
                ("t-2", GOOD_DRAFT, {"give-first": "pass"}),
            ]
        )
        + "\n",
    )
    out = tmp_path / "run"
    result = run_cli(["eval", "run", "--dataset", str(dataset), "--out", str(out)])
    assert result.code == 0, result.err
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["cases"] == 2
    assert list(report["rules"]) == ["give-first"]
    assert report["rules"]["give-first"]["tp"] == 1
    assert report["rules"]["give-first"]["tn"] == 1
    assert report["macro_main"] == {"f1": 1.0, "accuracy": 1.0}


def test_eval_run_on_an_invalid_dataset_exits_2(tmp_path: Path, run_cli: RunCli) -> None:
    dataset = write(tmp_path, "bad.jsonl", '{"id": "x", "kind": "tweet"}\n')
    result = run_cli(["eval", "run", "--dataset", str(dataset), "--out", str(tmp_path / "o")])
    assert_usage_error(result, f"{dataset}:1")
    assert not (tmp_path / "o" / "report.json").exists()


def test_eval_run_rejects_unknown_rule_ids(tmp_path: Path, run_cli: RunCli) -> None:
    line = {"id": "x", "kind": "message", "text": "Hello there", "expected": {"be-polite": "pass"}}
    dataset = write(tmp_path, "bad.jsonl", json.dumps(line) + "\n")
    result = run_cli(["eval", "run", "--dataset", str(dataset), "--out", str(tmp_path / "o")])
    assert_usage_error(result, "be-polite", f"{dataset}:1")


def test_eval_run_needs_a_dataset(tmp_path: Path, run_cli: RunCli) -> None:
    assert_usage_error(run_cli(["eval", "run", "--out", str(tmp_path)]), "--dataset")
