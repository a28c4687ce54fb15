"""The common receive path of GoCardless and Standard Webhooks: every event id recorded, each event
applied through the money core, all of a delivery in one transaction that commits before the 2xx.

A delivery is verified and read whole first (processors' modules): a bad one is refused and changes
nothing. Then, in one transaction: the payments watermark's fence first (reconcile.acknowledging's
rule), each event claimed in `processor_events` (a replayed id is a duplicate, nothing else) and
dispatched on the state of our payment for the processor's payment id, so events that arrive out of
order or twice under other ids still count the money once:

| event            | our payment is …        | then                                                       |
|------------------|-------------------------|------------------------------------------------------------|
| processing       | unknown                 | money.pending(processing): stored, nothing counted, pause  |
| succeeded        | processing              | money.pending_ended(succeeded): the pause ends, allocated  |
| succeeded        | unknown                 | reconcile.receive (invoice keys) or match_and_allocate     |
| failed           | processing              | money.pending_ended(failed)                                 |
| failed/late      | counted                 | money.reverse(payment_failed): all that is left            |
| chargeback       | counted                 | money.reverse(chargeback): all that is left                |
| refund           | counted                 | money.reverse(refund, amount)                              |
| dispute opened   | counted                 | money.pending(chargeback): pause                           |
| dispute closed   | counted                 | money.pending_ended(won / lost): lost reverses             |
| anything else    |                         | recorded, nothing changes                                  |
"""

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from dunning.http import Problem
from dunning.logging import bind_context, get_logger
from dunning.money import quantize
from dunning_reconciliation import match_service, money, reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.allocations import AllocationError
from dunning_reconciliation.domain import FAILED, PROCESSING, REVERSED, IncomingPayment, MatchKeys, PaymentRef
from dunning_reconciliation.money import ReversalError
from dunning_reconciliation.processors import events as ev
from dunning_reconciliation.repository import processor_events as store

DUPLICATE = "duplicate"
IGNORED = "ignored"
# Our payment's statuses in which its money was never counted (nothing to take back).
_NOT_COUNTED = frozenset({PROCESSING, FAILED, REVERSED, "rejected_currency_mismatch", "invoice_closed"})
log = get_logger(__name__)


async def receive(pool: asyncpg.Pool, tenant_id: str, events: Sequence[ev.ProcessorEvent]) -> list[dict[str, Any]]:
    """One result per event ({id, status, payment_id}), or a 4xx Problem (then nothing was changed)."""
    bind_context(tenant_id=tenant_id)
    async with pool.acquire() as conn:
        for attempt in (1, 2):
            try:
                async with conn.transaction():
                    return await _apply_all(conn, tenant_id, events)
            except asyncpg.UniqueViolationError:
                # A concurrent delivery of the same event or payment won the race: the second attempt
                # sees its committed rows (a duplicate).
                if attempt == 2:
                    raise
            except (AllocationError, ReversalError) as exc:
                log.warning("reconciliation.processor_event.refused", field=exc.field, error=exc.message)
                raise Problem(exc.status, exc.message, errors=[{"field": exc.field, "message": exc.message}]) from None
    raise AssertionError("unreachable")


async def _apply_all(
    conn: asyncpg.Connection, tenant_id: str, events: Sequence[ev.ProcessorEvent]
) -> list[dict[str, Any]]:
    acknowledged_at = None
    if any(e.action != ev.IGNORED for e in events):
        # First, before any other lock: the watermark's fence (see reconcile.acknowledging).
        acknowledged_at = await repo.acknowledge_time(conn)
    results = []
    for event in events:
        if not await store.claim_event(conn, tenant_id, event.processor, event.event_id, event.type):
            earlier = await store.event_outcome(conn, tenant_id, event.processor, event.event_id)
            log.info("reconciliation.processor_event.duplicate", processor=event.processor, event_id=event.event_id)
            payment_id = earlier["payment_id"] if earlier else None
            results.append({"id": event.event_id, "status": DUPLICATE, "payment_id": payment_id})
            continue
        status, payment_id = await _dispatch(conn, tenant_id, event, acknowledged_at)
        await store.finish_event(conn, tenant_id, event.processor, event.event_id, status, payment_id)
        log.info(
            "reconciliation.processor_event.applied",
            processor=event.processor,
            event_id=event.event_id,
            event_type=event.type,
            payment_reference=event.payment_reference,
            outcome=status,
            payment_id=payment_id,
        )
        results.append({"id": event.event_id, "status": status.partition(":")[0], "payment_id": payment_id})
    return results


