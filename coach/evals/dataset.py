"""Evaluation datasets: JSONL, one labelled case a line (format in evals/LABELLING.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coach.errors import DatasetError, first_validation_error
from coach.models import Context, DraftText, Kind, Language, ReviewRequest

__all__ = ["Case", "iter_cases", "load_cases"]


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    kind: Kind
    text: DraftText
    language: Language | None = None
    context: Context | None = None
    expected: dict[str, Literal["pass", "fail"]]
    evidence: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    why: str | None = None
    #: Rewrite checks (scored only with `--rewrite`): strings the rewrite must keep verbatim,
    #: and strings it must not contain.
    must_keep: list[str] = Field(default_factory=list)
    must_not_contain: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _evidence_in_text(self) -> Case:
        for quote in self.evidence:
            if quote not in self.text:
                raise ValueError(f"evidence {quote[:30]!r}… is not a substring of text")
        return self

    def request(self) -> ReviewRequest:
        return ReviewRequest(
            text=self.text, kind=self.kind, language=self.language, context=self.context
        )


def iter_cases(path: Path, known_rules: set[str] | None = None) -> Iterator[Case]:
    """Cases of one file, validated; errors name the file and the line."""
    for _number, case in _numbered_cases(path, known_rules):
        yield case


def _numbered_cases(path: Path, known_rules: set[str] | None) -> Iterator[tuple[int, Case]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"{path}:{number}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            try:
                case = Case.model_validate(data)
            except ValidationError as exc:
                raise DatasetError(f"{path}:{number}: {first_validation_error(exc)}") from None
            if known_rules is not None:
                unknown = set(case.expected) - known_rules
                if unknown:
                    names = ", ".join(sorted(unknown))
                    raise DatasetError(f"{path}:{number}: unknown rule id(s) {names}")
            yield number, case


def load_cases(paths: list[Path], known_rules: set[str] | None = None) -> list[Case]:
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for path in paths:
        for number, case in _numbered_cases(path, known_rules):
            if case.id in seen:
                raise DatasetError(
                    f"{path}:{number}: duplicate case id {case.id!r} (first at {seen[case.id]})"
                )
            seen[case.id] = f"{path}:{number}"
            cases.append(case)
    if not cases:
        raise DatasetError(f"no cases in {', '.join(map(str, paths))}")
    return cases
