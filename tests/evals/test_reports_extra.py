"""Evidence overlap, rewrite checks and the self-contained HTML reports."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from coach.cli.eval_compare import compare
from coach.engines.rules.engine import RuleEngine
from coach.evals.dataset import Case
from coach.evals.htmlreport import bar_chart
from coach.evals.runner import (
    Row,
    build_result,
    check_rewrite,
    evidence_spans,
    run_rows,
    write_report,
    write_rows,
)
from coach.rulebook import load_rulebook

CHECKER = RuleEngine(load_rulebook(None))
EVIL = "<script>alert(1)</script>"


def row(
    case_id: str,
    expected: dict[str, str],
    predicted: dict[str, str],
    findings: list[dict[str, Any]] | None = None,
    evidence: list[list[int]] | None = None,
) -> Row:
    return Row(
        case_id=case_id,
        repeat=0,
        engine="rules",
        language="en",
        kind="message",
        tags=["t"],
        expected=expected,
        predicted=predicted,
        findings=findings or [],
        evidence=evidence or [],
    )


def result(rows: list[Row]) -> Any:
    return build_result(rows, engine="rules", rulebook_version="1", datasets=["d"], seconds=0.1)


def test_evidence_spans_find_every_occurrence() -> None:
    assert evidence_spans("buy now, buy now", ["buy now", ""]) == [[0, 7], [9, 16]]


def test_evidence_overlap_on_a_crafted_run() -> None:
    rows = [
        # correct fail, finding [5, 10) overlaps evidence [8, 12): counts
        row(
            "a",
            {"r1": "fail"},
            {"r1": "fail"},
            [{"rule_id": "r1", "start": 5, "end": 10}],
            [[8, 12]],
        ),
        # correct fail, finding touches but does not overlap ([0, 8) vs [8, 12)): miss
        row(
            "b",
            {"r1": "fail"},
            {"r1": "fail"},
            [{"rule_id": "r1", "start": 0, "end": 8}],
            [[8, 12]],
        ),
        # correct fail, the overlapping finding is another rule's: miss for r1
        row(
            "c",
            {"r1": "fail", "r2": "fail"},
            {"r1": "fail", "r2": "fail"},
            [{"rule_id": "r2", "start": 9, "end": 11}],
            [[8, 12]],
        ),
        # no evidence given: not counted
        row("d", {"r1": "fail"}, {"r1": "fail"}, [{"rule_id": "r1", "start": 0, "end": 3}]),
        # a miss (fn) and a false alarm: not correct fails, not counted
        row("e", {"r1": "fail"}, {"r1": "pass"}, [], [[0, 3]]),
        row(
            "f", {"r1": "pass"}, {"r1": "fail"}, [{"rule_id": "r1", "start": 0, "end": 3}], [[0, 3]]
        ),
    ]
    evidence = result(rows).as_dict()["evidence"]
    assert evidence["rules"]["r1"] | {"wilson95": None} == {
        "correct_fails": 3,
        "overlapping": 1,
        "share": 0.3333,
        "wilson95": None,
    }
    assert evidence["rules"]["r2"]["overlapping"] == 1
    assert evidence["overall"]["correct_fails"] == 4
    assert evidence["overall"]["overlapping"] == 2
    assert evidence["overall"]["share"] == 0.5


def template_case(**extra: Any) -> Case:
    return Case.model_validate(
        {
            "id": "t1",
            "kind": "template",
            "language": "en",
            "text": "Hi {{first_name}}, loved your talk on {{topic}} at the 12 March meetup.",
            "expected": {"give-first": "pass"},
        }
        | extra
    )


def test_check_rewrite_merge_fields_must_keep_and_must_not_contain() -> None:
    case = template_case(must_keep=["12 March"], must_not_contain=["free trial"])
    good = check_rewrite(
        case,
        "Hi {{first_name}}, your talk on {{topic}} at the 12 March meetup was great. "
        "What are you working on next?",
        CHECKER,
    )
    assert good["merge_fields"] == 2
    assert good["merge_fields_missing"] == []
    assert good["must_keep_missing"] == []
    assert good["must_not_contain_present"] == []
    assert good["length_ratio"] > 1
    assert isinstance(good["rulebook_pass"], bool)

    bad = check_rewrite(case, "Hi {{ first_name }}, start a free trial today!", CHECKER)
    assert bad["merge_fields_missing"] == ["{{first_name}}", "{{topic}}"]  # not byte-identical
    assert bad["must_keep_missing"] == ["12 March"]
    assert bad["must_not_contain_present"] == ["free trial"]
    assert bad["rulebook_pass"] is False
    assert bad["rulebook_failed"]


def test_dataset_fields_default_empty() -> None:
    case = template_case()
    assert case.must_keep == [] and case.must_not_contain == []


def test_rewrite_rows_are_checked_and_aggregated() -> None:
    case = template_case(must_keep=["12 March"], must_not_contain=["buy now"])
    rows = asyncio.run(run_rows([(case, 0)], CHECKER, engine="rules", rewrite=True))
    assert rows[0].rewrite is not None and rows[0].rewrite_checks is not None
    rewrites = result(rows).as_dict()["rewrites"]
    assert rewrites["rows"] == 1
    assert rewrites["merge_fields_kept"]["n"] == 1
    assert rewrites["must_keep_kept"]["n"] == 1
    assert rewrites["must_not_contain_absent"] == {
        "n": 1,
        "passed": 1,
        "share": 1.0,
        "wilson95": (0.2065, 1.0),
    }
    assert rewrites["length_ratio"]["median"] == rows[0].rewrite_checks["length_ratio"]
    # without --rewrite there is no rewrite section
    plain = asyncio.run(run_rows([(case, 0)], CHECKER, engine="rules"))
    assert plain[0].rewrite_checks is None
    assert result(plain).as_dict()["rewrites"] is None


def _external(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)


def test_report_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    rows = [
        row(EVIL, {"r1": "fail"}, {"r1": "pass"}, [], [[0, 3]]),
        row(
            "ok",
            {"r1": "fail"},
            {"r1": "fail"},
            [{"rule_id": "r1", "start": 0, "end": 3}],
            [[0, 3]],
        ),
    ]
    rows[0].tags = [EVIL]
    res = result(rows)
    write_report(res, tmp_path)
    page = (tmp_path / "report.html").read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert not _external(page)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert (
        "f1_bootstrap95" in json.loads((tmp_path / "report.json").read_text("utf-8"))["rules"]["r1"]
    )


def test_bar_chart_draws_whiskers_and_escapes_labels() -> None:
    svg = bar_chart([(EVIL, 0.5, 0.25, 0.75), ("neg", -0.2, -0.3, 0.1)], low=-1, high=1)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 2


def _run_dir(path: Path, flip: bool) -> Path:
    rows = []
    for i in range(6):
        case_id = EVIL if i == 0 else f"c{i}"
        predicted = "pass" if (flip and i == 0) else "fail"
        rows.append(row(case_id, {"r1": "fail"}, {"r1": predicted}))
    write_rows(path, rows)
    return path


def test_compare_out_writes_self_contained_html(tmp_path: Path) -> None:
    a = _run_dir(tmp_path / "a", flip=False)
    b = _run_dir(tmp_path / "b", flip=True)
    out = tmp_path / "cmp"
    outcome = CliRunner().invoke(
        compare,
        [str(a), str(b), "--out", str(out), "--margin", "0.02", "--resamples", "200"],
    )
    assert outcome.exit_code == 3, outcome.output
    page = (out / "compare.html").read_text("utf-8")
    assert "<svg" in page and "ΔF1" in page
    assert not _external(page)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "regression" in page
