"""The agency stop on a real PostgreSQL, through the handler table and the firing loop: an invoice
handed to a collection agency has every remaining stage cancelled (with_agency), nothing fires after,
and a payment still settles it."""

from datetime import timedelta

import pytest

from dunning.clock import isoformat, utcnow
from dunning.events import new_event, validate
from dunning.handler_table import Rejected
from dunning.ids import new_id
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy

pytestmark = pytest.mark.integration
ESCALATED, CANCELLED = "dunning.StageEscalated.v1", "dunning.StagesCancelled.v1"
WITH_AGENCY_POLICY = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT0S"},
        {"name": "call", "offset": "P1D", "channels": ["call"]},
        {"name": "collections", "offset": "P2D", "channels": ["agency"]},
        {"name": "final", "offset": "P3D"},
    ],
}


def handed_to_agency(issued: dict, *, tenant_id: str | None = None) -> dict:
    d = issued["data"]
    data = {
        "case_id": new_id("case"),
        "tenant_id": tenant_id or d["tenant_id"],
        "invoice_id": d["invoice_id"],
        "customer_id": d["customer"]["customer_id"],
        "agency_name": "Nordic Collect AB",
        "mode": "webhook",
        "balance": d["amount_due"],
        "currency": d["currency"],
        "handed_over_at": isoformat(utcnow()),
    }
    envelope = new_event(
        "dunning.InvoiceHandedToAgency.v1",
        data,
        source="/notifier",
        subject=d["invoice_id"],
        tenant_id=data["tenant_id"],
    )
    validate(envelope)
    return envelope


async def fire(pool) -> int:
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False).fire_once()


async def test_the_hand_off_cancels_every_remaining_stage_once_and_nothing_fires_after(pool, h):
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy(WITH_AGENCY_POLICY))
    issued = h.invoice_issued(issued_at=utcnow() - timedelta(seconds=1), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    assert await fire(pool) == 1  # soft

    handed = handed_to_agency(issued)
    await h.apply(pool, handed)
    await h.apply(pool, handed_to_agency(issued))  # a second hand-off (another case) stops nothing more
    timers = {(r["stage"], r["channel"]): (r["state"], r["reason"]) for r in await h.timers(pool, invoice_id)}
    assert timers == {
        ("soft", "email"): ("fired", None),
        ("call", "call"): ("cancelled", "with_agency"),
        ("collections", "agency"): ("cancelled", "with_agency"),
        ("final", "email"): ("cancelled", "with_agency"),
    }
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert cancelled["data"]["reason"] == "with_agency" and cancelled["data"]["cause_event_id"] == handed["id"]
    assert [s["stage"] for s in cancelled["data"]["stages"]] == ["call", "collections", "final"]

    await pool.execute("UPDATE timers SET scheduled_at = now() - interval '1 second' WHERE invoice_id = $1", invoice_id)
    assert await fire(pool) == 0
    assert len(await h.outbox_events(pool, ESCALATED, invoice_id)) == 1

    # A payment after the hand-off still settles the invoice (its own StagesCancelled: the notifier
    # cancels the handed_over notice if it has not gone yet).
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True, amount="1250.00"))
    reasons = [e["data"]["reason"] for e in await h.outbox_events(pool, CANCELLED, invoice_id)]
    assert reasons == ["with_agency", "invoice_settled"]


async def test_a_hand_off_of_a_settled_invoice_stops_nothing(pool, h):
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="100.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True, amount="100.00"))
    await h.apply(pool, handed_to_agency(issued))
    reasons = [e["data"]["reason"] for e in await h.outbox_events(pool, CANCELLED, invoice_id)]
    assert reasons == ["invoice_settled"]


async def test_another_tenants_hand_off_is_rejected(pool, h):
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1))
    await h.apply(pool, issued)
    with pytest.raises(Rejected):
        await h.apply(pool, handed_to_agency(issued, tenant_id="ten_someone_else"))
