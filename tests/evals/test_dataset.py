"""The dataset validator, and the shipped dev set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import DEV_DATASET

from coach.errors import DatasetError
from coach.evals.dataset import Case, iter_cases, load_cases
from coach.evals.metrics import MAIN_RULES
from coach.models import Kind, Language, Relationship
from coach.rulebook import default_rulebook

KNOWN = set(default_rulebook().ids)


def case(case_id: str = "c-1", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": case_id,
        "kind": "message",
        "language": "en",
        "text": "Could you introduce me to your head of procurement?",
        "expected": {"give-first": "fail", "no-cold-pitch": "pass"},
        "evidence": ["introduce me to your head of procurement"],
        "tags": ["ask-without-give"],
        "why": "An ask with nothing offered.",
    }
    data.update(changes)
    return data


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Each item is a dict (dumped as JSON) or a raw string line."""
    rendered = [
        item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in lines
    ]
    path.write_text("\n".join(rendered) + "\n", "utf-8")
    return path


def error_of(paths: list[Path], known_rules: set[str] | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        load_cases(paths, known_rules)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- valid files -----------------------------------------------------------------------------


def test_valid_file_loads(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            case("c-1"),
            "",
            case(
                "c-2",
                kind="meeting_notes",
                language="he",
                text="פגשתי את דנה. היא מחפשת מעצבת.",
                expected={"give-first": "pass"},
                evidence=[],
                context={"relationship": "met", "thread": [{"from": "them", "text": "היי"}]},
            ),
        ],
    )
    cases = load_cases([path], KNOWN)
    assert [c.id for c in cases] == ["c-1", "c-2"]
    assert cases[1].kind is Kind.meeting_notes
    assert cases[1].context is not None
    assert cases[1].context.relationship is Relationship.met
    assert cases[1].context.thread[0].from_ == "them"
    request = cases[1].request()
    assert request.language is Language.he
    assert request.text == "פגשתי את דנה. היא מחפשת מעצבת."


def test_cases_from_several_files_keep_their_order(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [case("a-1"), case("a-2")])
    b = write_jsonl(tmp_path / "b.jsonl", [case("b-1")])
    assert [c.id for c in load_cases([a, b])] == ["a-1", "a-2", "b-1"]


def test_unlabelled_rules_stay_unlabelled(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case(expected={"give-first": "fail"})])
    [only] = load_cases([path])
    assert only.expected == {"give-first": "fail"}


# --- errors name the file and the line ---------------------------------------------------------


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), '{"id": "c-2", "kind": '])
    message = error_of([path])
    assert f"{path}:2:" in message
    assert "invalid JSON" in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), "", "   ", "not json"])
    assert f"{path}:4:" in error_of([path])


def test_unknown_kind_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case(kind="tweet")])
    message = error_of([path])
    assert f"{path}:1:" in message
    assert "kind" in message


def test_evidence_not_in_text_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl", [case("c-1"), case("c-2", evidence=["a quote that is not there"])]
    )
    message = error_of([path])
    assert f"{path}:2:" in message
    assert "evidence" in message
    assert "not a substring" in message


def test_unknown_rule_id_names_file_line_and_id(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [case("c-1"), case("c-2", expected={"give-first": "fail", "be-polite": "pass"})],
    )
    message = error_of([path], KNOWN)
    assert f"{path}:2:" in message
    assert "be-polite" in message
    # Without known rules any id is accepted.
    assert len(load_cases([path])) == 2


def test_duplicate_id_across_files_names_both_files_and_the_line(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), case("c-2")])
    b = write_jsonl(tmp_path / "b.jsonl", [case("c-3"), case("c-2")])
    message = error_of([a, b])
    assert "c-2" in message
    assert str(a) in message
    assert str(b) in message
    assert f"{b}:2" in message


def test_duplicate_id_within_a_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), case("c-1")])
    message = error_of([path])
    assert "duplicate" in message
    assert "c-1" in message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expected": {"give-first": "maybe"}}, "expected"),
        ({"colour": "red"}, "colour"),
        ({"text": ""}, "text"),
        ({"language": "fr"}, "language"),
        ({"context": {"relationship": "friend"}}, "context"),
        ({"context": {"thread": [{"from": "boss", "text": "hi"}]}}, "context"),
    ],
)
def test_invalid_fields_name_file_line_and_field(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), case("c-2", **changes)])
    message = error_of([path])
    assert f"{path}:2:" in message
    assert field in message


def test_missing_id_names_file_and_line(tmp_path: Path) -> None:
    data = case()
    del data["id"]
    path = write_jsonl(tmp_path / "a.jsonl", [data])
    message = error_of([path])
    assert f"{path}:1:" in message
    assert "id" in message


def test_whitespace_only_text_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    # The API rejects such a draft, so `eval run` could not review the case.
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), case("c-2", text="   \n ", evidence=[])])
    message = error_of([path])
    assert f"{path}:2:" in message


def test_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = json.dumps(case("c-1")).encode()
    path.write_bytes(good + b"\n" + b'{"id": "c-2\xff"}\n')
    message = error_of([path])
    assert str(path) in message
    assert "UTF-8" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert str(missing) in error_of([missing])


def test_empty_dataset(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ["", ""])
    assert "no cases" in error_of([path])


def test_iter_cases_is_lazy_and_stops_at_the_bad_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [case("c-1"), "{oops"])
    cases = iter_cases(path)
    assert next(cases).id == "c-1"
    with pytest.raises(DatasetError, match=":2:"):
        next(cases)


# --- the shipped dev set -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_cases() -> list[Case]:
    return load_cases([DEV_DATASET], KNOWN)


def test_dev_set_size_and_mix(dev_cases: list[Case]) -> None:
    assert len(dev_cases) >= 200
    languages = Counter(c.language for c in dev_cases)
    kinds = Counter(c.kind for c in dev_cases)
    assert languages[Language.he] >= 50
    assert kinds[Kind.meeting_notes] >= 40
    assert kinds[Kind.template] >= 30


def test_dev_set_ids_are_unique_on_disk() -> None:
    lines = [line for line in DEV_DATASET.read_text("utf-8").splitlines() if line.strip()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 200


def test_dev_set_has_adversarial_cases(dev_cases: list[Case]) -> None:
    tags = Counter(t for c in dev_cases for t in c.tags)
    assert tags["adversarial"] >= 20
    for wanted in ("negation", "prompt-injection", "disguised-pitch"):
        assert tags[wanted] > 0, wanted


def test_dev_set_labels_the_main_rules_on_every_case(dev_cases: list[Case]) -> None:
    for c in dev_cases:
        assert set(MAIN_RULES) <= set(c.expected), c.id


def test_dev_set_fails_carry_evidence(dev_cases: list[Case]) -> None:
    with_fail = [c for c in dev_cases if "fail" in c.expected.values()]
    assert with_fail
    share = sum(1 for c in with_fail if c.evidence) / len(with_fail)
    assert share >= 0.8


def test_dev_set_labels_both_verdicts_for_every_main_rule(dev_cases: list[Case]) -> None:
    for rule in MAIN_RULES:
        labels = Counter(c.expected[rule] for c in dev_cases)
        assert labels["pass"] >= 20, rule
        assert labels["fail"] >= 20, rule


def test_hebrew_cases_are_in_hebrew(dev_cases: list[Case]) -> None:
    for c in dev_cases:
        if c.language is Language.he:
            assert any("\u05d0" <= ch <= "\u05ea" for ch in c.text), c.id
