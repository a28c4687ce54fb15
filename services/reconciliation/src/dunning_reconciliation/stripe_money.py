"""Stripe's events beyond a plain payment, mapped onto the money core (`money`, `credit_notes`), in
the webhook's transaction (the caller joined the payments watermark's fence first and claimed the
event id: a replay never gets here).

- payment_intent.processing: the debit is stored `processing`, nothing applied, dunning paused
  (`money.pending`); its success (payment_intent.succeeded, or the invoice.paid of its Stripe
  invoice) ends the pause and allocates (`succeeded`); payment_intent.payment_failed ends it `failed`.
- Refunds: what Stripe reports refunded of a payment is the larger of the succeeded refunds seen
  (charge.refunded's list, refund.*, charge.refund.updated) and the charges' cumulative
  `amount_refunded` (which also counts refunds no event listed); whatever of it is not reversed yet
  is reversed now (`money.reverse`, kind refund), per refund id where one is named. The same refund
  seen through two event types is reversed once. A refund that fails after it was counted is logged:
  a reversal is not itself reversed.
- Disputes: charge.dispute.created pauses dunning (`money.pending`, chargeback);
  charge.dispute.closed ends the pause, `lost` taking the money back.
- invoice.voided / invoice.marked_uncollectible: InvoiceClosedByProcessor for invoice-ingest.
- credit_note.created: applied as `POST /v1/credit-notes` applies one (`credit_notes.issue`).
A refund, dispute or credit note for a payment or invoice we never saw is ignored, and recorded so.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import ValidationError

from dunning import outbox
from dunning.clock import utcnow
from dunning.http import Problem
from dunning.logging import get_logger
from dunning.money import format_amount
from dunning_reconciliation import credit_notes, messages, money, reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import PROCESSING, IncomingPayment, MatchKeys, PaymentRef
from dunning_reconciliation.money import ReversalError
from dunning_reconciliation.repository import stripe as stripe_repo
from dunning_reconciliation.schemas import CreditNoteIn
from dunning_reconciliation.stripe_events import StripeEvent
from dunning_reconciliation.stripe_objects import (
    CreditNote,
    Dispute,
    IntentFailed,
    InvoiceClosed,
    Processing,
    Refunds,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Answer:
    """The webhook's 200 body, and the outcome recorded with the event id."""

    status: str
    payment_id: str | None = None
    invoice_id: str | None = None
    settled: bool | None = None
    reason: str | None = None  # of an ignored event

    @property
    def outcome(self) -> str:
        return f"{self.status}:{self.reason}" if self.reason else self.status

    def body(self) -> dict[str, Any]:
        fields = {"payment_id": self.payment_id, "invoice_id": self.invoice_id, "settled": self.settled}
        return {"status": self.status, **{k: v for k, v in fields.items() if v is not None}}


def _ignored(event: StripeEvent, reason: str, **fields: Any) -> Answer:
    log.info("reconciliation.stripe.ignored", stripe_event_id=event.id, event_type=event.type, reason=reason, **fields)
    return Answer("ignored", reason=reason, payment_id=fields.get("payment_id"))


async def handle(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, action: Any) -> Answer:
    if isinstance(action, Processing):
        return await processing(conn, tenant_id, event, action)
    if isinstance(action, IntentFailed):
        return await intent_failed(conn, tenant_id, event, action)
    if isinstance(action, Refunds):
        return await refunds(conn, tenant_id, event, action)
    if isinstance(action, Dispute):
        return await dispute(conn, tenant_id, event, action)
    if isinstance(action, InvoiceClosed):
        return await invoice_closed(conn, tenant_id, event, action)
    if isinstance(action, CreditNote):
        return await credit_note(conn, tenant_id, event, action)
    raise TypeError(f"no Stripe mapping for {type(action).__name__}")


