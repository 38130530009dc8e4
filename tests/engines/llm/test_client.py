"""The client factory: respx intercepts what we ship, the SDK never retries, Azure routing,
configuration errors, and the key stays secret."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import respx
from llm_fakes import (
    API_KEY,
    CHAT_URL,
    MODEL,
    completion,
    error,
    fresh_logging,
    make_settings,
    mock_llm,
)

from coach.engines.llm.client import make_client
from coach.errors import ConfigError
from coach.settings import Settings

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _live_logging() -> Iterator[None]:
    with fresh_logging():
        yield


async def _create(client: openai.AsyncOpenAI) -> Any:
    try:
        return await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    finally:
        await client.close()


def test_respx_intercepts_the_client_make_client_builds() -> None:
    client = make_client(make_settings())
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion("hi there"))
        result = asyncio.run(_create(client))
    assert route.called and route.call_count == 1
    assert result.choices[0].message.content == "hi there"
    request = route.calls[0].request
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["x-stainless-retry-count"] == "0"


def test_timeouts_and_pool_come_from_the_settings() -> None:
    client = make_client(make_settings(llm_timeout_s=7.5, llm_max_connections=3))
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion("ok"))
        asyncio.run(_create(client))
    timeout = route.calls[0].request.extensions["timeout"]
    assert timeout == {"connect": 5.0, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_sdk_retries_are_off_one_500_is_one_http_call() -> None:
    client = make_client(make_settings())
    assert client.max_retries == 0
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(side_effect=[error(500), completion("late")])
        with pytest.raises(openai.InternalServerError):
            asyncio.run(_create(client))
    assert route.call_count == 1


def test_sdk_does_not_retry_a_429_with_retry_after_either() -> None:
    client = make_client(make_settings())
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(
            side_effect=[error(429, "rate_limit_exceeded", retry_after="0"), completion("late")]
        )
        with pytest.raises(openai.RateLimitError):
            asyncio.run(_create(client))
    assert route.call_count == 1


def test_azure_uses_the_deployment_path_and_api_version() -> None:
    settings = make_settings(
        llm_provider="azure", llm_base_url="https://acme.openai.test", llm_api_version="2024-10-21"
    )
    client = make_client(settings)
    assert isinstance(client, openai.AsyncAzureOpenAI)
    assert client.max_retries == 0
    with mock_llm() as router:
        route = router.post(
            f"https://acme.openai.test/openai/deployments/{MODEL}/chat/completions"
        ).mock(return_value=completion("azure"))
        result = asyncio.run(_create(client))
    assert route.call_count == 1
    assert result.choices[0].message.content == "azure"
    request = route.calls[0].request
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == API_KEY


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"llm_model": MODEL}, id="model-only"),
        pytest.param({"llm_base_url": "http://llm.test/v1"}, id="url-only"),
        pytest.param({"llm_api_key": API_KEY}, id="key-only"),
    ],
)
def test_make_client_refuses_when_not_configured(values: dict[str, Any]) -> None:
    settings = Settings.model_validate(values)
    assert not settings.llm_configured
    with pytest.raises(ConfigError, match="COACH_LLM_MODEL"):
        make_client(settings)


def test_azure_without_an_endpoint_is_a_config_error() -> None:
    # Azure has no default endpoint: a key and a model are not enough to reach it. Today this
    # builds a client with base URL "/openai/", so every review silently degrades instead.
    settings = Settings(llm_provider="azure", llm_model=MODEL, llm_api_key=API_KEY)
    with pytest.raises(ConfigError):
        make_client(settings)


def test_a_local_server_needs_no_key() -> None:
    client = make_client(make_settings(llm_api_key=None))
    with mock_llm() as router:
        route = router.post(CHAT_URL).mock(return_value=completion("ok"))
        asyncio.run(_create(client))
    assert route.call_count == 1
    assert route.calls[0].request.headers["authorization"] == "Bearer not-needed"


def test_the_key_never_appears_in_repr_str_or_dump() -> None:
    settings = make_settings(cache_key="fernet-secret-value-123")
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.__dict__)):
        assert API_KEY not in text
        assert "fernet-secret-value-123" not in text
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == API_KEY


def test_the_key_never_appears_in_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"COACH_LLM_API_KEY": API_KEY, "COACH_LLM_TIMEOUT": "soon"})
    assert "COACH_LLM_TIMEOUT" in str(info.value)
    assert API_KEY not in str(info.value)


def test_the_key_is_not_in_the_client_repr() -> None:
    client = make_client(make_settings())
    try:
        assert API_KEY not in repr(client)
        assert API_KEY not in repr(make_settings().llm_api_key)
    finally:
        asyncio.run(client.close())


def test_httpx_is_the_transport_respx_sees() -> None:
    # A request that no route matches must fail inside respx, never reach the network.
    client = make_client(make_settings())
    with mock_llm() as router:
        router.post("http://elsewhere.test/v1/chat/completions").mock(return_value=completion("x"))
        with pytest.raises(respx.models.AllMockedAssertionError):
            asyncio.run(_create(client))
