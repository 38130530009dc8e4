"""Fixtures of the API tests: an in-memory Store, apps and test clients.

tests/api is a package (it has an __init__.py) so that this conftest is imported as
`api.conftest` and does not replace the root conftest, which other test folders import as
`conftest`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog
from litestar import Litestar
from litestar.testing import TestClient

from coach.api import create_app
from coach.models import Review, ReviewRequest, Usage
from coach.service import ReviewService
from coach.settings import Settings
from coach.store import open_store
from coach.store.base import KeyRecord, Principal

#: The chrome extension origin the tests allow.
EXTENSION_ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
WEB_ORIGIN = "https://app.example.com"
GOOD_DRAFT = (
    "Hi Dana, I enjoyed your talk on onboarding at DevDays. "
    "How are you measuring time-to-value now?"
)

Client = TestClient[Litestar]


class MemoryStore:
    """The Store protocol in memory: keys are kept as hashes, like the real store."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}  # by hash of the full key
        self.healthy = True
        self.closed = False

    @staticmethod
    def _hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def add_key(self, tenant: str) -> str:
        prefix = secrets.token_hex(4)
        key = f"coach_{prefix}_{secrets.token_urlsafe(24)}"
        self._records[self._hash(key)] = KeyRecord(
            id=secrets.token_hex(8),
            tenant=tenant,
            prefix=f"coach_{prefix}",
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        return key

    async def authenticate(self, key: str) -> Principal | None:
        record = self._records.get(self._hash(key))
        if record is None or record.revoked_at is not None:
            return None
        return Principal(tenant=record.tenant, key_id=record.id, prefix=record.prefix)

    async def create_key(self, tenant: str) -> tuple[str, KeyRecord]:
        key = self.add_key(tenant)
        return key, self._records[self._hash(key)]

    async def list_keys(self) -> list[KeyRecord]:
        return list(self._records.values())

    async def revoke(self, key_or_prefix: str) -> int:
        for digest, record in self._records.items():
            if record.revoked_at is None and (
                digest == self._hash(key_or_prefix) or record.prefix == key_or_prefix
            ):
                self._records[digest] = replace(record, revoked_at=datetime.now(UTC))
                return 1
        return 0

    async def ping(self) -> bool:
        return self.healthy

    async def close(self) -> None:
        self.closed = True


class MakeClient(Protocol):
    def __call__(
        self,
        *,
        service: ReviewService | None = None,
        llm_wait_s: float = 2.0,
        **settings: Any,
    ) -> Client: ...


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth": True,
        "cors_origins": [EXTENSION_ORIGIN, WEB_ORIGIN],
        "rate_limit_per_minute": 120,
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The app configures structlog at start-up; put back what was there before."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def api_key(store: MemoryStore) -> str:
    return store.add_key("acme")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def make_client(store: MemoryStore) -> Iterator[MakeClient]:
    """Build an app on `store` with settings overrides and enter its test client."""
    clients: list[Client] = []

    def build(
        *, service: ReviewService | None = None, llm_wait_s: float = 2.0, **settings: Any
    ) -> Client:
        app = create_app(
            make_settings(**settings), store=store, service=service, llm_wait_s=llm_wait_s
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> Client:
    return make_client()


# -- services the tests control ------------------------------------------------------------

LLMFake = Callable[[ReviewRequest, bool], Awaitable[Review]]

#: Settings under which `resolve("llm")` succeeds; nothing is ever sent there.
LLM_SETTINGS = {"llm_model": "fake-model", "llm_base_url": "http://127.0.0.1:9/v1"}


class ScriptedService(ReviewService):
    """Real rule-engine reviews; "llm" reviews come from `llm`, a coroutine the test writes."""

    def __init__(self, llm: LLMFake) -> None:
        super().__init__(settings=Settings.model_validate(LLM_SETTINGS))
        self._llm = llm
        self.llm_calls = 0

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        if self.resolve(engine) == "llm":
            self.llm_calls += 1
            return await self._llm(request, rewrite)
        return await super().review(request, engine=engine, rewrite=rewrite)


def llm_review_from(rules_review: Review, *, tokens_in: int = 321, tokens_out: int = 54) -> Review:
    """What a successful LLM review looks like to the API."""
    usage = Usage(
        model="fake-model",
        prompt_version="v1",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        calls=1,
        latency_ms=12.0,
    )
    return rules_review.model_copy(update={"engine": "llm", "usage": usage})


class HeldLLM:
    """An LLM review that starts, then waits until the test lets it go (`release`); a fake
    for `ScriptedService` that holds the tenant's LLM slot meanwhile."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: ReviewRequest, rewrite: bool) -> Review:
        self.started.set()
        await self.release.wait()
        return llm_review_from(await ReviewService().review(request, rewrite=rewrite))


class BrokenService(ReviewService):
    """A service that fails in a way nobody planned for, quoting the draft in the message."""

    def __init__(self, exc: Callable[[ReviewRequest], Exception]) -> None:
        super().__init__()
        self._exc = exc

    async def review(
        self,
        request: ReviewRequest,
        *,
        engine: str = "rules",
        rewrite: bool = True,
        strict: bool = False,
    ) -> Review:
        raise self._exc(request)


# -- raw ASGI, for what a test client cannot do (chunked bodies, disconnects) ----------------


class AsgiResult:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        #: The response's headers as sent, duplicates and order kept.
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_request(
    app: Litestar,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] = (),
    disconnect_when: Callable[[AsgiResult], Awaitable[None]] | None = None,
) -> AsgiResult:
    """Call `app` as a server would: the body in `chunks` (no Content-Length unless given);
    with `disconnect_when`, the client disconnects once that coroutine returns."""
    result = AsgiResult()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    pending = list(chunks) or [b""]

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        if disconnect_when is not None:
            await disconnect_when(result)
        else:
            await asyncio.Event().wait()  # pragma: no cover - a client that never leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.raw_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            result.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")

    await asyncio.wait_for(app(scope, receive, send), timeout=10)  # type: ignore[arg-type]
    return result


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body."""
    events: list[tuple[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append((event, "\n".join(data)))
    return events


# -- an app on a real SQLite store, with two tenants' keys (batch and webhook tests) -------------

StoreClient = TestClient[Any]


def _keys(settings: Settings, *tenants: str) -> list[str]:
    async def create() -> list[str]:
        store = await open_store(settings)
        try:
            return [(await store.create_key(t))[0] for t in tenants]
        finally:
            await store.close()

    return asyncio.run(create())


class Api:
    def __init__(self, client: StoreClient, keys: list[str]) -> None:
        self.client = client
        self.keys = keys

    def headers(self, tenant: int = 0, /, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}", **extra}

    def wait(self, batch_id: str, tenant: int = 0, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.client.get(f"/v1/batches/{batch_id}", headers=self.headers(tenant))
            assert status.status_code == 200, status.text
            body: dict[str, Any] = status.json()
            if body["status"] in ("completed", "failed", "cancelled"):
                return body
            assert time.monotonic() < deadline, f"batch still {body['status']}: {body}"
            time.sleep(0.1)

    def results(self, batch_id: str, tenant: int = 0, **params: Any) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/v1/batches/{batch_id}/results", headers=self.headers(tenant), params=params
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/jsonl")
        return [json.loads(line) for line in response.text.splitlines()]


MakeApi = Callable[..., Api]


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[MakeApi]:
    clients: list[StoreClient] = []

    def build(*, run_worker: bool = True, **overrides: Any) -> Api:
        settings = make_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}",
            rate_limit_per_minute=10_000,
            **overrides,
        )
        keys = _keys(settings, "acme", "globex")
        client = TestClient(create_app(settings, run_worker=run_worker, configure_logs=False))
        client.__enter__()
        clients.append(client)
        return Api(client, keys)

    yield build
    for client in reversed(clients):
        client.__exit__(None, None, None)