async def processing(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: Processing) -> Answer:
    """A debit in flight: stored `processing`, not counted as paid; its invoice's dunning pauses."""
    p = a.payment
    earlier = await live_payment(conn, tenant_id, p.stripe_object_id)
    if earlier is not None:  # seen before (processing again), or its money already came
        return Answer("duplicate", earlier["payment_id"])
    await reconcile.lock_keys(conn, tenant_id, p.keys)  # as receive does: its invoice may arrive now
    invoice_id = await repo.find_invoice(conn, tenant_id, p.keys)
    outcome = await money.pending(conn, p, "processing", invoice_id=invoice_id)
    await stripe_repo.link(conn, tenant_id, p.payment_id, a.links)
    log.info(
        "reconciliation.stripe.processing",
        payment_id=p.payment_id,
        stripe_object_id=p.stripe_object_id,
        amount=format_amount(p.amount, p.currency),
        invoice_id=outcome.invoice_id,
    )
    return Answer("processing", p.payment_id, outcome.invoice_id, False)


async def live_payment(conn: asyncpg.Connection, tenant_id: str, object_id: str | None) -> asyncpg.Record | None:
    """The payment a Stripe object carries now. An attempt that failed (a debit returned) lets go of
    the object: a PaymentIntent retried afterwards is a new payment, counted when it succeeds."""
    if object_id is None:
        return None
    failed = await stripe_repo.release_failed(conn, tenant_id, object_id)
    if failed is not None:
        log.info("reconciliation.stripe.retry_after_failure", stripe_object_id=object_id, failed_payment_id=failed)
    return await stripe_repo.payment_by_stripe_ids(conn, tenant_id, [object_id])


async def succeeded(conn: asyncpg.Connection, event: StripeEvent, p: IncomingPayment, payment_id: str) -> Answer:
    """The processing payment `payment_id` succeeded (p: the succeeding event's payment): the pause
    ends and the money is allocated."""
    outcome = await money.pending_ended(
        conn,
        p.tenant_id,
        payment_ref=PaymentRef(payment_id=payment_id),
        kind="processing",
        outcome="succeeded",
        source_reference=event.id,
        ended_at=p.received_at,
    )
    log.info("reconciliation.stripe.processing_succeeded", payment_id=payment_id, status=outcome.status)
    # A payment that had ended before (a concurrent event) answers with its status, in the webhook's words.
    status = _ENDED_BEFORE.get(outcome.status, outcome.status)
    return Answer(status, payment_id, outcome.invoice_id, outcome.settled)


_ENDED_BEFORE = {"partially_allocated": "applied", "unmatched": "pending_match", "reversed": "duplicate"}


async def intent_failed(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: IntentFailed) -> Answer:
    row = await stripe_repo.payment_by_stripe_ids(conn, tenant_id, a.object_ids)
    if row is None or row["status"] != PROCESSING:
        return _ignored(event, "not_processing", object_ids=list(a.object_ids))
    outcome = await money.pending_ended(
        conn,
        tenant_id,
        payment_ref=PaymentRef(payment_id=row["payment_id"]),
        kind="processing",
        outcome="failed",
        source_reference=event.id,
        ended_at=_at(event),
    )
    log.info("reconciliation.stripe.processing_failed", payment_id=row["payment_id"], failure=a.reason)
    return Answer("failed", row["payment_id"], outcome.invoice_id, False)


