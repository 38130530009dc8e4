"""The rulebook: the shipped default, user files on top of it, and their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BAD_DRAFT, make_request

from coach.errors import RulebookError
from coach.models import Kind, Language, Severity, Verdict
from coach.rulebook import (
    BUILTIN_RULE_IDS,
    Rulebook,
    default_rulebook,
    load_rulebook,
    parse_rulebook,
)
from coach.service import ReviewService

STABLE_IDS = (
    "no-cold-pitch",
    "give-first",
    "interest-in-them",
    "quality-over-quantity",
    "volunteer-to-lead",
)
JARGON_DRAFT = "Hi Dana, let's leverage synergies across our teams. How is the launch going?"


def rule_data(rule_id: str, **extra: Any) -> dict[str, Any]:
    """A complete rule definition, as a user would write it."""
    text = {"en": "English text", "he": "טקסט בעברית"}
    return {
        "id": rule_id,
        "title": {"en": "No jargon", "he": "בלי ז'רגון"},
        "principle": text,
        "fails_when": text,
        "passes_when": text,
        "examples": {
            "fail": [{"language": "en", "text": "Let's leverage synergies."}],
            "pass": [{"language": "en", "text": "Let's work together on it."}],
        },
        "severity": "warning",
        "applies_to": ["message", "template"],
        "fix": {"en": "Say it plainly.", "he": "אמרו את זה פשוט."},
        **extra,
    }


JARGON_DETECT = {
    "en": {"fail": [r"synerg\w*", r"circle back"], "pass": [r"no buzzwords"]},
    "he": {"fail": [r"סינרגי\w*"]},
}


def write_yaml(tmp_path: Path, data: Any, name: str = "rulebook.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def extending(**kwargs: Any) -> dict[str, Any]:
    return {"version": "acme-1", "extends": "default", **kwargs}


# --- the default rulebook ------------------------------------------------------------------


def test_default_rulebook_has_the_five_stable_ids() -> None:
    book = default_rulebook()
    assert tuple(book.ids) == STABLE_IDS
    assert BUILTIN_RULE_IDS == STABLE_IDS
    assert all(rule.enabled for rule in book.rules)


def test_default_rulebook_has_a_version() -> None:
    assert default_rulebook().version.strip()


def test_load_rulebook_none_is_the_default() -> None:
    assert load_rulebook(None) is default_rulebook()


@pytest.mark.parametrize("rule_id", STABLE_IDS)
def test_every_rule_has_english_and_hebrew_texts_and_examples(rule_id: str) -> None:
    rule = default_rulebook().get(rule_id)
    assert rule is not None
    for text in (rule.title, rule.principle, rule.fails_when, rule.passes_when, rule.fix):
        assert text.en.strip()
        assert text.he.strip()
        assert any("\u05d0" <= ch <= "\u05ea" for ch in text.he)
    for examples in (rule.examples.fail, rule.examples.passes):
        assert {ex.language for ex in examples} == {Language.en, Language.he}
    assert set(rule.applies_to) == set(Kind)


def _examples() -> list[Any]:
    params = []
    for rule in default_rulebook().rules:
        for label, examples in (("fail", rule.examples.fail), ("pass", rule.examples.passes)):
            for ex in examples:
                params.append(
                    pytest.param(
                        rule.id, label, ex.language, ex.text, id=f"{rule.id}-{label}-{ex.language}"
                    )
                )
    return params


@pytest.mark.parametrize(("rule_id", "label", "language", "text"), _examples())
def test_rulebook_examples_get_their_labelled_verdict(
    service: ReviewService, rule_id: str, label: str, language: Language, text: str
) -> None:
    kind = Kind.template if "{{" in text else Kind.message
    review = service.review_sync(make_request(text, kind=kind, language=language))
    assert review.verdict(rule_id) == Verdict(label)


# --- user files on top of the default ------------------------------------------------------


def test_extending_file_disables_a_rule(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(overrides={"volunteer-to-lead": {"enabled": False}}))
    book = load_rulebook(path)
    rule = book.get("volunteer-to-lead")
    assert rule is not None and not rule.enabled
    assert "volunteer-to-lead" not in [r.id for r in book.enabled]
    text = "The chapter needs a new events coordinator, but I'm swamped, maybe someone else can."
    review = ReviewService(book).review_sync(make_request(text))
    assert "volunteer-to-lead" not in [r.rule_id for r in review.rules]
    assert review.verdict("volunteer-to-lead") is None
    assert all(f.rule_id != "volunteer-to-lead" for f in review.findings)
    # The default rulebook fails the same draft, so the override is what removed it.
    default = ReviewService().review_sync(make_request(text))
    assert default.verdict("volunteer-to-lead") is Verdict.failed


def test_extending_file_changes_severity(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(overrides={"give-first": {"severity": "error"}}))
    book = load_rulebook(path)
    assert book.get("give-first") is not None
    assert book.get("give-first").severity is Severity.error  # type: ignore[union-attr]
    review = ReviewService(book).review_sync(make_request(BAD_DRAFT))
    result = next(r for r in review.rules if r.rule_id == "give-first")
    assert result.verdict is Verdict.failed
    assert result.severity is Severity.error
    findings = [f for f in review.findings if f.rule_id == "give-first"]
    assert findings
    assert all(f.severity is Severity.error for f in findings)
    # Other rules keep their default severity.
    other = next(r for r in review.rules if r.rule_id == "interest-in-them")
    assert other.severity is Severity.warning


def test_severity_change_lowers_the_score(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(overrides={"give-first": {"severity": "error"}}))
    stricter = ReviewService(load_rulebook(path)).review_sync(make_request(BAD_DRAFT))
    default = ReviewService().review_sync(make_request(BAD_DRAFT))
    assert stricter.score < default.score


def test_extending_file_adds_a_rule_that_fires(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(rules=[rule_data("no-jargon", detect=JARGON_DETECT)]))
    book = load_rulebook(path)
    assert book.ids == [*STABLE_IDS, "no-jargon"]
    service = ReviewService(book)

    review = service.review_sync(make_request(JARGON_DRAFT))
    assert review.verdict("no-jargon") is Verdict.failed
    findings = [f for f in review.findings if f.rule_id == "no-jargon"]
    assert [f.span.quote for f in findings] == ["synergies"]
    assert findings[0].severity is Severity.warning
    assert JARGON_DRAFT[findings[0].span.start : findings[0].span.end] == "synergies"
    assert all(r.reason for r in review.rules)

    clean = service.review_sync(make_request("Hi Dana, how is the launch going?"))
    assert clean.verdict("no-jargon") is Verdict.passed
    excused = service.review_sync(make_request("No buzzwords: synergies matter to us."))
    assert excused.verdict("no-jargon") is Verdict.passed


def test_added_rule_fires_in_hebrew_and_respects_applies_to(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(rules=[rule_data("no-jargon", detect=JARGON_DETECT)]))
    service = ReviewService(load_rulebook(path))
    hebrew = service.review_sync(make_request("היי דנה, בואו ניצור סינרגיה בין הצוותים."))
    assert hebrew.language is Language.he
    assert hebrew.verdict("no-jargon") is Verdict.failed
    notes = service.review_sync(make_request(JARGON_DRAFT, kind=Kind.meeting_notes))
    assert notes.verdict("no-jargon") is Verdict.not_applicable


def test_added_rule_is_not_reported_by_the_default_service(service: ReviewService) -> None:
    assert service.review_sync(make_request(JARGON_DRAFT)).verdict("no-jargon") is None


def test_whole_rulebook_file_without_extends(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path, {"version": "mine-2", "rules": [rule_data("no-jargon", detect=JARGON_DETECT)]}
    )
    book = load_rulebook(path)
    assert book.version == "mine-2"
    review = ReviewService(book).review_sync(make_request(JARGON_DRAFT))
    assert [r.rule_id for r in review.rules] == ["no-jargon"]
    assert review.rulebook_version == "mine-2"


def test_rulebook_version_is_reported_in_the_review(tmp_path: Path, service: ReviewService) -> None:
    assert service.review_sync(make_request(BAD_DRAFT)).rulebook_version == (
        default_rulebook().version
    )
    path = write_yaml(tmp_path, extending(overrides={"give-first": {"severity": "error"}}))
    book = load_rulebook(path)
    assert "acme-1" in book.version
    assert default_rulebook().version in book.version
    review = ReviewService(book).review_sync(make_request(BAD_DRAFT))
    assert review.rulebook_version == book.version


# --- errors ----------------------------------------------------------------------------------


def test_unknown_rule_id_in_overrides_names_the_id(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(overrides={"be-nice": {"enabled": False}}))
    with pytest.raises(RulebookError, match="be-nice") as info:
        load_rulebook(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: x\nrules: [\n  - id: a\n  bad: : :\n", "utf-8")
    with pytest.raises(RulebookError, match="invalid YAML") as info:
        load_rulebook(path)
    assert str(path) in str(info.value)
    assert "line" in str(info.value)


@pytest.mark.parametrize("content", ["", "just a string\n", "- a\n- list\n"])
def test_rulebook_that_is_not_a_mapping(tmp_path: Path, content: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(content, "utf-8")
    with pytest.raises(RulebookError, match="mapping"):
        load_rulebook(path)


def test_duplicate_ids_in_a_whole_rulebook(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path, {"version": "1", "rules": [rule_data("no-jargon"), rule_data("no-jargon")]}
    )
    with pytest.raises(RulebookError, match=r"no-jargon.*twice"):
        load_rulebook(path)


def test_added_rule_reusing_a_default_id(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, extending(rules=[rule_data("give-first")]))
    with pytest.raises(RulebookError, match=r"give-first.*twice"):
        load_rulebook(path)


def test_bad_regex_in_detect(tmp_path: Path) -> None:
    detect = {"en": {"fail": ["synerg(ies"]}}
    path = write_yaml(tmp_path, extending(rules=[rule_data("no-jargon", detect=detect)]))
    with pytest.raises(RulebookError, match="does not compile") as info:
        load_rulebook(path)
    assert "synerg(ies" in str(info.value)


def test_missing_version_in_an_extending_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"extends": "default", "overrides": {}})
    with pytest.raises(RulebookError, match="version"):
        load_rulebook(path)


def test_missing_version_in_a_whole_rulebook(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"rules": [rule_data("no-jargon")]})
    with pytest.raises(RulebookError, match="version"):
        load_rulebook(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulebookError, match="not found"):
        load_rulebook(tmp_path / "nope.yaml")


def test_not_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: \xff\n")
    with pytest.raises(RulebookError, match="UTF-8"):
        load_rulebook(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"version": "1", "extends": "default", "colour": "red"}, "unknown key"),
        ({"version": "1", "extends": "acme"}, "extends must be 'default'"),
        ({"version": "1", "rules": [], "overrides": {}}, "needs 'extends: default'"),
        (extending(overrides=["give-first"]), "must map rule ids"),
        (extending(overrides={"give-first": {"id": "x"}}), "cannot override id"),
        (extending(overrides={"give-first": {"severity": "fatal"}}), "severity"),
        (extending(overrides={"give-first": "off"}), "must be a mapping"),
        (extending(rules=[{"id": "half-a-rule"}]), "rules"),
        (extending(rules=[rule_data("Bad_Id")]), "lowercase"),
    ],
)
def test_other_malformed_files(tmp_path: Path, data: Any, match: str) -> None:
    with pytest.raises(RulebookError, match=match):
        load_rulebook(write_yaml(tmp_path, data))


def test_parse_rulebook_names_its_source() -> None:
    with pytest.raises(RulebookError, match=r"^my source"):
        parse_rulebook("version: [", source="my source")


def test_rulebook_model_lookup() -> None:
    book = Rulebook(version="1", rules=[])
    assert book.get("give-first") is None
    assert book.ids == []
    assert book.enabled == []
