"""Planning, firing and cancelling on a real PostgreSQL, through the handlers and the firing loop."""

from datetime import UTC, date, datetime, timedelta

import pytest

from dunning.clock import utcnow
from dunning.handler_table import Rejected
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
PLANNED, ESCALATED, CANCELLED = ("dunning.DunningPlanned.v1", "dunning.StageEscalated.v1", "dunning.StagesCancelled.v1")


async def use_policy(pool, tenant: str, document: dict) -> None:
    async with pool.acquire() as conn:
        await save_policy(conn, tenant, parse_policy(document))


async def test_invoice_issued_plans_the_default_stages_and_emits_dunning_planned(pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20), issued_at=datetime(2031, 3, 1, 10, tzinfo=UTC))
    invoice_id = event["subject"]
    await h.apply(pool, event)

    rows = await h.timers(pool, invoice_id)
    assert [(r["stage"], r["sequence"], r["channel"], r["template"], r["state"]) for r in rows] == [
        ("pre_due", 0, "email", "pre_due", "scheduled"),
        ("soft", 1, "email", "soft", "scheduled"),
        ("firm", 2, "email", "firm", "scheduled"),
        ("final", 3, "email", "final", "scheduled"),
        ("collections", 4, "email", "collections", "scheduled"),
    ]
    # 09:00 Berlin: CET (UTC+1) before 30 March 2031, CEST (UTC+2) after.
    assert rows[0]["scheduled_at"] == datetime(2031, 3, 17, 8, tzinfo=UTC)
    assert rows[2]["scheduled_at"] == datetime(2031, 3, 27, 8, tzinfo=UTC)
    assert rows[3]["scheduled_at"] == datetime(2031, 4, 3, 7, tzinfo=UTC)

    [planned] = await h.outbox_events(pool, PLANNED, invoice_id)  # checked against its contract
    assert planned["data"]["policy_id"] == "pol_default"
    assert [s["stage_id"] for s in planned["data"]["stages"]] == [r["stage_id"] for r in rows]
    assert {s["state"] for s in planned["data"]["stages"]} == {"scheduled"}


async def test_a_redelivered_or_repeated_invoice_issued_plans_nothing_twice(pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    invoice_id = event["subject"]
    assert await h.apply(pool, event)
    assert not await h.apply(pool, event)  # same event id: the inbox drops it
    again = h.invoice_issued(invoice_id=invoice_id, due_date=date(2031, 4, 20))  # a new id, same invoice
    assert await h.apply(pool, again)
    assert len(await h.timers(pool, invoice_id)) == 5
    assert len(await h.outbox_events(pool, PLANNED, invoice_id)) == 1


async def test_second_offsets_fire_stage_escalated_with_the_invoice_snapshot(pool, h):
    await use_policy(
        pool,
        h.TENANT,
        {
            "anchor": "issued_at",
            "stages": [
                {"name": "soft", "offset": "PT1S"},
                {"name": "firm", "offset": "PT2S", "channels": ["email", "sms"]},
                {"name": "final", "offset": "P1D", "template": "final.strict"},
            ],
        },
    )
    event = h.invoice_issued(issued_at=utcnow(), amount_due="980.50")
    invoice_id = event["subject"]
    await h.apply(pool, event)
    schema = await pool.fetchval("SELECT current_schema()")
    loop = FiringLoop(pool, schema, batch_size=100, gated=False)

    async def fired():
        await loop.fire_once()
        return len(await h.outbox_events(pool, ESCALATED, invoice_id)) >= 3

    await async_wait_until(fired, timeout=15, what="three StageEscalated")
    escalated = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert sorted((e["data"]["stage"], e["data"]["channel"]) for e in escalated) == [
        ("firm", "email"),
        ("firm", "sms"),
        ("soft", "email"),
    ]
    soft = next(e["data"] for e in escalated if e["data"]["stage"] == "soft")
    assert soft["invoice"]["amount_due"] == soft["invoice"]["balance"] == "980.50"
    assert soft["customer"]["timezone"] == "Europe/Berlin" and soft["template"] == "soft"
    states = {(r["stage"], r["channel"]): r["state"] for r in await h.timers(pool, invoice_id)}
    assert states == {
        ("soft", "email"): "fired",
        ("firm", "email"): "fired",
        ("firm", "sms"): "fired",
        ("final", "email"): "scheduled",
    }


async def test_settling_payment_cancels_pending_stages_and_leaves_fired_ones(pool, h):
    await use_policy(
        pool,
        h.TENANT,
        {
            "anchor": "issued_at",
            "stages": [
                {"name": "soft", "offset": "PT0S"},
                {"name": "firm", "offset": "P1D"},
                {"name": "final", "offset": "P2D"},
            ],
        },
    )
    event = h.invoice_issued(issued_at=utcnow() - timedelta(seconds=1))
    invoice_id = event["subject"]
    await h.apply(pool, event)
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 1

    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True))
    states = {r["stage"]: (r["state"], r["reason"]) for r in await h.timers(pool, invoice_id)}
    assert states == {
        "soft": ("fired", None),
        "firm": ("cancelled", "invoice_settled"),
        "final": ("cancelled", "invoice_settled"),
    }
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert [s["stage"] for s in cancelled["data"]["stages"]] == ["firm", "final"]
    assert cancelled["data"]["reason"] == "invoice_settled"

    # A second settling payment has nothing left to cancel: no empty StagesCancelled.
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True))
    assert len(await h.outbox_events(pool, CANCELLED, invoice_id)) == 1


