"""Stripe webhooks: verify the signature on the raw body, dedupe by event id, receive the payment.

The event id is recorded in `stripe_events` in the same transaction as the payment, and that
transaction commits before the 200 goes out, so a replay (Stripe retries, or an attacker resending a
captured request inside the tolerance) changes nothing.
"""

from typing import Any

import asyncpg

from dunning.http import Problem
from dunning.logging import bind_context, get_logger
from dunning_reconciliation import reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.stripe_events import (
    Ignored,
    StripeEventError,
    parse_event,
    payment_from_event,
)
from dunning_reconciliation.stripe_signature import SignatureError, verify

DUPLICATE = "duplicate"
IGNORED = "ignored"
log = get_logger(__name__)


async def receive_stripe_event(
    pool: asyncpg.Pool, tenant_id: str, signature: str | None, body: bytes, *, tolerance: int
) -> dict[str, Any]:
    """Returns the 200 body, or raises a 400 Problem (and then nothing was changed)."""
    secrets = await repo.active_webhook_secrets(pool, tenant_id) if len(tenant_id) <= 100 else []
    try:
        verify(body, signature, secrets, tolerance=tolerance)
    except SignatureError as exc:
        log.warning("reconciliation.webhook.refused", tenant_id=tenant_id, reason=str(exc))
        raise Problem(400, str(exc), errors=[{"field": "Stripe-Signature", "message": str(exc)}]) from None
    bind_context(tenant_id=tenant_id)
    try:
        event = parse_event(body)
        payment = payment_from_event(tenant_id, event)
    except StripeEventError as exc:
        log.warning("reconciliation.webhook.unreadable", field=exc.field, error=exc.message)
        raise Problem(400, str(exc), errors=[{"field": exc.field, "message": exc.message}]) from None

    async with pool.acquire() as conn:
        for attempt in (1, 2):
            try:
                async with conn.transaction():
                    return await _record(conn, tenant_id, event.id, event.type, payment)
            except asyncpg.UniqueViolationError:
                # A concurrent delivery of the same event or Stripe object won the race; the second
                # attempt sees its committed row and answers "duplicate".
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


async def _record(conn: asyncpg.Connection, tenant_id: str, event_id: str, event_type: str, payment) -> dict[str, Any]:
    if not isinstance(payment, Ignored):
        payment = await reconcile.acknowledging(conn, payment)  # first: the watermark's fence
    if not await repo.claim_stripe_event(conn, tenant_id, event_id, event_type):
        log.info("reconciliation.webhook.duplicate", stripe_event_id=event_id, event_type=event_type)
        return {"status": DUPLICATE}
    if isinstance(payment, Ignored):
        await repo.finish_stripe_event(conn, tenant_id, event_id, f"{IGNORED}:{payment.reason}", None)
        log.info(
            "reconciliation.webhook.ignored", stripe_event_id=event_id, event_type=event_type, reason=payment.reason
        )
        return {"status": IGNORED}
    earlier = await repo.stripe_object_payment(conn, tenant_id, payment.stripe_object_id)
    if earlier is not None:
        # Another event (another id) for a Stripe object already paid in: the money came once.
        await repo.finish_stripe_event(conn, tenant_id, event_id, DUPLICATE, earlier)
        log.info(
            "reconciliation.webhook.duplicate_object",
            stripe_event_id=event_id,
            stripe_object_id=payment.stripe_object_id,
            payment_id=earlier,
        )
        return {"status": DUPLICATE, "payment_id": earlier}
    outcome = await reconcile.receive(conn, payment)
    await repo.finish_stripe_event(conn, tenant_id, event_id, outcome.status, outcome.payment_id)
    return {
        "status": outcome.status,
        "payment_id": outcome.payment_id,
        "invoice_id": outcome.invoice_id,
        "settled": outcome.settled,
    }
