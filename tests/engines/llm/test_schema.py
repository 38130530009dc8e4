"""The output schema: generated from the pydantic models inside the strict structured-output
subset, sent as `json_schema` (strict) or, in JSON mode, written into the system prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from llm_fakes import (
    ASK_DRAFT,
    CHAT_URL,
    MODEL,
    completion,
    fresh_logging,
    make_engine,
    make_request,
    make_settings,
    mock_llm,
    review_body,
    run_review,
    sent,
)
from pydantic import BaseModel, Field

from coach.engines.llm.schema import LLMReview, strict_schema
from coach.settings import DEFAULT_PROMPTS_DIR

UNSUPPORTED = {
    "default",
    "title",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minItems",
    "maxItems",
    "examples",
}


@pytest.fixture(autouse=True)
def _live_logging() -> Iterator[None]:
    with fresh_logging():
        yield


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (dict) with its path; names under `properties`/`$defs` are not
    keywords, so they are descended into but never reported as keys."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    yield from walk(sub, f"{path}/{key}/{name}")
            else:
                yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{path}/{i}")


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    target: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return target


def assert_strict(schema: dict[str, Any]) -> int:
    objects = 0
    for path, node in walk(schema):
        bad = UNSUPPORTED & set(node)
        assert not bad, f"{path}: unsupported keyword(s) {sorted(bad)}"
        if "$ref" in node:
            resolve(schema, node)  # every ref resolves
        if node.get("type") == "object" or "properties" in node:
            objects += 1
            assert node.get("type") == "object", path
            assert node.get("additionalProperties") is False, path
            assert "properties" in node, f"{path}: an object without properties"
            assert node.get("required") == list(node["properties"]), path
    return objects


def test_every_object_is_closed_and_requires_all_its_properties() -> None:
    schema = strict_schema(LLMReview)
    assert schema["type"] == "object"
    # LLMReview and the four nested models, all checked (the nested ones live in $defs).
    assert set(schema["$defs"]) == {"LLMRuleVerdict", "LLMFinding", "LLMSuggestions", "LLMRewrite"}
    assert assert_strict(schema) == 5
    assert set(schema["properties"]) == set(LLMReview.model_fields)


def test_rewrite_is_a_nullable_union() -> None:
    schema = strict_schema(LLMReview)
    rewrite = schema["properties"]["rewrite"]
    assert "rewrite" in schema["required"]
    variants = rewrite["anyOf"]
    assert {"type": "null"} in variants
    (other,) = [v for v in variants if v != {"type": "null"}]
    target = resolve(schema, other)
    assert set(target["properties"]) == {"text", "changes"}
    assert target["additionalProperties"] is False


def test_verdict_is_an_enum_and_findings_carry_quotes_not_offsets() -> None:
    schema = strict_schema(LLMReview)
    verdict = schema["$defs"]["LLMRuleVerdict"]["properties"]["verdict"]
    assert verdict["enum"] == ["pass", "fail", "not_applicable"]
    finding = schema["$defs"]["LLMFinding"]["properties"]
    assert "quote" in finding
    assert not {"start", "end", "offset", "span"} & set(finding)


class _Inner(BaseModel):
    format: str = Field(default="plain", pattern=r"^\w+$")  # a property named like a keyword


class _Probe(BaseModel):
    title: str = Field(default="x", min_length=1, max_length=9, title="The title")
    count: int = Field(default=0, ge=0, le=5)
    maybe: str | None = None
    items: list[_Inner] = Field(min_length=1, max_length=3, examples=[[]])


def test_strict_schema_strips_unsupported_keywords_but_keeps_property_names() -> None:
    raw = _Probe.model_json_schema()
    assert {"default", "minimum", "maxLength", "title"} & {k for _, n in walk(raw) for k in n}
    schema = strict_schema(_Probe)
    assert_strict(schema)
    assert list(schema["properties"]) == ["title", "count", "maybe", "items"]
    assert schema["required"] == ["title", "count", "maybe", "items"]
    assert schema["properties"]["maybe"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert list(schema["$defs"]["_Inner"]["properties"]) == ["format"]
    assert schema["$defs"]["_Inner"]["required"] == ["format"]
    # The input model's own schema is left alone.
    assert _Probe.model_json_schema() == raw


def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (DEFAULT_PROMPTS_DIR / "review" / "v1" / "manifest.yaml").read_text("utf-8")
    )
    return data


def test_request_sends_strict_json_schema_named_by_the_manifest() -> None:
    settings = make_settings(llm_temperature=0.3, llm_max_tokens=1234)
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        review = run_review(make_engine(settings), make_request(ASK_DRAFT))
    assert review.engine == "llm" and not review.degraded
    body = sent(route)
    assert body["model"] == MODEL
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 1234
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": _manifest()["schema_name"],
            "schema": strict_schema(LLMReview),
            "strict": True,
        },
    }
    assert body["response_format"]["json_schema"]["name"] == "coach_review_v1"
    assert_strict(body["response_format"]["json_schema"]["schema"])
    # With the schema enforced by the API, the prompt does not repeat it.
    system = body["messages"][0]["content"]
    assert '"additionalProperties"' not in system
    assert "The response format enforces the schema." in system


def test_json_object_mode_sends_json_object_and_puts_the_schema_in_the_prompt() -> None:
    settings = make_settings(llm_response_format="json_object")
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion())
        review = run_review(make_engine(settings), make_request(ASK_DRAFT))
    body = sent(route)
    assert body["response_format"] == {"type": "json_object"}
    system = body["messages"][0]["content"]
    schema_text = json.dumps(strict_schema(LLMReview), ensure_ascii=False)
    assert schema_text in system
    assert json.loads(schema_text) == strict_schema(LLMReview)
    assert "JSON" in system
    assert review.engine == "llm" and not review.degraded


def test_the_fake_answer_fits_the_schema_fields() -> None:
    # Guards the fixtures: the default fake answer has exactly the schema's top-level fields.
    assert set(review_body()) == set(strict_schema(LLMReview)["required"])
    LLMReview.model_validate(review_body())
