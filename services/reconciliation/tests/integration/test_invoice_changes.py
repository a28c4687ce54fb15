"""InvoiceUpdated, InvoiceVoided and InvoiceWrittenOff applied to reconciliation's balances (real
PostgreSQL, through the handler table and the inbox), payments for closed invoices, and the write-off
report."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dunning.handler_table import Rejected
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.reconcile import receive

pytestmark = pytest.mark.integration
RECEIVED = "dunning.PaymentReceived.v1"


def payment(**overrides) -> dict:
    body = {
        "invoice_external_id": "ACC-1",
        "amount": "400.00",
        "currency": "EUR",
        "received_at": "2026-01-09T09:00:00+01:00",
        "reference": "RCPT-1",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def invoice_row(pool, invoice_id: str) -> dict:
    row = await pool.fetchrow(
        "SELECT external_id, number, amount_due, balance, status, version, voided_at, void_reason"
        " FROM invoices WHERE invoice_id = $1",
        invoice_id,
    )
    return dict(row)


async def test_an_amount_correction_moves_the_balance_by_the_difference(pool, client, h):
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    assert (await client.post("/v1/payments", json=payment(), headers=h.AUTH)).status_code == 201  # 600 left

    raised = h.invoice_updated(issued, 2, amount_due="1200.00")
    assert await h.apply(pool, raised)
    row = await invoice_row(pool, issued["subject"])
    assert (row["amount_due"], row["balance"], row["status"], row["version"]) == (1200, 800, "open", 2)

    lowered = h.invoice_updated(issued, 3, previous=raised, amount_due="300.00")
    await h.apply(pool, lowered)
    row = await invoice_row(pool, issued["subject"])
    assert (row["balance"], row["status"], row["version"]) == (-100, "paid", 3)  # more was paid than is due

    # A replay of version 2 under a new event id (the inbox does not know it) changes nothing.
    await h.apply(pool, h.invoice_updated(issued, 2, amount_due="1200.00"))
    assert (await invoice_row(pool, issued["subject"]))["balance"] == -100

    # Paid, then corrected upwards again: owed again, and the next payment is applied.
    await h.apply(pool, h.invoice_updated(issued, 4, previous=lowered, amount_due="500.00"))
    row = await invoice_row(pool, issued["subject"])
    assert (row["balance"], row["status"]) == (100, "open")
    again = await client.post("/v1/payments", json=payment(amount="100.00", reference="RCPT-2"), headers=h.AUTH)
    assert (again.json()["amount_applied"], again.json()["settled"]) == ("100.00", True)


async def test_a_new_external_id_matches_the_payment_waiting_for_it(pool, client, h):
    issued = h.invoice_issued(amount_due="400.00", external_id="ACC-OLD", number="N-OLD")
    await h.handle_invoice(pool, issued)
    waiting = await client.post("/v1/payments", json=payment(invoice_external_id="ACC-NEW"), headers=h.AUTH)
    assert waiting.json()["status"] == "pending_match"

    await h.apply(pool, h.invoice_updated(issued, 2, external_id="ACC-NEW", number="N-NEW"))

    row = await invoice_row(pool, issued["subject"])
    assert (row["external_id"], row["number"], row["balance"], row["status"]) == ("ACC-NEW", "N-NEW", 0, "paid")
    [event] = await h.outbox_events(pool, issued["subject"], RECEIVED)
    assert (event["data"]["invoice_external_id"], event["data"]["settled"]) == ("ACC-NEW", True)
    by_old_key = await client.post(
        "/v1/payments", json=payment(invoice_external_id="ACC-OLD", reference="RCPT-2"), headers=h.AUTH
    )
    assert by_old_key.json()["status"] == "pending_match"  # the old key names no invoice any more


async def test_a_void_closes_the_invoice_and_a_later_payment_is_recorded_not_applied(pool, client, h):
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    await h.apply(pool, h.invoice_voided(issued, 2, reason="duplicate of ACC-0"))
    await h.apply(pool, h.invoice_updated(issued, 2, amount_due="5.00"))  # not newer: ignored

    row = await invoice_row(pool, issued["subject"])
    assert (row["status"], row["balance"], row["version"], row["void_reason"]) == ("void", 0, 2, "duplicate of ACC-0")
    assert row["voided_at"] is not None

    late = await client.post("/v1/payments", json=payment(), headers=h.AUTH)
    assert late.status_code == 201, late.text
    body = late.json()
    assert (body["status"], body["amount_applied"], body["unapplied_amount"], body["settled"]) == (
        "invoice_closed",
        "0.00",
        "400.00",
        False,
    )
    assert await h.outbox_events(pool, issued["subject"], RECEIVED) == []  # nothing for the scheduler to act on
    listed = await client.get("/v1/payments", params={"invoice_id": issued["subject"]}, headers=h.AUTH)
    assert [(p["status"], p["unapplied_amount"]) for p in listed.json()["data"]] == [("invoice_closed", "400.00")]
    retry = await client.post("/v1/payments", json=payment(), headers=h.AUTH)
    assert retry.status_code == 200 and retry.json() == body


async def test_a_stripe_payment_for_a_written_off_invoice_is_recorded_not_applied(pool, client, h):
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    await h.apply(pool, h.invoice_written_off(issued, 2, "1000.00"))

    response = await h.post_webhook(client, h.stripe_event("invoice.paid", h.invoice_paid(issued["subject"], 100000)))

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["invoice_id"]) == ("invoice_closed", issued["subject"])
    assert await h.outbox_events(pool, issued["subject"], RECEIVED) == []
    assert await pool.fetchval("SELECT unapplied_amount FROM payments") == 1000


async def test_a_payment_waiting_for_keys_a_void_invoice_takes_later_is_not_applied(pool, h):
    """The late match (reconcile.apply_pending) follows the same rule as a direct one."""
    issued = h.invoice_issued(amount_due="100.00", external_id="ACC-1", number="N-1")
    await h.handle_invoice(pool, issued)
    await h.apply(pool, h.invoice_voided(issued, 2))
    async with pool.acquire() as conn, conn.transaction():
        outcome = await receive(
            conn,
            IncomingPayment(
                tenant_id=h.TENANT,
                source="api",
                source_reference="RCPT-WAITING",
                currency="EUR",
                amount=Decimal("100.00"),
                received_at=datetime(2026, 1, 9, tzinfo=UTC),
                keys=MatchKeys.of(None, (), ("N-RENUMBERED",)),
            ),
        )
    assert outcome.status == "pending_match"

    await h.apply(pool, h.invoice_updated(issued, 3, number="N-RENUMBERED"))

    row = await pool.fetchrow("SELECT status, invoice_id, amount_applied FROM payments")
    assert tuple(row) == ("invoice_closed", issued["subject"], 0)
    assert await h.outbox_events(pool, issued["subject"], RECEIVED) == []


async def test_a_write_off_records_the_balance_reconciliation_held(pool, client, h):
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    await client.post("/v1/payments", json=payment(), headers=h.AUTH)  # ingest has not seen it yet

    written_off = h.invoice_written_off(issued, 2, "1000.00", reason="customer insolvent")
    assert await h.apply(pool, written_off)
    assert not await h.apply(pool, written_off)  # redelivered: the inbox has it

    row = await invoice_row(pool, issued["subject"])
    assert (row["status"], row["balance"], row["version"]) == ("written_off", 0, 2)
    kept = await pool.fetchrow("SELECT amount, amount_reported, reason, currency FROM write_offs")
    assert tuple(kept) == (600, 1000, "customer insolvent", "EUR")


async def test_a_change_naming_another_tenant_is_rejected(pool, h):
    issued = h.invoice_issued(amount_due="100.00")
    await h.handle_invoice(pool, issued)
    voided = h.invoice_voided(issued, 2)
    voided["tenantid"] = "ten_someone_else"
    with pytest.raises(Rejected):
        await h.apply(pool, voided)
    assert (await invoice_row(pool, issued["subject"]))["status"] == "open"


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


async def test_the_write_off_report_pages_a_period_with_totals_per_currency(pool, client, h):
    cases = [  # (currency, amount, written off at)
        ("EUR", "100.00", at(2)),
        ("EUR", "250.50", at(3)),
        ("JPY", "158000", at(3, 12)),
        ("EUR", "999.00", at(20)),  # after the period
    ]
    for n, (currency, amount, when) in enumerate(cases):
        issued = h.invoice_issued(currency=currency, amount_due=amount, external_id=f"WO-{n}", number=f"N-{n}")
        await h.handle_invoice(pool, issued)
        await h.apply(pool, h.invoice_written_off(issued, 2, amount, reason=f"uncollectable {n}", at=when))
    period = {"from": "2026-11-01T00:00:00+01:00", "to": "2026-11-10T00:00:00Z"}

    first = await client.get("/v1/write-offs", params={**period, "limit": 2}, headers=h.AUTH)
    assert first.status_code == 200, first.text
    rest = await client.get(
        "/v1/write-offs", params={**period, "limit": 2, "cursor": first.json()["next_cursor"]}, headers=h.AUTH
    )
    rows = first.json()["data"] + rest.json()["data"]
    assert [(r["external_id"], r["number"], r["currency"], r["amount"]) for r in rows] == [
        ("WO-0", "N-0", "EUR", "100.00"),
        ("WO-1", "N-1", "EUR", "250.50"),
        ("WO-2", "N-2", "JPY", "158000"),
    ]
    assert (rows[0]["reason"], rows[0]["written_off_at"]) == ("uncollectable 0", "2026-11-02T09:00:00Z")
    assert rest.json()["next_cursor"] is None
    totals = [
        {"currency": "EUR", "count": 2, "amount": "350.50"},
        {"currency": "JPY", "count": 1, "amount": "158000"},
    ]
    assert first.json()["totals"] == rest.json()["totals"] == totals  # the period's, not the page's
    everything = (await client.get("/v1/write-offs", headers=h.AUTH)).json()
    assert len(everything["data"]) == 4 and everything["totals"][0] == {
        "currency": "EUR",
        "count": 3,
        "amount": "1349.50",
    }


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        pytest.param({"from": "2026-11-10T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, 422, "to", id="to-before-from"),
        pytest.param({"from": "2026-11-01T00:00:00"}, 422, "from", id="naive-from"),
        pytest.param({"to": "yesterday"}, 422, "to", id="not-an-instant"),
        pytest.param({"cursor": "eyJhZnRlciI6MX0"}, 400, "cursor", id="foreign-cursor"),
    ],
)
async def test_a_bad_report_period_names_the_field(client, h, params, status, field):
    response = await client.get("/v1/write-offs", params=params, headers=h.AUTH)
    assert response.status_code == status, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
