"""GET /v1/rules and GET /v1/rules/{rule_id}: the rulebook in force."""

from __future__ import annotations

import re

from litestar import Controller, get
from litestar.params import FromPath

from coach.api.context import Api
from coach.api.problems import ApiProblem
from coach.api.schemas import BEARER, problems
from coach.rulebook import Rule, Rulebook

__all__ = ["RulesController"]

_SAFE_ID = re.compile(r"^[a-z0-9-]{1,64}$")


class RulesController(Controller):
    path = "/v1/rules"
    tags = ["rules"]  # noqa: RUF012
    security = BEARER

    @get("/", summary="The rulebook in force", responses=problems(401, 429))
    async def list_rules(self, api: Api) -> Rulebook:
        return api.service.rulebook

    @get(
        "/{rule_id:str}", summary="One rule of the rulebook", responses=problems(400, 401, 404, 429)
    )
    async def get_rule(self, rule_id: FromPath[str], api: Api) -> Rule:
        rulebook = api.service.rulebook
        rule = rulebook.get(rule_id)
        if rule is None:
            shown = f" {rule_id!r}" if _SAFE_ID.match(rule_id) else ""
            raise ApiProblem("rule-not-found", f"no rule{shown} in rulebook {rulebook.version}")
        return rule
