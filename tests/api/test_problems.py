"""Every 4xx and 5xx is application/problem+json with a stable type."""

from __future__ import annotations

import re

import pytest
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
)

from api.conftest import BrokenService, Client, MakeClient
from coach.api.problems import PROBLEM_BASE, PROBLEM_TYPES, ApiProblem, problem_for
from coach.errors import ConfigError, InputError, LLMTimeout

PROBLEM = "application/problem+json"


def _assert_problem(response: object, status: int, slug: str) -> dict[str, object]:
    from httpx import Response

    assert isinstance(response, Response)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


def test_unknown_route_is_404_problem(client: Client) -> None:
    _assert_problem(client.get("/v2/nothing-here"), 404, "not-found")


def test_wrong_method_is_405_problem_with_allow(client: Client) -> None:
    response = client.delete("/v1/reviews")
    _assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]


def test_unhandled_exception_is_500_problem(make_client: MakeClient, auth: dict[str, str]) -> None:
    client = make_client(service=BrokenService(lambda r: KeyError("secret")))
    response = client.post("/v1/reviews", json={"text": "hello there"}, headers=auth)
    body = _assert_problem(response, 500, "internal")
    assert "secret" not in response.text and "KeyError" not in str(body)


@pytest.mark.parametrize(
    ("exc", "slug", "status"),
    [
        (ApiProblem("rate-limited", "slow down"), "rate-limited", 429),
        (NotFoundException(), "not-found", 404),
        (MethodNotAllowedException(headers={"allow": "GET"}), "method-not-allowed", 405),
        (HTTPException(status_code=415), "unsupported-media-type", 415),
        (HTTPException(status_code=418), "http-418", 418),
        (HTTPException(status_code=503), "http-503", 503),
        (InputError("the LLM engine is not configured"), "unprocessable", 422),
        (LLMTimeout("deadline"), "llm-unavailable", 503),
        (ConfigError("bad setting"), "internal", 500),
        (ZeroDivisionError("x"), "internal", 500),
    ],
)
def test_problem_for(exc: Exception, slug: str, status: int) -> None:
    problem = problem_for(exc)
    assert problem.slug == slug
    assert problem.status == status
    body = problem.body("rid")
    assert body["type"] == PROBLEM_BASE + slug
    assert body["request_id"] == "rid"


def test_malformed_json_is_recognised_by_its_cause() -> None:
    try:
        try:
            raise SerializationException("JSON is malformed: invalid character (byte 3)")
        except SerializationException as inner:
            raise ClientException("JSON is malformed") from inner
    except ClientException as exc:
        assert problem_for(exc).slug == "malformed-json"


def test_problem_types_are_stable_slugs() -> None:
    for slug, kind in PROBLEM_TYPES.items():
        assert re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", slug)
        assert 400 <= kind.status <= 599