async def _dispatch(
    conn: asyncpg.Connection, tenant_id: str, e: ev.ProcessorEvent, acknowledged_at: datetime | None
) -> tuple[str, str | None]:
    """What the event did, as (outcome, our payment id); the outcome is stored with the event."""
    if e.action == ev.IGNORED or e.payment_reference is None or acknowledged_at is None:
        return f"{IGNORED}:{e.reason or 'not_handled'}", None
    payment = await _known_payment(conn, tenant_id, e)
    row = await repo.lock_payment(conn, tenant_id, source=e.processor, source_reference=e.payment_reference)
    status = row["status"] if row else None
    payment_id = row["payment_id"] if row else None
    ref = PaymentRef(source=e.processor, source_reference=e.payment_reference)
    if e.action == ev.PROCESSING:
        if row is not None:
            return f"{DUPLICATE}:already_{status}", payment_id
        if payment is None:
            return f"{IGNORED}:no_invoice_metadata", None
        p = replace(payment, acknowledged_at=acknowledged_at)
        out = await money.pending(conn, p, "processing", invoice_id=await _invoice_of(conn, p))
        return out.status, out.payment_id
    if e.action == ev.SUCCEEDED:
        if status == PROCESSING:
            return await _ended(conn, tenant_id, e, ref, "processing", "succeeded", e.event_id)
        if row is not None:
            return f"{DUPLICATE}:already_{status}", payment_id
        if payment is None:
            return f"{IGNORED}:no_invoice_metadata", None
        return await _succeeded(conn, replace(payment, acknowledged_at=acknowledged_at))
    if e.action in (ev.FAILED, ev.LATE_FAILURE):
        if status == PROCESSING:
            return await _ended(conn, tenant_id, e, ref, "processing", "failed", e.event_id)
        if row is None or status in _NOT_COUNTED:
            return f"{IGNORED}:nothing_counted", payment_id
        return await _reverse(conn, tenant_id, e, ref, "payment_failed", f"{e.payment_reference}:payment_failed")
    if row is None or status in _NOT_COUNTED:
        return f"{IGNORED}:nothing_counted", payment_id
    if e.action == ev.CHARGEBACK:
        return await _reverse(conn, tenant_id, e, ref, "chargeback", f"{e.payment_reference}:chargeback")
    if e.action == ev.REFUND:
        return await _reverse(conn, tenant_id, e, ref, "refund", e.reference or e.event_id, amount=e.amount)
    if e.action == ev.DISPUTE_OPENED:
        p = replace(reconcile.payment_from_row(row), acknowledged_at=acknowledged_at)
        out = await money.pending(conn, p, "chargeback", payment_ref=ref)
        return out.status, out.payment_id
    if e.action == ev.DISPUTE_CLOSED:
        return await _ended(conn, tenant_id, e, ref, "chargeback", e.outcome or "won", e.reference or e.event_id)
    return f"{IGNORED}:not_handled", payment_id


async def _succeeded(conn: asyncpg.Connection, p: IncomingPayment) -> tuple[str, str | None]:
    """Money that arrived for a payment not seen before: by its invoice keys, else by matching."""
    keys = p.keys
    if keys.invoice_id or keys.external_ids or keys.numbers:
        out = await reconcile.receive(conn, p)
    else:
        [out] = await match_service.match_and_allocate(conn, [p])
    return out.status, out.payment_id


async def _ended(
    conn: asyncpg.Connection,
    tenant_id: str,
    e: ev.ProcessorEvent,
    ref: PaymentRef,
    kind: str,
    outcome: str,
    source_reference: str,
) -> tuple[str, str | None]:
    out = await money.pending_ended(
        conn,
        tenant_id,
        payment_ref=ref,
        kind=kind,
        outcome=outcome,
        source_reference=source_reference,
        ended_at=e.occurred_at,
    )
    return out.status, out.payment_id


async def _reverse(
    conn: asyncpg.Connection,
    tenant_id: str,
    e: ev.ProcessorEvent,
    ref: PaymentRef,
    kind: str,
    source_reference: str,
    *,
    amount=None,
) -> tuple[str, str | None]:
    result = await money.reverse(
        conn,
        tenant_id,
        source=e.processor,
        source_reference=source_reference,
        payment_ref=ref,
        amount=amount,
        kind=kind,
        reversed_at=e.occurred_at,
    )
    return (f"{DUPLICATE}:reversed_before" if result.replayed else "reversed"), result.payment_id


async def _invoice_of(conn: asyncpg.Connection, p: IncomingPayment) -> str | None:
    """The invoice a processing payment names (the pause needs it), the keys locked as receive does."""
    await reconcile.lock_keys(conn, p.tenant_id, p.keys)
    return await repo.find_invoice(conn, p.tenant_id, p.keys)


async def _known_payment(conn: asyncpg.Connection, tenant_id: str, e: ev.ProcessorEvent) -> IncomingPayment | None:
    """The event's payment; for GoCardless, kept from (or completed by) the first event with metadata."""
    if e.processor != "gocardless" or e.payment_reference is None:
        return e.payment
    if e.payment is not None:
        keys = e.payment.keys
        await store.save_gocardless_payment(
            conn,
            tenant_id,
            e.payment_reference,
            invoice_id=keys.invoice_id,
            invoice_external_id=keys.external_ids[0] if keys.external_ids else None,
            currency=e.payment.currency,
            amount=e.payment.amount,
            status=e.type.partition(".")[2],
        )
        return e.payment
    known = await store.gocardless_payment(conn, tenant_id, e.payment_reference)
    if known is None:
        return None
    await store.set_gocardless_status(conn, tenant_id, e.payment_reference, e.type.partition(".")[2])
    return IncomingPayment(
        tenant_id=tenant_id,
        source=e.processor,
        source_reference=e.payment_reference,
        currency=known["currency"],
        amount=quantize(known["amount"], known["currency"]),
        received_at=e.occurred_at,
        keys=MatchKeys.of(known["invoice_id"], (known["invoice_external_id"],) if known["invoice_external_id"] else ()),
    )
