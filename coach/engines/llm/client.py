"""The one factory for the OpenAI client.

openai 3.x ships its own HTTP stack, which respx cannot intercept. We always pass an explicit
`httpx.AsyncClient` instead: it carries our connection pool and timeouts, and it is what the
tests intercept (tests/engines/llm/test_client.py proves it). The SDK's own retries are off
(`max_retries=0`): `coach/engines/llm/call.py` is the only place that retries. A `Scheduler`
(`coach/scheduler.py`) paces the requests through the client's event hooks, so every retry is
paced too.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai

from coach.errors import ConfigError
from coach.scheduler import Scheduler
from coach.settings import Settings

__all__ = ["make_client"]


def make_client(settings: Settings, *, scheduler: Scheduler | None = None) -> openai.AsyncOpenAI:
    if not settings.llm_configured:
        raise ConfigError(
            "the LLM engine needs COACH_LLM_MODEL and COACH_LLM_BASE_URL or an API key"
        )
    limits = httpx.Limits(
        max_connections=settings.llm_max_connections,
        max_keepalive_connections=settings.llm_max_connections,
    )
    hooks: dict[str, list[Any]] = {"request": [], "response": []}
    transport: httpx.AsyncBaseTransport | None = None
    if scheduler is not None:
        hooks = {"request": [scheduler.before_request], "response": [scheduler.after_response]}
        if scheduler.max_in_flight is not None:
            # A client given a transport ignores its own `limits`: the pool moves here.
            transport = scheduler.wrap_transport(httpx.AsyncHTTPTransport(limits=limits))
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.llm_timeout_s, connect=min(5.0, settings.llm_timeout_s)),
        limits=limits,
        event_hooks=hooks,
        transport=transport,
    )
    # Local servers (Ollama, vLLM, LM Studio, llama.cpp) accept any key; the SDK insists on one.
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
    # The SDK types `http_client` as its own httpx2 client but accepts a plain httpx one at
    # run time (it checks for both), which is the one respx can intercept.
    client: openai.AsyncOpenAI
    if settings.llm_provider == "azure":
        client = openai.AsyncAzureOpenAI(  # type: ignore[call-overload]
            api_key=key,
            azure_endpoint=settings.llm_base_url or "",
            api_version=settings.llm_api_version,
            max_retries=0,
            http_client=http,
        )
    else:
        client = openai.AsyncOpenAI(
            api_key=key,
            base_url=settings.llm_base_url,
            max_retries=0,
            http_client=http,  # type: ignore[arg-type]
        )
    return client
