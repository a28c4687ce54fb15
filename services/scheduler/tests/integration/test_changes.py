"""Invoice changes on a real PostgreSQL, through the handlers and the firing loop: updates that
re-plan or settle, voids, write-offs, credit notes, customers, and version ordering."""

from datetime import UTC, datetime, timedelta

import pytest

from dunning.clock import utcnow
from dunning.handler_table import Rejected
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy

pytestmark = pytest.mark.integration
ESCALATED, CANCELLED = "dunning.StageEscalated.v1", "dunning.StagesCancelled.v1"
RESCHEDULED = "dunning.StagesRescheduled.v1"
NOW_THEN_LATER = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT0S"},
        {"name": "firm", "offset": "P1D"},
        {"name": "final", "offset": "P2D"},
    ],
}


def z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def use_policy(pool, tenant: str, document: dict) -> None:
    async with pool.acquire() as conn:
        await save_policy(conn, tenant, parse_policy(document))


async def fire(pool) -> int:
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False).fire_once()


async def states(h, pool, invoice_id: str) -> dict[str, tuple[str, str | None]]:
    return {r["stage"]: (r["state"], r["reason"]) for r in await h.timers(pool, invoice_id)}


async def test_a_due_date_move_replans_only_the_pending_stages_and_says_when_they_moved(pool, h):
    today = utcnow().date()
    issued = h.invoice_issued(issued_at=utcnow() - timedelta(days=20), due_date=today + timedelta(days=1))
    invoice_id = issued["subject"]
    await h.apply(pool, issued)  # pre_due (due - 3 days) is past at ingest: scheduled now
    assert await fire(pool) == 1
    before = {r["stage"]: r for r in await h.timers(pool, invoice_id)}
    assert before["pre_due"]["state"] == "fired"

    moved = h.invoice_updated(issued, version=2, due_date=today + timedelta(days=20))
    await h.apply(pool, moved)

    after = {r["stage"]: r for r in await h.timers(pool, invoice_id)}
    assert after["pre_due"]["state"] == "fired"  # sent stays sent, at its time
    assert after["pre_due"]["scheduled_at"] == before["pre_due"]["scheduled_at"]
    for stage in ("soft", "firm", "final", "collections"):
        assert after[stage]["stage_id"] == before[stage]["stage_id"]  # same stage, new time
        assert after[stage]["scheduled_at"] - before[stage]["scheduled_at"] == timedelta(days=19)
        assert after[stage]["state"] == "scheduled"
    [event] = await h.outbox_events(pool, RESCHEDULED, invoice_id)  # checked against its contract
    data = event["data"]
    assert data["reason"] == "due_date_changed" and data["cause_event_id"] == moved["id"]
    assert data["policy_id"] == "pol_default"
    assert [(s["stage"], s["previous_scheduled_at"], s["scheduled_at"], s["state"]) for s in data["stages"]] == [
        (stage, z(before[stage]["scheduled_at"]), z(after[stage]["scheduled_at"]), "scheduled")
        for stage in ("soft", "firm", "final", "collections")
    ]
    invoice = await pool.fetchrow("SELECT version, due_date FROM invoices WHERE invoice_id = $1", invoice_id)
    assert invoice["version"] == 2 and invoice["due_date"] == today + timedelta(days=20)


