"""The `webhook` reminder channel: a stage on channel `webhook` posts its reminder, event type
`reminder.due`, to the tenant's endpoints subscribed to it, signed as every webhook (webhooks_http.py).

It goes through the deliveries dispatcher like e-mail, so the none-twice rule per (invoice, stage,
channel) and the cancel guarantee hold as for any channel. One attempt posts to every subscribed,
enabled endpoint at once (`webhook-id` = the delivery id, the same on every retry):
- Sent as soon as one endpoint answers 2xx (its endpoint id is the provider message id);
- no endpoint subscribed: Failed `channel_not_configured`, permanent;
- otherwise Retry when any answer is retryable (network error, 408, 409, 429, 5xx), `in_doubt` when a
  request went out and timed out (the receiver may have it); else Failed `webhook_http_<status>`.
Every post is recorded as an attempt of its endpoint (trigger `reminder`) and counts for its health.
The channel reads the endpoints with a small pool of its own (the channel factory gets the settings).
"""

import asyncio
from typing import Any

import asyncpg
import httpx

from dunning.clock import utcnow
from dunning.db import create_pool
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import webhooks_http
from dunning_notifier import webhooks_repository as repo
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.rendering import Renderer
from dunning_notifier.settings import Settings
from dunning_notifier.webhooks_catalogue import REMINDER_DUE, body
from dunning_notifier.webhooks_http import Answer

log = get_logger(__name__)


def reminder_data(d: Delivery) -> dict[str, Any]:
    """The reminder as sent: the stage as the scheduler fired it (invoice, amounts, payment_url,
    customer with their current contacts, context, charges) and the delivery's id."""
    data = {k: v for k, v in d.payload.items() if k not in ("template",)}
    return {"delivery_id": d.delivery_id, **data}


def outcome_of(answers: list[tuple[str, Answer]]) -> Outcome:
    """One attempt's outcome from every endpoint's answer (see the module docstring)."""
    for endpoint_id, answer in answers:
        if answer.delivered:
            return Sent(provider_message_id=endpoint_id, sent_at=answer.attempted_at)
    errors = "; ".join(f"{e}: {a.error}" for e, a in answers)[:2000]
    retryable = [a for _, a in answers if a.retryable]
    if retryable:
        code = retryable[0].status_code
        return Retry(
            f"webhook_http_{code}" if code else "webhook_network", errors, in_doubt=any(a.in_doubt for a in retryable)
        )
    return Failed(f"webhook_http_{answers[0][1].status_code}", errors, permanent=True)


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: Settings, renderer: Renderer | None = None, pool: asyncpg.Pool | None = None):
        self.settings = settings
        self._pool = pool
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self.settings.database_url, self.settings.db_schema, min_size=1, max_size=2
                )
            return self._pool

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    def open_session(self) -> "WebhookChannel":
        return self  # stateless per worker: the pool and the HTTP client are shared

    async def close(self) -> None:
        return None  # a worker's session ends; the channel's pool and client live with the process

    async def send(self, d: Delivery) -> Outcome:
        pool = await self.pool()
        endpoints = await repo.subscribed(pool, d.tenant_id, REMINDER_DUE)
        if not endpoints:
            return Failed(
                "channel_not_configured",
                f"no enabled webhook endpoint of the tenant is subscribed to {REMINDER_DUE!r}",
                permanent=True,
            )
        text = body(REMINDER_DUE, str(d.payload.get("fired_at") or utcnow().isoformat()), reminder_data(d))
        answers = await asyncio.gather(
            *(
                webhooks_http.post(
                    self.client(),
                    e["url"],
                    d.delivery_id,
                    text,
                    webhooks_http.signing_secrets(dict(e)),
                    self.settings.webhook_timeout_seconds,
                )
                for e in endpoints
            )
        )
        paired = [(e["endpoint_id"], a) for e, a in zip(endpoints, answers, strict=True)]
        try:
            await self._record(pool, d, paired)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # the send stands
            log.warning("notifier.webhooks.reminder_attempt_unrecorded", delivery_id=d.delivery_id, error=repr(exc))
        return outcome_of(paired)

    async def _record(self, pool: asyncpg.Pool, d: Delivery, paired: list[tuple[str, Answer]]) -> None:
        s = self.settings
        async with pool.acquire() as conn, conn.transaction():
            for endpoint_id, a in paired:
                # The endpoint's row lock (note_health: FOR UPDATE) first: the attempt's foreign key takes a
                # KEY SHARE on it, and two sends holding that share then each waiting for FOR UPDATE deadlock.
                await repo.note_health(
                    conn,
                    endpoint_id,
                    ok=a.delivered,
                    message_failed=False,
                    at=a.attempted_at,
                    max_failures=s.webhook_disable_after_failures,
                    max_failing_seconds=s.webhook_disable_after_seconds,
                )
                await repo.insert_attempt(
                    conn,
                    attempt_id=new_id("wha"),
                    tenant_id=d.tenant_id,
                    endpoint_id=endpoint_id,
                    message_id=None,
                    delivery_id=d.delivery_id,
                    trigger="reminder",
                    attempted_at=a.attempted_at,
                    status_code=a.status_code,
                    response_snippet=a.snippet,
                    duration_ms=a.duration_ms,
                    error=a.error,
                )
