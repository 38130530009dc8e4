"""An LLM judge with a fixed rubric (`prompts/judge/`): one text in, one verdict per rule out.

The eval harness uses it to check rewrites against the rulebook, and — before trusting it — to
measure its agreement with the dataset labels on the original drafts (Cohen's kappa). Unlike the
engine it has no fallback and no repair turn: one call, validated, and any failure leaves as the
`LLMError` that names it, for the harness to record.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, ValidationError

from coach.engines.llm.call import CallStats, ModelCaller
from coach.engines.llm.client import make_client
from coach.engines.llm.prompts import (
    PromptSet,
    completion_request,
    draft_values,
    load_prompt,
    render_rulebook,
    schema_hint,
)
from coach.engines.llm.schema import LLMRuleVerdict, _Out, strict_schema
from coach.errors import LLMInvalidOutput, first_validation_error
from coach.models import Context, Kind, Language
from coach.rulebook import Rulebook
from coach.scheduler import Scheduler
from coach.settings import Settings
from coach.text.language import detect_language

__all__ = ["JUDGE_PROMPT_VERSION", "Judge", "LLMJudgement"]

#: The rubric is fixed: changing it means a new version folder under prompts/judge/.
JUDGE_PROMPT_VERSION = "v1"


class LLMJudgement(_Out):
    rules: list[LLMRuleVerdict] = Field(description="One verdict per rule of the rulebook.")


class Judge:
    """`await judge.judge(text, kind, language, context)` → {rule_id: "pass" | "fail" |
    "not_applicable"} for every enabled rule of the rulebook."""

    def __init__(
        self,
        settings: Settings,
        rulebook: Rulebook,
        *,
        caller: ModelCaller | None = None,
        version: str = JUDGE_PROMPT_VERSION,
    ) -> None:
        self.settings = settings
        self.rulebook = rulebook
        self.prompt: PromptSet = load_prompt(settings.prompts_dir, "judge", version)
        self.model = settings.llm_model or ""
        self._caller = caller
        self._schema = strict_schema(self.prompt.output_model)
        self._rulebook_text = render_rulebook(rulebook)
        self.stats = CallStats()

    @property
    def caller(self) -> ModelCaller:
        if self._caller is None:
            # Its own scheduler when used alone; `coach eval run` passes a caller that shares
            # the engine's.
            client = make_client(self.settings, scheduler=Scheduler.from_settings(self.settings))
            self._caller = ModelCaller(client, max_attempts=self.settings.llm_max_attempts)
        return self._caller

    def request(
        self, text: str, kind: Kind, language: Language | None, context: Context | None
    ) -> dict[str, Any]:
        """The chat.completions request body for one text."""
        values = {
            "rulebook": self._rulebook_text,
            "schema_hint": schema_hint(self.settings, self._schema),
            **draft_values(text, kind, language or detect_language(text), context),
        }
        return completion_request(
            self.prompt, self.settings, self._schema, self.prompt.render(values)
        )

    async def judge(
        self,
        text: str,
        kind: Kind,
        language: Language | None = None,
        context: Context | None = None,
    ) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.llm_deadline_s
        completion = await self.caller.complete(
            self.request(text, kind, language, context), deadline=deadline, stats=self.stats
        )
        try:
            parsed = LLMJudgement.model_validate_json(completion.content)
        except ValidationError as exc:
            problem = first_validation_error(exc)
            raise LLMInvalidOutput(f"invalid judgement ({problem})") from None
        wanted = {rule.id for rule in self.rulebook.enabled}
        verdicts = {v.rule_id: v.verdict for v in parsed.rules if v.rule_id in wanted}
        missing = sorted(wanted - verdicts.keys())
        if missing:
            raise LLMInvalidOutput(f"the judgement has no verdict for {', '.join(missing)}")
        return {rule: verdicts[rule] for rule in sorted(verdicts)}