async def test_partial_payment_shows_in_later_reminders_and_stale_payments_never_unsettle(pool, h):
    await use_policy(
        pool,
        h.TENANT,
        {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S"}, {"name": "firm", "offset": "P1D"}]},
    )
    event = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00")
    invoice_id = event["subject"]
    await h.apply(pool, event)
    t0 = utcnow()
    await h.apply(pool, h.payment_received(invoice_id, balance="750.00", settled=False, acknowledged_at=t0))
    await h.apply(
        pool,
        h.payment_received(invoice_id, balance="1000.00", settled=False, acknowledged_at=t0 - timedelta(minutes=5)),
    )  # stale
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND stage = 'soft'", invoice_id)
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["invoice"]["balance"] == "750.00"

    await h.apply(
        pool, h.payment_received(invoice_id, balance="0.00", settled=True, acknowledged_at=t0 + timedelta(seconds=1))
    )
    await h.apply(
        pool, h.payment_received(invoice_id, balance="750.00", settled=False, acknowledged_at=t0)
    )  # late copy
    invoice = await pool.fetchrow("SELECT settled, balance FROM invoices WHERE invoice_id = $1", invoice_id)
    assert invoice["settled"] and invoice["balance"] == 0


async def test_payment_before_invoice_plans_everything_cancelled_and_fires_nothing(pool, h):
    event = h.invoice_issued(issued_at=utcnow() - timedelta(days=40), due_date=utcnow().date() - timedelta(days=35))
    invoice_id = event["subject"]
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True))
    await h.apply(pool, event)

    rows = await h.timers(pool, invoice_id)
    assert len(rows) == 5
    assert {(r["state"], r["reason"]) for r in rows} == {("cancelled", "invoice_settled")}
    [planned] = await h.outbox_events(pool, PLANNED, invoice_id)  # checked against its contract
    assert {s["state"] for s in planned["data"]["stages"]} == {"cancelled"}
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 0
    assert await h.outbox_events(pool, ESCALATED, invoice_id) == []
    assert await h.outbox_events(pool, CANCELLED, invoice_id) == []


async def test_an_old_invoice_imported_late_fires_one_reminder_not_four(pool, h):
    event = h.invoice_issued(issued_at=utcnow() - timedelta(days=30), due_date=utcnow().date() - timedelta(days=16))
    invoice_id = event["subject"]
    await h.apply(pool, event)
    states = [(r["stage"], r["state"]) for r in await h.timers(pool, invoice_id)]
    assert states == [
        ("pre_due", "skipped"),
        ("soft", "skipped"),
        ("firm", "skipped"),
        ("final", "scheduled"),
        ("collections", "scheduled"),
    ]
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["stage"] == "final"


async def test_another_tenants_payment_for_an_invoice_is_rejected(pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, event)
    with pytest.raises(Rejected):
        await h.apply(pool, h.payment_received(event["subject"], balance="0.00", settled=True, tenant_id="ten_other"))
    assert {r["state"] for r in await h.timers(pool, event["subject"])} == {"scheduled"}


async def test_a_partial_payment_before_its_invoice_sets_the_balance_reminders_show(pool, h):
    event = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00")
    invoice_id = event["subject"]
    await h.apply(pool, h.payment_received(invoice_id, balance="400.00", settled=False))
    await h.apply(pool, event)
    assert {r["state"] for r in await h.timers(pool, invoice_id)} == {"scheduled"}
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND sequence = 0", invoice_id)
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["invoice"]["amount_due"] == "1250.00"
    assert escalated["data"]["invoice"]["balance"] == "400.00"
