"""Stripe webhooks: verify the signature on the raw body, dedupe by event id, act on the event.

The event id is recorded in `stripe_events` in the same transaction as what it changes, and that
transaction commits before the 200 goes out, so a replay (Stripe retries, or an attacker resending a
captured request inside the tolerance) changes nothing. A payment (invoice.paid,
payment_intent.succeeded) is received here; the other events Stripe sends about money (a debit
processing or failed, refunds, disputes, an invoice voided or uncollectible, a credit note) are
mapped onto the money core by `stripe_money`. Every transaction that acts joins the payments
watermark's fence first.
"""

from typing import Any

import asyncpg

from dunning.http import Problem
from dunning.logging import bind_context, get_logger
from dunning_reconciliation import reconcile, stripe_money
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import PROCESSING, IncomingPayment
from dunning_reconciliation.repository import stripe as stripe_repo
from dunning_reconciliation.repository.secrets import active_secrets
from dunning_reconciliation.stripe_events import Ignored, StripeEvent, StripeEventError, parse_event
from dunning_reconciliation.stripe_objects import Processing, links_of, read_event
from dunning_reconciliation.stripe_signature import SignatureError, verify

DUPLICATE = "duplicate"
IGNORED = "ignored"
log = get_logger(__name__)


async def receive_stripe_event(
    pool: asyncpg.Pool, tenant_id: str, signature: str | None, body: bytes, *, tolerance: int
) -> dict[str, Any]:
    """Returns the 200 body, or raises a 400 Problem (and then nothing was changed)."""
    secrets = await active_secrets(pool, tenant_id, "stripe") if len(tenant_id) <= 100 else []
    try:
        verify(body, signature, secrets, tolerance=tolerance)
    except SignatureError as exc:
        log.warning("reconciliation.webhook.refused", tenant_id=tenant_id, reason=str(exc))
        raise Problem(400, str(exc), errors=[{"field": "Stripe-Signature", "message": str(exc)}]) from None
    bind_context(tenant_id=tenant_id)
    try:
        event = parse_event(body)
        action = read_event(tenant_id, event)
    except StripeEventError as exc:
        log.warning("reconciliation.webhook.unreadable", field=exc.field, error=exc.message)
        raise Problem(400, str(exc), errors=[{"field": exc.field, "message": exc.message}]) from None

    async with pool.acquire() as conn:
        for attempt in (1, 2):
            try:
                async with conn.transaction():
                    return await _record(conn, tenant_id, event, action)
            except asyncpg.UniqueViolationError:
                # A concurrent delivery of the same event or Stripe object won the race; the second
                # attempt sees its committed row and answers "duplicate".
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


async def _record(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, action) -> dict[str, Any]:
    event_id, event_type = event.id, event.type
    if isinstance(action, IncomingPayment):
        action = await reconcile.acknowledging(conn, action)  # first: the watermark's fence
    elif isinstance(action, Processing):
        action = Processing(await reconcile.acknowledging(conn, action.payment), action.links)
    elif not isinstance(action, Ignored):
        await repo.acknowledge_time(conn)
    if not await repo.claim_stripe_event(conn, tenant_id, event_id, event_type):
        log.info("reconciliation.webhook.duplicate", stripe_event_id=event_id, event_type=event_type)
        return {"status": DUPLICATE}
    if isinstance(action, Ignored):
        await repo.finish_stripe_event(conn, tenant_id, event_id, f"{IGNORED}:{action.reason}", None)
        log.info(
            "reconciliation.webhook.ignored", stripe_event_id=event_id, event_type=event_type, reason=action.reason
        )
        return {"status": IGNORED}
    if isinstance(action, IncomingPayment):
        answer = await _payment(conn, event, action)
    else:
        answer = await stripe_money.handle(conn, tenant_id, event, action)
    await repo.finish_stripe_event(conn, tenant_id, event_id, answer.outcome, answer.payment_id)
    return answer.body()


async def _payment(conn: asyncpg.Connection, event: StripeEvent, payment: IncomingPayment) -> stripe_money.Answer:
    tenant_id = payment.tenant_id
    links = links_of(event)
    earlier = await stripe_money.live_payment(conn, tenant_id, payment.stripe_object_id)
    if earlier is not None and earlier["status"] == PROCESSING:
        # The debit seen processing succeeded: its pause ends and its money is allocated now.
        await stripe_repo.link(conn, tenant_id, earlier["payment_id"], links)
        return await stripe_money.succeeded(conn, event, payment, earlier["payment_id"])
    if earlier is not None:
        # Another event (another id) for a Stripe object already paid in: the money came once.
        log.info(
            "reconciliation.webhook.duplicate_object",
            stripe_event_id=event.id,
            stripe_object_id=payment.stripe_object_id,
            payment_id=earlier["payment_id"],
        )
        return stripe_money.Answer(DUPLICATE, earlier["payment_id"])
    outcome = await reconcile.receive(conn, payment)
    await stripe_repo.link(conn, tenant_id, outcome.payment_id, links)
    return stripe_money.Answer(outcome.status, outcome.payment_id, outcome.invoice_id, outcome.settled)