async def refunds(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: Refunds) -> Answer:
    """Record what the event says was refunded, then reverse what Stripe reports refunded of the
    payment and is not reversed yet (so each refund counts once, whichever events report it)."""
    row = await stripe_repo.payment_by_stripe_ids(conn, tenant_id, a.object_ids)
    if row is None:
        return _ignored(event, "unknown_payment", object_ids=list(a.object_ids))
    payment_id, currency = row["payment_id"], row["currency"]
    await repo.lock_names(conn, [f"reconciliation-stripe-refunds\x1f{tenant_id}\x1f{payment_id}"])
    for r in a.refunds:
        if r.currency != currency:
            return _ignored(event, "currency_mismatch", payment_id=payment_id, refund_id=r.refund_id)
    if a.currency is not None and a.currency != currency:
        return _ignored(event, "currency_mismatch", payment_id=payment_id)
    for r in a.refunds:
        before = await stripe_repo.refund_status(conn, tenant_id, r.refund_id)
        if before == "succeeded" and r.status in ("failed", "canceled"):
            # Counted when it succeeded; Stripe now says the money did not leave. Not undone here.
            log.warning(
                "reconciliation.stripe.refund_failed_after_reversal",
                payment_id=payment_id,
                refund_id=r.refund_id,
                status=r.status,
                amount=format_amount(r.amount, currency),
            )
        await stripe_repo.save_refund(
            conn, tenant_id, r.refund_id, kind="refund", payment_id=payment_id, currency=currency,
            amount=r.amount, status=r.status,
        )  # fmt: skip
    if a.charge_id is not None and a.charge_refunded is not None:
        await stripe_repo.save_refund(
            conn, tenant_id, a.charge_id, kind="charge", payment_id=payment_id, currency=currency,
            amount=a.charge_refunded, status="succeeded",
        )  # fmt: skip
    reported, reversed_ = await stripe_repo.refunded(conn, tenant_id, payment_id)
    due = reported - reversed_
    if due <= 0:
        log.info("reconciliation.stripe.refund_counted_before", stripe_event_id=event.id, payment_id=payment_id)
        return Answer("duplicate", payment_id)
    # Named refunds first (each under its own id), then what only a cumulative amount tells.
    invoices: list[str] = []
    for r in a.refunds:
        if due > 0 and r.status == "succeeded":
            due -= await _reverse(conn, tenant_id, payment_id, r.refund_id, min(r.amount, due), event, invoices)
    if due > 0:
        rest = f"{a.charge_id or payment_id}:{event.id}"  # refunds only a cumulative amount tells of
        due -= await _reverse(conn, tenant_id, payment_id, rest, due, event, invoices)
    if due == reported - reversed_:  # nothing could be taken back (a lost chargeback took it all)
        return _ignored(event, "nothing_left_to_reverse", payment_id=payment_id)
    return Answer("reversed", payment_id, invoices[0] if invoices else None)


async def _reverse(
    conn: asyncpg.Connection,
    tenant_id: str,
    payment_id: str,
    reference: str,
    amount: Decimal,
    event: StripeEvent,
    invoices: list[str],
) -> Decimal:
    """Reverse `amount` of the payment under `reference` (all that is left when less is: a dispute
    took part of it); returns what was newly reversed."""
    result = None
    for wanted in (amount, None):
        try:
            async with conn.transaction():  # a savepoint: a refused reversal leaves nothing behind
                result = await money.reverse(
                    conn,
                    tenant_id,
                    source="stripe",
                    source_reference=reference,
                    payment_ref=PaymentRef(payment_id=payment_id),
                    amount=wanted,
                    kind="refund",
                    reversed_at=_at(event),
                )
            break
        except ReversalError as exc:
            log.warning(
                "reconciliation.stripe.refund_refused", payment_id=payment_id, reference=reference, error=exc.message
            )
            if exc.field != "amount":
                break
    if result is None or result.replayed:
        return Decimal(0)
    invoices.extend(i for i in result.invoice_ids if i not in invoices)
    log.info(
        "reconciliation.stripe.refund_reversed",
        payment_id=payment_id,
        reference=reference,
        reversal_id=result.reversal_id,
        amount=str(result.amount),
        invoice_ids=list(result.invoice_ids),
    )
    return result.amount


async def dispute(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: Dispute) -> Answer:
    row = await stripe_repo.payment_by_stripe_ids(conn, tenant_id, a.object_ids)
    if row is None:
        return _ignored(event, "unknown_payment", dispute_id=a.dispute_id, object_ids=list(a.object_ids))
    payment_id, ref = row["payment_id"], PaymentRef(payment_id=row["payment_id"])
    # The dispute (and its close) linked to the payment once: the same dispute under another event
    # id changes nothing more.
    first = await stripe_repo.claim_link(conn, tenant_id, payment_id, a.dispute_id)
    if a.outcome is not None:
        first = await stripe_repo.claim_link(conn, tenant_id, payment_id, f"{a.dispute_id}#closed")
    if not first:
        return Answer("duplicate", payment_id)
    if a.outcome is None:
        # The pending money is the disputed amount, named by the dispute.
        disputed = IncomingPayment(
            tenant_id=tenant_id,
            source="stripe",
            source_reference=a.dispute_id,
            currency=a.currency,
            amount=a.amount,
            received_at=a.at,
            keys=MatchKeys(),
            payment_id=payment_id,
            acknowledged_at=await repo.acknowledge_time(conn),
        )
        outcome = await money.pending(conn, disputed, "chargeback", payment_ref=ref)
        log.info("reconciliation.stripe.dispute_opened", payment_id=payment_id, dispute_id=a.dispute_id)
        return Answer("disputed", payment_id, outcome.invoice_id)
    outcome = await _dispute_closed(conn, tenant_id, ref, a)
    log.info("reconciliation.stripe.dispute_closed", payment_id=payment_id, dispute_id=a.dispute_id, outcome=a.outcome)
    return Answer("dispute_closed", payment_id, outcome.invoice_id, outcome.settled)


