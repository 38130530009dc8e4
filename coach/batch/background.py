"""What runs in the background of `coach worker` and of the API process (the in-process worker
of the embedded default): a batch `Worker` and the webhook `OutboxSender`.

The sender delivers the outbox's events (written in the same transaction as the batch's final
state, so an event is never lost to a crash between the two): it leases due events, signs and
POSTs each (Standard Webhooks, `coach.webhooks`), and records the outcome — delivered, due again
after a backoff (or the receiver's Retry-After), or dead after `webhook_max_attempts`. Receivers
de-duplicate by `webhook-id`: a sender that dies after the POST but before recording it sends
the event again when the lease expires (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import httpx

from coach.batch.worker import Worker, WorkerConfig
from coach.errors import CoachError
from coach.logs import get_logger
from coach.service import ReviewService
from coach.settings import Settings
from coach.store.batches import BatchStore, OutboxEvent
from coach.webhooks import backoff, deliver, tenant_secrets

__all__ = ["BackgroundWorkers", "OutboxSender"]

log = get_logger("coach.batch.background")


class OutboxSender:
    def __init__(
        self,
        store: BatchStore,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        poll_s: float = 1.0,
        lease_s: float = 60.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.poll_s = poll_s
        self.lease_s = lease_s
        self._client = client
        self.delivered = 0

    async def run(self, stop: asyncio.Event) -> None:
        owns = self._client is None
        client = self._client or httpx.AsyncClient(follow_redirects=False)
        try:
            while not stop.is_set():
                sent = await self.send_due()
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
        finally:
            if owns:
                await client.aclose()

    async def send_due(self, *, limit: int = 20) -> int:
        """Deliver the events due now; how many were attempted."""
        try:
            events = await self.store.claim_events(limit=limit, lease_s=self.lease_s)
        except CoachError as exc:
            log.warning("outbox_unavailable", error=str(exc))
            return 0
        if not events:
            return 0
        client = self._client or httpx.AsyncClient(follow_redirects=False)
        try:
            outcomes = await asyncio.gather(
                *(self._send(client, event) for event in events), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    # The lease runs out and the event is tried again; the sender lives on.
                    log.error("webhook_send_failed", error=type(outcome).__name__)
        finally:
            if self._client is None:
                await client.aclose()
        return len(events)

    async def _send(self, client: httpx.AsyncClient, event: OutboxEvent) -> None:
        secrets = self.settings.webhook_secrets
        if not secrets:
            await self.store.record_delivery(
                event.id,
                delivered=False,
                status=None,
                error="COACH_WEBHOOK_SECRET is not set on this worker",
                retry_at=datetime.now(UTC) + timedelta(minutes=5),
            )
            return
        attempt = await deliver(
            client,
            event.url,
            tenant_secrets(secrets, event.tenant),
            event.id,
            event.payload.encode("utf-8"),
            allow_private=self.settings.webhook_allow_private,
        )
        retry_at = None
        retryable = not attempt.delivered and attempt.retry
        if retryable and event.attempts < self.settings.webhook_max_attempts:
            wait = attempt.retry_after_s
            if wait is None:
                wait = backoff(event.attempts)
            retry_at = datetime.now(UTC) + timedelta(seconds=wait)
        await self.store.record_delivery(
            event.id,
            delivered=attempt.delivered,
            status=attempt.status,
            error=attempt.error,
            retry_at=retry_at,
        )
        if attempt.delivered:
            self.delivered += 1
        log.info(
            "webhook_attempt",
            kind=event.event,
            batch=event.batch_id,
            attempt=event.attempts,
            delivered=attempt.delivered,
            status=attempt.status,
            dead=not attempt.delivered and retry_at is None,
        )


class BackgroundWorkers:
    """A batch worker and the webhook sender, side by side, until `stop`."""

    def __init__(
        self,
        store: BatchStore,
        service: ReviewService,
        settings: Settings,
        *,
        concurrency: int | None = None,
        batch_id: str | None = None,
        poll_s: float = 0.5,
        workers_at_least: int = 1,
    ) -> None:
        self.worker = Worker(
            store,
            service,
            WorkerConfig(
                concurrency=concurrency or settings.batch_concurrency,
                lease_s=settings.batch_lease_s,
                max_attempts=settings.batch_max_attempts,
                batch_id=batch_id,
                poll_s=poll_s,
                retention_s=settings.batch_retention_s,
                workers_at_least=workers_at_least,
            ),
        )
        self.sender = OutboxSender(store, settings, poll_s=poll_s)

    async def run(self, *, stop: asyncio.Event, until_idle: bool = False) -> None:
        sender_stop = asyncio.Event()
        sending = asyncio.create_task(self.sender.run(sender_stop))
        try:
            await self.worker.run(stop=stop, until_idle=until_idle)
            if until_idle:
                await self.sender.send_due()
        finally:
            sender_stop.set()
            await asyncio.gather(sending, return_exceptions=True)
