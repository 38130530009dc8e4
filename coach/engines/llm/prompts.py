"""The one place prompts are built: versioned files in prompts/, rendered strictly.

    prompts/review/v1/manifest.yaml   id, version, what changed, output schema, messages, variables
    prompts/review/v1/system.md       static: role, the rulebook in force, rules of judgement
    prompts/review/v1/user.md         per draft: kind, language, context, then the draft, last

Rendering uses `string.Template` ($name). A missing or unexpected variable is a PromptError, so
a prompt and its manifest cannot drift apart silently. The draft is data: it sits between two
delimiter lines that carry a code derived from the draft's own hash, which the draft therefore
cannot contain, so text inside it cannot close the block early.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from coach.errors import PromptError
from coach.models import Context, Kind, Language, ReviewRequest
from coach.rulebook import Rulebook
from coach.settings import Settings

__all__ = [
    "PromptSet",
    "RenderedPrompt",
    "completion_request",
    "delimiters",
    "draft_values",
    "load_prompt",
    "render_review_prompt",
    "render_rulebook",
    "schema_hint",
]

_LANGUAGE_NAMES = {Language.en: "English", Language.he: "Hebrew"}


@dataclass(frozen=True)
class PromptSet:
    id: str
    version: str
    changed: str
    schema_name: str
    output_model: type[BaseModel]
    messages: tuple[tuple[str, str, str], ...]  # (role, file name, template text)
    variables: dict[str, frozenset[str]]
    digest: str  # sha256 of the manifest and every file: part of every cache key

    def render(self, values: dict[str, str]) -> list[dict[str, str]]:
        rendered = []
        for role, name, template in self.messages:
            expected = self.variables.get(name, frozenset())
            used = _identifiers(template)
            if used != expected:
                raise PromptError(
                    f"prompt {self.id}/{self.version}/{name}: uses {sorted(used)}, "
                    f"manifest declares {sorted(expected)}"
                )
            missing = expected - values.keys()
            if missing:
                raise PromptError(
                    f"prompt {self.id}/{self.version}/{name}: missing variable(s) {sorted(missing)}"
                )
            try:
                text = string.Template(template).substitute({k: values[k] for k in expected})
            except ValueError as exc:  # a stray "$" that is not a placeholder
                raise PromptError(f"prompt {self.id}/{self.version}/{name}: {exc}") from None
            rendered.append({"role": role, "content": text})
        return rendered


@dataclass(frozen=True)
class RenderedPrompt:
    messages: list[dict[str, str]]
    open: str
    close: str


def _identifiers(template: str) -> frozenset[str]:
    return frozenset(string.Template(template).get_identifiers())


@cache
def load_prompt(prompts_dir: Path, prompt_id: str, version: str) -> PromptSet:
    folder = prompts_dir / prompt_id / version
    manifest_path = folder / "manifest.yaml"
    try:
        raw_manifest = manifest_path.read_text("utf-8")
    except OSError:
        raise PromptError(f"prompt {prompt_id}/{version}: no manifest at {manifest_path}") from None
    try:
        manifest = yaml.safe_load(raw_manifest)
        module_name, _, attr = str(manifest["output_schema"]).partition(":")
        output_model = getattr(import_module(module_name), attr)
        messages = []
        digest = hashlib.sha256(raw_manifest.encode())
        for item in manifest["messages"]:
            text = (folder / item["file"]).read_text("utf-8")
            if not string.Template(text).is_valid():
                raise PromptError(
                    f"prompt {prompt_id}/{version}/{item['file']}: a '$' that is not a "
                    "placeholder (write $$ for a literal dollar sign)"
                )
            digest.update(text.encode())
            messages.append((str(item["role"]), str(item["file"]), text))
        variables = {str(k): frozenset(map(str, v)) for k, v in manifest["variables"].items()}
        return PromptSet(
            id=str(manifest["id"]),
            version=str(manifest["version"]),
            changed=str(manifest["changed"]),
            schema_name=str(manifest["schema_name"]),
            output_model=output_model,
            messages=tuple(messages),
            variables=variables,
            digest=digest.hexdigest(),
        )
    except PromptError:
        raise
    except (KeyError, TypeError, AttributeError, ImportError, OSError, yaml.YAMLError) as exc:
        raise PromptError(
            f"prompt {prompt_id}/{version}: invalid ({exc.__class__.__name__}: {exc})"
        ) from None


def delimiters(draft: str) -> tuple[str, str]:
    """Opening and closing lines for the draft block. The code is derived from the draft's
    hash, so it is stable (prompt caching, response caching) and the draft cannot contain it."""
    code = hashlib.sha256(f"coach-draft:{draft}".encode()).hexdigest()[:16]
    return f"<<<DRAFT {code}>>>", f"<<<END DRAFT {code}>>>"


def render_rulebook(rulebook: Rulebook) -> str:
    """The rules in force, as the model reads them. A custom rulebook changes this text."""
    lines = [f"Rulebook version {rulebook.version}."]
    for rule in rulebook.enabled:
        lines += [
            "",
            f"## {rule.id} — {rule.title.en}",
            f"Severity: {rule.severity.value}. "
            f"Applies to: {', '.join(k.value for k in rule.applies_to)}.",
            f"Principle: {rule.principle.en}",
            f"Fails when: {rule.fails_when.en}",
            f"Passes when: {rule.passes_when.en}",
            f"How to fix: {rule.fix.en}",
        ]
        for label, examples in (("fails", rule.examples.fail), ("passes", rule.examples.passes)):
            for example in examples:
                lines.append(f"Example that {label} ({example.language.value}): {example.text}")
    return "\n".join(lines)


def draft_values(
    text: str, kind: Kind, language: Language, context: Context | None
) -> dict[str, str]:
    """The per-draft variables every prompt's user message shares: kind, language, context,
    and the draft between its delimiter lines."""
    open_line, close_line = delimiters(text)
    dumped: Any = (
        context.model_dump(mode="json", by_alias=True, exclude_none=True) if context else None
    )
    return {
        "kind": Kind(kind).value,
        "language": language.value,
        "language_name": _LANGUAGE_NAMES[language],
        "context": json.dumps(dumped, ensure_ascii=False, sort_keys=True),
        "open": open_line,
        "close": close_line,
        "draft": text,
    }


def schema_hint(settings: Settings, schema: dict[str, Any]) -> str:
    if settings.llm_response_format == "json_schema":
        return "The response format enforces the schema."
    # JSON mode has no schema enforcement: the schema goes into the prompt instead.
    return "It must follow this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)


def completion_request(
    prompt: PromptSet, settings: Settings, schema: dict[str, Any], messages: list[dict[str, str]]
) -> dict[str, Any]:
    """The chat.completions body: structured output by the prompt's schema, or JSON mode."""
    response_format: dict[str, Any] = (
        {
            "type": "json_schema",
            "json_schema": {"name": prompt.schema_name, "schema": schema, "strict": True},
        }
        if settings.llm_response_format == "json_schema"
        else {"type": "json_object"}
    )
    return {
        "model": settings.llm_model or "",
        "messages": messages,
        "response_format": response_format,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
    }


def render_review_prompt(
    prompt: PromptSet,
    rulebook: Rulebook,
    request: ReviewRequest,
    language: Language,
    *,
    rewrite: bool,
    schema_hint: str,
) -> RenderedPrompt:
    values = {
        "rulebook": render_rulebook(rulebook),
        "schema_hint": schema_hint,
        "rewrite_instruction": "Rewrite: yes" if rewrite else "Rewrite: no",
        **draft_values(request.text, request.kind, language, request.context),
    }
    return RenderedPrompt(prompt.render(values), values["open"], values["close"])
