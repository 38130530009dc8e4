"""Batch jobs over HTTP, on the real store (SQLite in tmp_path) with the in-process worker:
create (inline and JSONL), status, results with a cursor, cancel, Idempotency-Key, tenant
isolation, limits, and signed webhooks delivered to a loopback receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.conftest import MakeApi
from coach.settings import Settings
from coach.store import open_store
from coach.webhooks import WebhookVerificationError, generate_secret, tenant_secret, verify

Client = TestClient[Any]
SECRET = generate_secret()

PITCH = "Hi {{first_name}}, we sell the best CRM. Buy now at https://acme.io and save 20%!"
GIVE = (
    "Hi Dana, I loved your talk on onboarding. I wrote up three notes from our customers that "
    "might help your team; happy to send them over. What are you working on this quarter?"
)


def test_a_batch_is_reviewed_in_the_background_and_its_results_stream(make_api: MakeApi) -> None:
    api = make_api()
    items = [
        {"id": f"t{i}", "text": PITCH if i % 2 else GIVE, "kind": "template"} for i in range(8)
    ]
    created = api.client.post("/v1/batches", json={"items": items}, headers=api.headers())
    assert created.status_code == 202, created.text
    body = created.json()
    assert created.headers["location"] == f"/v1/batches/{body['id']}"
    assert body["counts"]["total"] == 8 and body["results_url"].endswith("/results")
    final = api.wait(body["id"])
    assert final["status"] == "completed"
    assert final["counts"]["done"] == 8 and final["progress"] == 1.0
    lines = api.results(body["id"])
    assert [line["item"] for line in lines] == [f"t{i}" for i in range(8)]
    assert all(line["status"] == "done" and line["review"]["rules"] for line in lines)
    # Identical drafts are reviewed once: the others point at the first.
    assert lines[0].get("duplicate_of") is None and lines[1].get("duplicate_of") is None
    assert {line.get("duplicate_of") for line in lines[2:]} == {"t0", "t1"}
    pitch = lines[1]["review"]
    assert any(r["verdict"] == "fail" for r in pitch["rules"])
    assert "{{first_name}}" in pitch["rewrite"]["text"]


def test_results_resume_from_a_cursor_without_gaps_or_repeats(make_api: MakeApi) -> None:
    api = make_api()
    items = [{"text": f"{GIVE} Item {i}."} for i in range(7)]
    batch = api.client.post("/v1/batches", json={"items": items}, headers=api.headers()).json()
    api.wait(batch["id"])
    first = api.results(batch["id"], limit=3)
    assert [line["item"] for line in first] == ["0", "1", "2"]
    rest = api.results(batch["id"], cursor=first[-1]["cursor"])
    assert [line["item"] for line in rest] == ["3", "4", "5", "6"]
    assert api.results(batch["id"], cursor=rest[-1]["cursor"]) == []


def test_a_jsonl_upload_makes_a_batch(make_api: MakeApi) -> None:
    api = make_api()
    body = "\n".join(json.dumps({"id": f"row-{i}", "text": GIVE}) for i in range(3)) + "\n\n"
    created = api.client.post(
        "/v1/batches/jsonl?rewrite=false",
        content=body.encode(),
        headers=api.headers(**{"Content-Type": "application/jsonl"}),
    )
    assert created.status_code == 202, created.text
    api.wait(created.json()["id"])
    lines = api.results(created.json()["id"])
    assert [line["item"] for line in lines] == ["row-0", "row-1", "row-2"]
    assert all(line["review"]["rewrite"] is None for line in lines)


@pytest.mark.parametrize(
    ("body", "slug", "fragment"),
    [
        (b'{"text": "hi"}\n{not json', "malformed-json", "line 2"),
        (b'{"text": ""}', "unprocessable", "line 1"),
        (b"\n\n", "unprocessable", "no items"),
        (b"\xff\xfe", "bad-request", "UTF-8"),
    ],
)
def test_a_bad_jsonl_upload_is_a_problem_naming_the_line(
    make_api: MakeApi, body: bytes, slug: str, fragment: str
) -> None:
    api = make_api(run_worker=False)
    response = api.client.post(
        "/v1/batches/jsonl",
        content=body,
        headers=api.headers(**{"Content-Type": "application/jsonl"}),
    )
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + slug), problem
    assert fragment in problem["detail"]


def test_idempotency_key_returns_the_same_batch_and_refuses_another_body(
    make_api: MakeApi,
) -> None:
    api = make_api(run_worker=False)
    body = {"items": [{"text": GIVE}], "engine": "rules"}
    first = api.client.post(
        "/v1/batches", json=body, headers=api.headers(**{"Idempotency-Key": "k1"})
    )
    # The same request in another JSON layout is the same request.
    again = api.client.post(
        "/v1/batches",
        content=json.dumps({"engine": "rules", "items": [{"text": GIVE}]}, indent=2),
        headers=api.headers(**{"Idempotency-Key": "k1", "Content-Type": "application/json"}),
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = api.client.post(
        "/v1/batches",
        json={"items": [{"text": PITCH}]},
        headers=api.headers(**{"Idempotency-Key": "k1"}),
    )
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    # Keys are per tenant: another tenant's k1 is its own batch.
    theirs = api.client.post(
        "/v1/batches", json=body, headers=api.headers(1, **{"Idempotency-Key": "k1"})
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_another_tenants_batch_is_not_found(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    batch = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}]}, headers=api.headers()
    ).json()
    for method, path in [
        ("GET", f"/v1/batches/{batch['id']}"),
        ("GET", f"/v1/batches/{batch['id']}/results"),
        ("POST", f"/v1/batches/{batch['id']}/cancel"),
    ]:
        response = api.client.request(method, path, headers=api.headers(1))
        assert response.status_code == 404, (method, path)
        assert response.json()["type"].endswith("/batch-not-found")
    missing = api.client.get("/v1/batches/not-a-batch", headers=api.headers())
    assert missing.status_code == 404
    # ... and it was not touched.
    assert (
        api.client.get(f"/v1/batches/{batch['id']}", headers=api.headers()).json()["status"]
        == "queued"
    )


def test_cancel_stops_the_items_not_started(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    batch = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}] * 3}, headers=api.headers()
    ).json()
    cancelled = api.client.post(f"/v1/batches/{batch['id']}/cancel", headers=api.headers())
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["counts"]["cancelled"] == 3
    lines = api.results(batch["id"])
    assert [line["status"] for line in lines] == ["cancelled"] * 3


def test_delete_removes_a_batch_with_its_drafts_and_results(make_api: MakeApi) -> None:
    api = make_api()
    batch = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}, {"text": PITCH}]}, headers=api.headers()
    ).json()
    api.wait(batch["id"])
    # Another tenant cannot delete it (nor learn that it exists).
    foreign = api.client.delete(f"/v1/batches/{batch['id']}", headers=api.headers(1))
    assert foreign.status_code == 404
    assert foreign.headers["content-type"].startswith("application/problem+json")
    assert len(api.results(batch["id"])) == 2
    deleted = api.client.delete(f"/v1/batches/{batch['id']}", headers=api.headers())
    assert deleted.status_code == 204 and deleted.content == b""
    for path in (f"/v1/batches/{batch['id']}", f"/v1/batches/{batch['id']}/results"):
        assert api.client.get(path, headers=api.headers()).status_code == 404
    again = api.client.delete(f"/v1/batches/{batch['id']}", headers=api.headers())
    assert again.status_code == 404


def test_delete_drops_a_running_batch_and_its_items_in_flight(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    batch = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}] * 3}, headers=api.headers()
    ).json()
    assert api.client.delete(f"/v1/batches/{batch['id']}", headers=api.headers()).status_code == 204
    assert api.client.get(f"/v1/batches/{batch['id']}", headers=api.headers()).status_code == 404


def test_limits_on_items_and_webhook_targets(make_api: MakeApi) -> None:
    api = make_api(run_worker=False, batch_max_items=2, webhook_secret=SECRET)
    too_many = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}] * 3}, headers=api.headers()
    )
    assert too_many.status_code == 422
    assert too_many.json()["type"].endswith("/too-many-items")
    assert too_many.json()["limit"] == 2
    duplicate = api.client.post(
        "/v1/batches",
        json={"items": [{"id": "a", "text": GIVE}, {"id": "a", "text": PITCH}]},
        headers=api.headers(),
    )
    assert duplicate.status_code == 422 and "duplicate id" in duplicate.json()["detail"]
    for url in ["http://127.0.0.1:9/hook", "http://169.254.169.254/", "ftp://example.com/x"]:
        refused = api.client.post(
            "/v1/batches",
            json={"items": [{"text": GIVE}], "webhook_url": url},
            headers=api.headers(),
        )
        assert refused.status_code == 422, url


def test_webhooks_need_a_signing_secret(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    response = api.client.post(
        "/v1/batches",
        json={"items": [{"text": GIVE}], "webhook_url": "https://hooks.example.com/coach"},
        headers=api.headers(),
    )
    assert response.status_code == 422
    assert "signing secret" in response.json()["detail"]


def test_the_llm_engine_must_be_configured(make_api: MakeApi) -> None:
    api = make_api(run_worker=False)
    response = api.client.post(
        "/v1/batches", json={"items": [{"text": GIVE}], "engine": "llm"}, headers=api.headers()
    )
    assert response.status_code == 422


# -- webhooks ----------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that records webhook deliveries and answers from a script."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/coach"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} deliveries"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_signed_webhook_is_retried_until_delivered_once(
    make_api: MakeApi,
    receiver: Callable[[list[int]], Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("coach.batch.background.backoff", lambda attempt: 0.2)
    hook = receiver([500, 503])
    api = make_api(webhook_secret=SECRET, webhook_allow_private=True)
    batch = api.client.post(
        "/v1/batches",
        json={"items": [{"text": GIVE}, {"text": PITCH}], "webhook_url": hook.url},
        headers=api.headers(),
    ).json()
    api.wait(batch["id"])
    hook.wait_for(3)
    time.sleep(0.5)  # no fourth delivery after the 200
    assert len(hook.received) == 3
    ids = {headers["webhook-id"] for headers, _ in hook.received}
    assert len(ids) == 1, "retries carry the same webhook-id, so receivers can de-duplicate"
    headers, body = hook.received[-1]
    # Signed with this tenant's own secret: not the server's, and not another tenant's.
    verify(tenant_secret(SECRET, "acme"), headers, body)  # raises if the signature is wrong
    for other in (SECRET, tenant_secret(SECRET, "globex")):
        with pytest.raises(WebhookVerificationError):
            verify(other, headers, body)
    event = json.loads(body)
    assert event["type"] == "batch.completed"
    assert event["data"]["id"] == batch["id"]
    assert event["data"]["counts"]["done"] == 2
    assert GIVE not in body.decode() and "{{first_name}}" not in body.decode()


def test_a_webhook_that_keeps_failing_is_dead_lettered(
    make_api: MakeApi,
    receiver: Callable[[list[int]], Receiver],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr("coach.batch.background.backoff", lambda attempt: 0.1)
    hook = receiver([500] * 10)
    api = make_api(webhook_secret=SECRET, webhook_allow_private=True, webhook_max_attempts=2)
    batch = api.client.post(
        "/v1/batches",
        json={"items": [{"text": GIVE}], "webhook_url": hook.url},
        headers=api.headers(),
    ).json()
    api.wait(batch["id"])
    hook.wait_for(2)
    time.sleep(0.6)
    assert len(hook.received) == 2

    async def events() -> list[dict[str, Any]]:
        store = await open_store(
            Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'coach.db'}")
        )
        try:
            return await store.events(batch["id"])
        finally:
            await store.close()

    [event] = asyncio.run(events())
    assert event["state"] == "dead" and event["attempts"] == 2 and event["last_status"] == 500


def test_failed_items_are_listed_with_their_reason_and_can_be_retried(make_api: MakeApi) -> None:
    # An LLM nobody answers: every attempt fails, and with one attempt allowed the item fails.
    api = make_api(
        llm_model="fake-model",
        llm_base_url="http://127.0.0.1:9/v1",
        llm_max_attempts=1,
        batch_max_attempts=1,
    )
    batch = api.client.post(
        "/v1/batches",
        json={"items": [{"id": "a", "text": GIVE}], "engine": "llm"},
        headers=api.headers(),
    ).json()
    failed = api.wait(batch["id"])
    assert failed["status"] == "failed" and failed["counts"]["failed"] == 1
    [line] = api.results(batch["id"])
    assert line["status"] == "failed" and line["error"].startswith("provider_error")
    assert "review" not in line  # never degraded to the rule engine inside a batch
    theirs = api.client.post(f"/v1/batches/{batch['id']}/retry", headers=api.headers(1))
    assert theirs.status_code == 404
    retried = api.client.post(f"/v1/batches/{batch['id']}/retry", headers=api.headers())
    assert retried.status_code == 202
    assert retried.json()["status"] == "running"
    assert retried.json()["counts"]["failed"] == 0
    again = api.wait(batch["id"])
    assert again["status"] == "failed" and again["counts"]["failed"] == 1
