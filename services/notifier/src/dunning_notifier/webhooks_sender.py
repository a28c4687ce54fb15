"""The webhook sender: delivers the recorded webhook messages, one loop in the notifier process.

Each step claims up to `webhook_concurrency` due messages (webhooks_repository.claim_due: SKIP LOCKED,
a lease, `attempts + 1`) and commits, sends them concurrently outside any transaction (httpx, cut off
at `webhook_timeout_seconds`), then records each attempt and its message's outcome in one
transaction: 2xx delivered; a network error, a timeout, 408, 409, 429 or 5xx retried after an
exponential backoff with jitter (or the receiver's Retry-After, when it asks for longer); any other
status (400, 401, 404, 410, ...) fails the message for good, as does the last of
`webhook_max_attempts`. The endpoint's health goes with it (note_health): a message failed for good
counts one, a 2xx clears the streak; `webhook_disable_after_failures` messages in a row, or every
attempt failing for `webhook_disable_after_seconds`, disables the endpoint (reason and time shown in
its API; PATCH enabled=true turns it back on). Messages of a disabled endpoint wait, unclaimed.

At least once: a crash between the receiver's 2xx and our commit sends the message again when its
lease runs out (same `webhook-id`: receivers dedupe by it). Order per endpoint is not promised.
"""

import asyncio
import random

import asyncpg
import httpx

from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.loops import Backoff, Loop
from dunning_notifier import webhooks_http
from dunning_notifier import webhooks_repository as repo
from dunning_notifier.settings import Settings
from dunning_notifier.webhooks_http import Answer

log = get_logger(__name__)
RETRY_AFTER_MAX_SECONDS = 86400.0  # a Retry-After beyond this is read as this


def retry_delay(
    attempts: int, settings: Settings, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """The wait before the next attempt after `attempts` (the loops' Backoff schedule: doubling from
    the base, capped, +-20% jitter), or the receiver's Retry-After when that is longer (at most a day)."""
    low, high = Backoff(initial=settings.webhook_retry_base_seconds, maximum=settings.webhook_retry_max_seconds).bounds(
        attempts
    )
    delay = (rng or random).uniform(low, high)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def decide(answer: Answer, attempts_used: int, settings: Settings) -> tuple[str, float | None]:
    """(state, retry_in) of a message after an attempt: delivered, failed, or pending again."""
    if answer.delivered:
        return "delivered", None
    if not answer.retryable or attempts_used >= settings.webhook_max_attempts:
        return "failed", None
    return "pending", retry_delay(attempts_used, settings, answer.retry_after)


class WebhookSender(Loop):
    name = "webhook-sender"
    error_event = "notifier.webhooks.step_failed"

    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: httpx.AsyncClient | None = None):
        super().__init__(idle_seconds=settings.webhook_poll_seconds, listen=(pool, repo.WAKE_CHANNEL))
        self.pool = pool
        self.settings = settings
        self._client = client
        self._owns_client = client is None
        self.delivered = self.failed = self.retried = self.disabled = 0
        self._steps_since_sweep = 0

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=self.settings.webhook_concurrency))
        return self._client

    async def teardown(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def counters(self) -> dict[str, int]:
        return {
            "webhooks_delivered": self.delivered,
            "webhooks_failed": self.failed,
            "webhooks_retried": self.retried,
            "webhooks_endpoints_disabled": self.disabled,
        }

    async def step(self) -> float | None:
        s = self.settings
        async with self.pool.acquire() as conn:
            self._steps_since_sweep += 1
            if self._steps_since_sweep >= 10:
                self._steps_since_sweep = 0
                released = await repo.release_expired_leases(conn)
                if released:
                    log.warning("notifier.webhooks.lease_expired", messages=released)
            rows = await repo.claim_due(conn, s.webhook_concurrency, s.webhook_lease_seconds)
        if not rows:
            return None
        answers = await asyncio.gather(*(self._send(row) for row in rows))
        async with self.pool.acquire() as conn:
            for row, answer in zip(rows, answers, strict=True):
                await self._record(conn, row, answer)
        return 0 if len(rows) == s.webhook_concurrency else None

    async def _send(self, row: asyncpg.Record) -> Answer:
        return await webhooks_http.post(
            self.client(),
            row["url"],
            row["message_id"],
            row["body"],
            webhooks_http.signing_secrets(dict(row)),
            self.settings.webhook_timeout_seconds,
        )

    async def _record(self, conn: asyncpg.Connection, row: asyncpg.Record, answer: Answer) -> None:
        s = self.settings
        state, retry_in = decide(answer, row["attempts"] - row["budget_from"], s)
        ids = dict(message_id=row["message_id"], endpoint_id=row["endpoint_id"], event_type=row["event_type"])
        async with conn.transaction():
            # endpoint, then message (repo.lock_endpoint): two replicas recording messages of one
            # endpoint would otherwise each hold the attempt's key share and wait for note_health's lock
            await repo.lock_endpoint(conn, row["endpoint_id"])
            if not await repo.finish_message(
                conn,
                row["message_id"],
                row["attempts"],
                state=state,
                status_code=answer.status_code,
                error=answer.error,
                retry_in=retry_in,
            ):
                log.warning("notifier.webhooks.lease_lost", **ids)  # re-claimed elsewhere: that outcome wins
                return
            await repo.insert_attempt(
                conn,
                attempt_id=new_id("wha"),
                tenant_id=row["tenant_id"],
                endpoint_id=row["endpoint_id"],
                message_id=row["message_id"],
                delivery_id=None,
                trigger=row["trigger"],
                attempted_at=answer.attempted_at,
                status_code=answer.status_code,
                response_snippet=answer.snippet,
                duration_ms=answer.duration_ms,
                error=answer.error,
            )
            disabled = await repo.note_health(
                conn,
                row["endpoint_id"],
                ok=answer.delivered,
                message_failed=state == "failed",
                at=answer.attempted_at,
                max_failures=s.webhook_disable_after_failures,
                max_failing_seconds=s.webhook_disable_after_seconds,
            )
        if state == "delivered":
            self.delivered += 1
            log.info("notifier.webhooks.delivered", status_code=answer.status_code, **ids)
        elif state == "failed":
            self.failed += 1
            log.warning("notifier.webhooks.failed", status_code=answer.status_code, error=answer.error, **ids)
        else:
            self.retried += 1
            log.info(
                "notifier.webhooks.retry_scheduled",
                status_code=answer.status_code,
                error=answer.error,
                retry_in=round(retry_in or 0, 3),
                **ids,
            )
        if disabled is not None:
            self.disabled += 1
            log.warning("notifier.webhooks.endpoint_disabled", reason=disabled["disabled_reason"], **ids)