async def test_an_update_that_moves_nothing_emits_nothing_and_an_older_version_changes_nothing(pool, h):
    today = utcnow().date()
    issued = h.invoice_issued(due_date=today + timedelta(days=30), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    planned = await h.timers(pool, invoice_id)

    newer = h.invoice_updated(issued, version=3, due_date=today + timedelta(days=40))
    older = h.invoice_updated(issued, version=2, due_date=today + timedelta(days=50), amount_due="900.00")
    await h.apply(pool, newer)
    await h.apply(pool, older)  # arrives late: ignored
    invoice = await pool.fetchrow(
        "SELECT version, due_date, amount_due, balance FROM invoices WHERE invoice_id = $1", invoice_id
    )
    assert (invoice["version"], invoice["due_date"]) == (3, today + timedelta(days=40))
    assert invoice["amount_due"] == invoice["balance"] == 1250
    assert len(await h.outbox_events(pool, RESCHEDULED, invoice_id)) == 1
    rows = await h.timers(pool, invoice_id)
    assert [r["scheduled_at"] - p["scheduled_at"] for r, p in zip(rows, planned, strict=True)] == [
        timedelta(days=10)
    ] * 5

    # A metadata-only change (same due date, same customer): a new version, no re-plan.
    await h.apply(pool, h.invoice_updated(issued, version=4, previous=newer["data"]))
    assert await pool.fetchval("SELECT version FROM invoices WHERE invoice_id = $1", invoice_id) == 4
    assert len(await h.outbox_events(pool, RESCHEDULED, invoice_id)) == 1


@pytest.mark.parametrize(
    "stop, reason",
    [
        pytest.param(lambda h, issued: h.invoice_voided(issued, version=2), "invoice_voided", id="void"),
        pytest.param(lambda h, issued: h.invoice_written_off(issued, version=2), "invoice_written_off", id="write-off"),
        pytest.param(
            lambda h, issued: h.credit_note_issued(issued, amount="1250.00", balance="0.00", settled=True),
            "invoice_credited",
            id="settling-credit-note",
        ),
        pytest.param(
            lambda h, issued: h.invoice_updated(issued, version=2, amount_due="0.50"),
            "invoice_settled",
            id="amount-corrected-below-paid",
        ),
    ],
)
async def test_a_stop_cancels_the_pending_stages_and_nothing_fires_afterwards_even_when_due(pool, h, stop, reason):
    await use_policy(pool, h.TENANT, NOW_THEN_LATER)
    issued = h.invoice_issued(issued_at=utcnow() - timedelta(seconds=1), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    if reason == "invoice_settled":  # 1000 paid, then the amount is corrected to 0.50: balance below zero
        await h.apply(pool, h.payment_received(invoice_id, balance="250.00", settled=False, amount="1000.00"))
    assert await fire(pool) == 1  # soft was due: sent

    await h.apply(pool, stop(h, issued))
    assert await states(h, pool, invoice_id) == {
        "soft": ("fired", None),
        "firm": ("cancelled", reason),
        "final": ("cancelled", reason),
    }
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert cancelled["data"]["reason"] == reason and [s["stage"] for s in cancelled["data"]["stages"]] == [
        "firm",
        "final",
    ]
    await pool.execute("UPDATE timers SET scheduled_at = now() - interval '1 second' WHERE invoice_id = $1", invoice_id)
    assert await fire(pool) == 0  # due now, and still silent
    assert len(await h.outbox_events(pool, ESCALATED, invoice_id)) == 1


async def test_a_closed_invoice_is_never_replanned_and_its_timers_never_fire(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_LATER)
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1))
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    await h.apply(pool, h.invoice_voided(issued, version=2))
    await h.apply(pool, h.invoice_updated(issued, version=3, due_date=utcnow().date() + timedelta(days=90)))
    await h.apply(pool, h.invoice_written_off(issued, version=4))
    invoice = await pool.fetchrow("SELECT version, status FROM invoices WHERE invoice_id = $1", invoice_id)
    assert (invoice["version"], invoice["status"]) == (2, "void")
    assert {s for s, _ in (await states(h, pool, invoice_id)).values()} == {"cancelled"}
    assert await h.outbox_events(pool, RESCHEDULED, invoice_id) == []
    # Even a timer a bug left scheduled on a closed invoice stays silent (the firing query checks).
    await pool.execute(
        "UPDATE timers SET state = 'scheduled', scheduled_at = now() - interval '1 second' WHERE invoice_id = $1",
        invoice_id,
    )
    assert await fire(pool) == 0


async def test_a_non_settling_credit_note_lowers_the_balance_the_next_reminder_shows(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_LATER)
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    await h.apply(pool, h.credit_note_issued(issued, amount="250.00", balance="1000.00", settled=False))
    assert {s for s, _ in (await states(h, pool, invoice_id)).values()} == {"scheduled"}
    assert await h.outbox_events(pool, CANCELLED, invoice_id) == []
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND stage = 'soft'", invoice_id)
    assert await fire(pool) == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["invoice"]["balance"] == "1000.00"
    assert escalated["data"]["invoice"]["amount_due"] == "1250.00"


async def test_a_credit_note_orders_against_payments_by_acknowledgement(pool, h):
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    t0 = utcnow()
    await h.apply(pool, h.payment_received(invoice_id, balance="750.00", settled=False, acknowledged_at=t0))
    late = h.credit_note_issued(
        issued, amount="100.00", balance="1150.00", settled=False, acknowledged_at=t0 - timedelta(minutes=1)
    )
    await h.apply(pool, late)  # acknowledged before the payment already applied: stale
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice_id) == 750


