"""An upheld dispute's credit note, against real PostgreSQL: reconciliation reads DisputeResolved and
issues the credit note through the credit note route's own path (the acknowledgement fence, the
balance, CreditNoteIssued), with the dispute id as its reference, so a redelivery changes nothing."""

import asyncio
from datetime import datetime

import pytest

from dunning.clock import utcnow
from dunning.events import new_event, validate
from dunning.ids import new_id
from dunning_reconciliation.repository.fence import ACK_FENCE

pytestmark = pytest.mark.integration
CREDITED = "dunning.CreditNoteIssued.v1"


def dispute_resolved(issued: dict, outcome: str, credit_amount: str | None, dispute_id: str | None = None) -> dict:
    invoice = issued["data"]
    data = {
        "dispute_id": dispute_id or new_id("dsp"),
        "invoice_id": invoice["invoice_id"],
        "tenant_id": invoice["tenant_id"],
        "outcome": outcome,
        "currency": invoice["currency"],
        "credit_amount": credit_amount,
        "resolved_by": "j.doe@acme.example",
        "note": None,
        "resolved_at": utcnow(),
    }
    envelope = new_event(
        "dunning.DisputeResolved.v1",
        data,
        source="/invoice-ingest",
        subject=invoice["invoice_id"],
        tenant_id=invoice["tenant_id"],
    )
    validate(envelope)
    return envelope


@pytest.fixture
async def invoice(pool, h) -> dict:
    """An open EUR invoice of 1000.00."""
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-D1")
    await h.handle_invoice(pool, issued)
    return issued


async def test_an_upheld_dispute_is_credited_once_with_its_id_as_reference(pool, client, h, invoice):
    resolved = dispute_resolved(invoice, "upheld", "250.00")
    dispute_id = resolved["data"]["dispute_id"]
    assert await h.apply(pool, resolved)

    [event] = await h.outbox_events(pool, invoice["subject"], CREDITED)  # validated against the schema
    data = event["data"]
    assert (data["reference"], data["reason"], data["amount"], data["amount_applied"]) == (
        dispute_id,
        "dispute upheld",
        "250.00",
        "250.00",
    )
    assert (data["balance_remaining"], data["settled"]) == ("750.00", False)
    assert await pool.fetchval("SELECT balance FROM invoices") == 750
    listed = (await client.get("/v1/credit-notes", headers=h.AUTH)).json()["data"]
    assert [(c["reference"], c["acknowledged_at"]) for c in listed] == [(dispute_id, data["acknowledged_at"])]

    # the same event again is the inbox's; the same dispute in a new event (republished) is the reference's
    assert not await h.apply(pool, resolved)
    assert await h.apply(pool, dispute_resolved(invoice, "upheld", "250.00", dispute_id=dispute_id))
    assert len(await h.outbox_events(pool, invoice["subject"], CREDITED)) == 1
    assert await pool.fetchval("SELECT balance FROM invoices") == 750


@pytest.mark.parametrize(
    ("outcome", "credit_amount"),
    [pytest.param("rejected", None, id="rejected"), pytest.param("upheld", None, id="no-credit")],
)
async def test_a_dispute_without_credit_issues_nothing(pool, h, invoice, outcome, credit_amount):
    assert await h.apply(pool, dispute_resolved(invoice, outcome, credit_amount))
    assert await h.outbox_events(pool, invoice["subject"], CREDITED) == []
    assert await pool.fetchval("SELECT count(*) FROM credit_notes") == 0
    assert await pool.fetchval("SELECT balance FROM invoices") == 1000


async def test_a_credit_above_the_balance_settles_and_one_for_a_settled_invoice_is_skipped(pool, h, invoice):
    assert await h.apply(pool, dispute_resolved(invoice, "upheld", "1200.00"))
    [event] = await h.outbox_events(pool, invoice["subject"], CREDITED)
    assert (event["data"]["amount_applied"], event["data"]["settled"]) == ("1000.00", True)
    assert await pool.fetchrow("SELECT balance, status FROM invoices") == (0, "paid")
    # nothing is left to credit: logged and skipped, not dead-lettered
    assert await h.apply(pool, dispute_resolved(invoice, "upheld", "100.00"))
    assert len(await h.outbox_events(pool, invoice["subject"], CREDITED)) == 1


async def test_the_credit_note_is_acknowledged_under_the_payments_fence(pool, h, invoice):
    """While the watermark publisher holds the fence exclusively, applying the dispute waits; its
    credit note's acknowledged_at is after the fence was let go."""
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", ACK_FENCE)
        applying = asyncio.create_task(h.apply(pool, dispute_resolved(invoice, "upheld", "250.00")))
        await asyncio.sleep(0.3)
        assert not applying.done()
        released = utcnow()
        await holder.execute("SELECT pg_advisory_unlock($1)", ACK_FENCE)
        assert await applying
    [event] = await h.outbox_events(pool, invoice["subject"], CREDITED)
    assert datetime.fromisoformat(event["data"]["acknowledged_at"]) >= released
