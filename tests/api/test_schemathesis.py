"""Schemathesis against the app's own OpenAPI spec: generated requests (valid and not) must
never produce a 500, and every response must match the spec (status, content type, schema)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.conftest import MemoryStore, make_settings
from coach.api import create_app

STORE = MemoryStore()
KEY = STORE.add_key("fuzz")
# A generous limit: the fuzzer must meet the API, not the rate limiter.
APP = create_app(make_settings(rate_limit_per_minute=100_000), store=STORE, configure_logs=False)
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
