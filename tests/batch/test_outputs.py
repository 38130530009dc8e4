"""Streaming result writers: formats parse back, files appear only whole, CSV is inert."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from coach.batch.outputs import CSV_COLUMNS, OutputRow, open_writer
from coach.batch.summary import SummaryBuilder
from coach.errors import InputError
from coach.models import Kind, Review, ReviewRequest, Verdict
from coach.service import ReviewService

BAD = "Could you introduce me to your head of procurement? {{first_name}}"


@pytest.fixture(scope="module")
def review() -> Review:
    return ReviewService().review_sync(ReviewRequest(text=BAD, kind=Kind.template))


def rows(review: Review) -> list[OutputRow]:
    return [
        OutputRow("tpl/a.html", {"path": "tpl/a.html"}, "done", review, attempts=1,
                  rewrite_markup="<p>Hi {{first_name}}</p>"),
        OutputRow("leads.csv:row=2", {"path": "leads.csv", "row": 2}, "done", review,
                  attempts=1, duplicate_of="tpl/a.html"),
        OutputRow("x.jsonl:id=abc", {"path": "x.jsonl", "id": "abc", "line": 3}, "failed",
                  None, error="timeout after 3 attempts", attempts=3),
        OutputRow("=HYPERLINK(\"http://evil\")", {"path": "+cmd|' /C calc'!A0"}, "failed",
                  None, error="-2+3", attempts=1),
    ]  # fmt: skip


def write_all(path: Path, review: Review) -> None:
    writer = open_writer(path)
    builder = SummaryBuilder()
    for row in rows(review):
        writer.write(row)
        builder.add(row)
    writer.close(builder.build())


def test_jsonl_parses_back_and_omits_none(tmp_path: Path, review: Review) -> None:
    path = tmp_path / "out.jsonl"
    write_all(path, review)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["item"] for line in lines] == [r.key for r in rows(review)]
    first, second, failed = lines[0], lines[1], lines[2]
    assert Review.model_validate(first["review"]) == review
    assert first["rewrite_markup"] == "<p>Hi {{first_name}}</p>"
    assert first["location"] == {"path": "tpl/a.html"} and first["attempts"] == 1
    assert "error" not in first and "duplicate_of" not in first
    assert second["duplicate_of"] == "tpl/a.html"
    assert failed == {
        "item": "x.jsonl:id=abc",
        "location": {"path": "x.jsonl", "id": "abc", "line": 3},
        "status": "failed",
        "attempts": 3,
        "error": "timeout after 3 attempts",
    }


def test_csv_parses_back_and_guards_against_formulas(tmp_path: Path, review: Review) -> None:
    path = tmp_path / "out.csv"
    write_all(path, review)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        got = list(reader)
    first, second, failed, evil = got
    assert first["item"] == "tpl/a.html" and first["status"] == "done"
    assert first["score"] == str(review.score)
    failed_rules = [r.rule_id for r in review.rules if r.verdict is Verdict.failed]
    assert first["failed_rules"].split(";") == failed_rules
    assert first["engine"] == "rules" and first["degraded"] == "false"
    assert review.rewrite is not None and first["rewrite"] == review.rewrite.text
    assert first["worst_severity"] in {"error", "warning", "suggestion"}
    assert second["row"] == "2" and second["duplicate_of"] == "tpl/a.html"
    assert failed["id"] == "abc" and failed["row"] == "3" and failed["score"] == ""
    assert failed["error"] == "timeout after 3 attempts"
    assert evil["item"] == '\'=HYPERLINK("http://evil")'
    assert evil["path"] == "'+cmd|' /C calc'!A0"
    assert evil["error"] == "'-2+3"


def test_markdown_has_the_summary_before_the_items(tmp_path: Path, review: Review) -> None:
    path = tmp_path / "out.md"
    write_all(path, review)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# coach batch review\n\n## Summary")
    assert text.index("## Summary") < text.index("## Items") < text.index("### tpl/a.html")
    assert "- items: 4" in text and "- failed: 2" in text
    assert "### leads.csv:row=2" in text and "same draft as tpl/a.html" in text
    assert '### =HYPERLINK\\("http://evil"\\)' in text
    for finding in review.findings:
        assert finding.rule_id in text
    assert "    - `{{first_name}}`: " in text  # quotes as code: merge fields verbatim
    assert review.rewrite is not None
    assert f"```text\n{review.rewrite.text}\n```" in text
    assert "```html\n<p>Hi {{first_name}}</p>\n```" in text
    assert "timeout after 3 attempts" in text
    assert not list(tmp_path.glob("*.partial*"))


def test_markdown_fence_outlasts_backticks_in_the_rewrite(tmp_path: Path, review: Review) -> None:
    assert review.rewrite is not None
    tricky = review.model_copy(
        update={"rewrite": review.rewrite.model_copy(update={"text": "a ```` b"})}
    )
    finding = review.findings[0]
    odd = finding.model_copy(update={"span": finding.span.model_copy(update={"quote": "`x` y"})})
    tricky = tricky.model_copy(update={"findings": [odd]})
    path = tmp_path / "t.md"
    writer = open_writer(path)
    writer.write(OutputRow("k", {"path": "k"}, "done", tricky))
    writer.close()
    text = path.read_text(encoding="utf-8")
    assert "`````text\na ```` b\n`````" in text
    assert "- `` `x` y ``: " in text
    assert "## Summary" not in text


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".md"])
def test_target_appears_only_on_close(tmp_path: Path, review: Review, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    path.write_text("previous result", encoding="utf-8")
    writer = open_writer(path)
    for row in rows(review) * 100:
        writer.write(row)
    assert path.read_text(encoding="utf-8") == "previous result"  # untouched until close
    partial = tmp_path / f"out{suffix}.partial"
    assert partial.exists() and partial.stat().st_size > 0  # flushed as it goes
    writer.close()
    assert path.read_text(encoding="utf-8") != "previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".md"])
def test_abort_removes_the_partial_file(tmp_path: Path, review: Review, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    writer = open_writer(path)
    writer.write(rows(review)[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_open_writer_rejects_unknown_formats_and_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown output format"):
        open_writer(tmp_path / "out.xlsx")
    with pytest.raises(InputError, match="no such folder"):
        open_writer(tmp_path / "missing" / "out.jsonl")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        open_writer(tmp_path / "dir.csv")
