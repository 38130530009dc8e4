"""Schemathesis against the app's own OpenAPI spec: generated requests (valid and not) must
never produce a 500, and every response must match the spec (status, content type, schema)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.conftest import make_settings
from coach.api import create_app
from coach.api.controllers.batches import JSONL_MEDIA_TYPES
from coach.store import open_store

# The real store (SQLite in a scratch folder), so that batch routes meet a database too; the app
# opens it in its lifespan, which schemathesis runs. No worker: the fuzzer only meets the API.
SETTINGS = make_settings(
    rate_limit_per_minute=100_000,
    database_url=f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='coach-fuzz-')}/coach.db",
)


async def _key() -> str:
    store = await open_store(SETTINGS)
    try:
        key, _record = await store.create_key("fuzz")
    finally:
        await store.close()
    return key


KEY = asyncio.run(_key())

# JSONL uploads: valid review inputs, broken lines and arbitrary bytes, one per line.
_LINE = st.one_of(
    st.fixed_dictionaries(
        {"text": st.text(min_size=1, max_size=200)},
        optional={
            "id": st.text(min_size=1, max_size=20),
            "kind": st.sampled_from(["message", "template", "x"]),
        },
    ).map(lambda item: json.dumps(item).encode()),
    st.binary(max_size=40),
)
for _media in JSONL_MEDIA_TYPES:
    schemathesis.openapi.media_type(
        _media, st.lists(_LINE, max_size=5).map(lambda lines: b"\n".join(lines))
    )
APP = create_app(SETTINGS, configure_logs=False, run_worker=False)
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