async def _dispute_closed(conn: asyncpg.Connection, tenant_id: str, ref: PaymentRef, a: Dispute):
    """End the dispute's pause; lost takes the disputed amount back, or all that is left of the
    payment when less is left (a part was refunded meanwhile)."""
    assert a.outcome is not None, "a closed dispute"
    for amount in (a.amount, None) if a.outcome == "lost" else (None,):
        try:
            async with conn.transaction():  # a savepoint: a refused amount leaves nothing behind
                return await money.pending_ended(
                    conn,
                    tenant_id,
                    payment_ref=ref,
                    kind="chargeback",
                    outcome=a.outcome,
                    source_reference=a.dispute_id,
                    ended_at=a.at,
                    amount=amount,
                )
        except ReversalError as exc:
            if amount is None or exc.field != "amount":
                raise
            log.warning("reconciliation.stripe.dispute_above_what_is_left", dispute_id=a.dispute_id, error=str(exc))
    raise AssertionError("unreachable")


async def invoice_closed(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: InvoiceClosed) -> Answer:
    """Stripe voided the invoice or marked it uncollectible: invoice-ingest, which owns the invoice,
    closes it by its own rules (InvoiceClosedByProcessor, through the outbox)."""
    invoice_id = await repo.find_invoice(conn, tenant_id, a.keys)
    if invoice_id is None:
        return _ignored(event, "unknown_invoice", stripe_invoice_id=a.stripe_invoice_id)
    invoice = await repo.lock_invoice(conn, tenant_id, invoice_id)
    assert invoice is not None, "found above (invoices are never deleted)"
    message = messages.invoice_closed_by_processor(
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        invoice_external_id=invoice["external_id"],
        action=a.action,
        source_reference=event.id,
        reason=a.reason,
        closed_at=a.closed_at,
    )
    await outbox.add(conn, message)
    log.info("reconciliation.stripe.invoice_closed", invoice_id=invoice_id, action=a.action)
    return Answer("closed", invoice_id=invoice_id)


async def credit_note(conn: asyncpg.Connection, tenant_id: str, event: StripeEvent, a: CreditNote) -> Answer:
    """A Stripe credit note on an open invoice, applied as the accounting API's credit notes are
    (reference: the cn_ id, so a replay under another event id answers the first)."""
    invoice_id = await repo.find_invoice(conn, tenant_id, MatchKeys.of(None, (a.stripe_invoice_id,)))
    if invoice_id is None:
        paid = await stripe_repo.payment_by_stripe_ids(conn, tenant_id, [a.stripe_invoice_id])
        invoice_id = paid["invoice_id"] if paid is not None else None
    if invoice_id is None:
        return _ignored(event, "unknown_invoice", stripe_invoice_id=a.stripe_invoice_id)
    try:
        body = CreditNoteIn(
            invoice_id=invoice_id, reference=a.credit_note_id, amount=str(a.amount), currency=a.currency,
            reason=a.reason,
        )  # fmt: skip
        status, view = await credit_notes.issue(conn, credit_notes.credit_note_request(tenant_id, body))
    except (Problem, ValidationError) as exc:
        detail = exc.detail if isinstance(exc, Problem) else str(exc.errors()[0]["msg"])
        return _ignored(event, "credit_note_refused", invoice_id=invoice_id, detail=detail)
    log.info(
        "reconciliation.stripe.credit_note_applied",
        credit_note_id=view["credit_note_id"],
        stripe_credit_note_id=a.credit_note_id,
        invoice_id=invoice_id,
        repeated=status == 200,
    )
    return Answer("credited", invoice_id=invoice_id, settled=view["settled"])


def _at(event: StripeEvent) -> datetime:
    return datetime.fromtimestamp(event.created, tz=UTC) if event.created is not None else utcnow()