async def test_an_amount_correction_moves_the_balance_by_the_difference(pool, h):
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    await h.apply(pool, h.payment_received(invoice_id, balance="1000.00", settled=False, amount="250.00"))
    await h.apply(pool, h.invoice_updated(issued, version=2, amount_due="1300.00"))
    invoice = await pool.fetchrow("SELECT amount_due, balance, settled FROM invoices WHERE invoice_id = $1", invoice_id)
    assert (invoice["amount_due"], invoice["balance"], invoice["settled"]) == (1300, 1050, False)
    assert {s for s, _ in (await states(h, pool, invoice_id)).values()} == {"scheduled"}


async def test_a_time_zone_change_replans_the_open_invoices_of_that_customer_only(pool, h):
    due = utcnow().date() + timedelta(days=30)
    mine = h.invoice_issued(due_date=due)
    paid = h.invoice_issued(due_date=due)
    other = h.invoice_issued(due_date=due)
    other["data"]["customer"] = {**other["data"]["customer"], "customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3OTHER"}
    for envelope in (mine, paid, other):
        await h.apply(pool, envelope)
    await h.apply(pool, h.payment_received(paid["subject"], balance="0.00", settled=True))
    before = {e["subject"]: await h.timers(pool, e["subject"]) for e in (mine, paid, other)}

    customer = mine["data"]["customer"]
    moved = h.customer_updated(customer, version=2, timezone="America/New_York", email="ap-new@brandt.example")
    await h.apply(pool, moved)

    rows = await h.timers(pool, mine["subject"])
    # 09:00 Berlin -> 09:00 New York: six hours later, same stage ids.
    assert [r["scheduled_at"] - b["scheduled_at"] for r, b in zip(rows, before[mine["subject"]], strict=True)] == [
        timedelta(hours=6)
    ] * 5
    assert [r["stage_id"] for r in rows] == [b["stage_id"] for b in before[mine["subject"]]]
    [event] = await h.outbox_events(pool, RESCHEDULED, mine["subject"])
    assert event["data"]["reason"] == "timezone_changed" and event["data"]["cause_event_id"] == moved["id"]
    assert len(event["data"]["stages"]) == 5
    for envelope in (paid, other):
        assert await h.timers(pool, envelope["subject"]) == before[envelope["subject"]]
        assert await h.outbox_events(pool, RESCHEDULED, envelope["subject"]) == []

    # The contact data current when the stage fires goes out with it.
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND sequence = 0", mine["subject"])
    assert await fire(pool) == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, mine["subject"])
    assert escalated["data"]["customer"]["email"] == "ap-new@brandt.example"
    assert escalated["data"]["customer"]["timezone"] == "America/New_York"

    # An older version of the customer arriving late changes nothing.
    settled_rows = await h.timers(pool, mine["subject"])
    await h.apply(pool, h.customer_updated(customer, version=1, timezone="Asia/Tokyo"))
    assert await h.timers(pool, mine["subject"]) == settled_rows
    assert len(await h.outbox_events(pool, RESCHEDULED, mine["subject"])) == 1
    snapshot = await pool.fetchval("SELECT customer->>'timezone' FROM invoices WHERE invoice_id = $1", mine["subject"])
    assert snapshot == "America/New_York"


async def test_an_invoice_update_keeps_contact_data_newer_than_the_update(pool, h):
    issued = h.invoice_issued(due_date=utcnow().date() + timedelta(days=30))
    invoice_id = issued["subject"]
    await h.apply(pool, issued)
    update = h.invoice_updated(issued, version=2, amount_due="1300.00")  # made before the customer change
    customer = issued["data"]["customer"]
    await h.apply(pool, h.customer_updated(customer, version=2, email="ap-new@brandt.example"))
    await h.apply(pool, update)
    snapshot = await pool.fetchval("SELECT customer->>'email' FROM invoices WHERE invoice_id = $1", invoice_id)
    assert snapshot == "ap-new@brandt.example"


async def test_another_tenants_changes_are_rejected(pool, h):
    issued = h.invoice_issued(due_date=utcnow().date() + timedelta(days=30))
    await h.apply(pool, issued)
    intruder = {**issued, "data": {**issued["data"], "tenant_id": "ten_other"}, "tenantid": "ten_other"}
    with pytest.raises(Rejected):
        await h.apply(pool, h.invoice_voided(intruder, version=2))
    with pytest.raises(Rejected):
        await h.apply(pool, h.invoice_updated(intruder, version=2, due_date=utcnow().date()))
    await h.apply(pool, h.customer_updated(issued["data"]["customer"], version=2, name="Brandt"))
    with pytest.raises(Rejected):
        await h.apply(pool, h.customer_updated(issued["data"]["customer"], tenant_id="ten_other", version=3))
    assert {r["state"] for r in await h.timers(pool, issued["subject"])} == {"scheduled"}
