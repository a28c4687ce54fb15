"""The timeline of every stop on a real PostgreSQL: a hold, the scheduler's pause (its stages read
paused), the notifier's dropped delivery (its stage reads cancelled), the resume (the stages moved,
and why), a payment plan's agreement and end — all in the invoice's history in the order they happened."""

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from dunning.clock import isoformat, utcnow
from dunning.contracts import (
    DunningPaused,
    DunningPlanned,
    DunningResumed,
    PaymentPlanCompleted,
    PlannedStage,
    ReminderCancelled,
    RescheduledStage,
    StageRef,
)
from dunning.events import envelope
from dunning.handler_table import Rejected

pytestmark = pytest.mark.integration

S1, S2 = "stg_01JCQ4ZA1B2C3D4E5F6G7H8J9P", "stg_01JCQ4ZA1B2C3D4E5F6G7H8J9Q"


async def invoice(client, kit) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload())
    assert r.status_code == 201, r.text
    return r.json()


async def test_pauses_resumes_and_dropped_deliveries_read_back_in_order(client, pool, kit):
    inv = await invoice(client, kit)
    iid, t0 = inv["id"], utcnow()
    first, second = t0 + timedelta(days=3), t0 + timedelta(days=10)
    stages = (
        PlannedStage(S1, "friendly", 1, "email", first, "scheduled", None),
        PlannedStage(S2, "firm", 2, "email", second, "scheduled", None),
    )
    assert await kit.apply(pool, envelope(DunningPlanned(iid, kit.TENANT, "pol_default", 1, t0, stages)))

    r = await client.post("/v1/holds", json={"invoice_id": iid, "reason": "KAM", "placed_by": "maria"})
    hold = r.json()
    paused_at = utcnow()
    refs = tuple(StageRef(s.stage_id, s.stage, s.sequence, s.channel, s.scheduled_at) for s in stages)
    paused = DunningPaused(
        iid, kit.TENANT, "hold", hold["hold_id"], "3f1c1a52-5d0b-4a43-9d0e-0d1f0e1b2c3d", paused_at, refs
    )
    assert await kit.apply(pool, envelope(paused))
    body = (await client.get(f"/v1/invoices/{iid}")).json()
    assert [s["state"] for s in body["timeline"]] == ["paused", "paused"]

    dropped_at = utcnow()
    cancelled = ReminderCancelled(
        "dlv_01JCQ4ZA1B2C3D4E5F6G7H8J9Z",
        S1,
        iid,
        kit.TENANT,
        "friendly",
        "email",
        "hold",
        paused.cause_event_id,
        2,
        dropped_at,
    )
    assert await kit.apply(pool, envelope(cancelled))

    await client.delete(f"/v1/holds/{hold['hold_id']}")
    resumed_at = utcnow()
    moved = (RescheduledStage(S2, "firm", 2, "email", second, resumed_at, "scheduled"),)
    resumed = DunningResumed(iid, kit.TENANT, "hold", hold["hold_id"], "hold_released", "spaced", resumed_at, moved)
    assert await kit.apply(pool, envelope(resumed))

    body = (await client.get(f"/v1/invoices/{iid}")).json()
    by_id = {s["stage_id"]: s for s in body["timeline"]}
    assert by_id[S1]["state"] == "cancelled"
    assert by_id[S1]["reason"] == "delivery dropped by a stop (hold) after 2 attempts"
    assert (by_id[S2]["state"], by_id[S2]["scheduled_at"]) == ("scheduled", isoformat(resumed_at))
    assert by_id[S2]["history"][-1]["previous_scheduled_at"] == isoformat(second)

    history = body["history"]
    assert [e["kind"] for e in history] == [
        "created",
        "hold_placed",
        "paused",
        "reminder_cancelled",
        "hold_released",
        "resumed",
    ]
    times = [datetime.fromisoformat(e["at"]) for e in history]
    assert times == sorted(times)
    pause, drop, resume = history[2], history[3], history[5]
    assert (pause["reference"], pause["data"]["cause"]) == (hold["hold_id"], "hold")
    assert [s["stage_id"] for s in pause["data"]["stages"]] == [S1, S2]
    assert (drop["reference"], drop["reason"], drop["data"]["attempts"]) == (S1, "hold", 2)
    assert drop["data"]["delivery_id"] == "dlv_01JCQ4ZA1B2C3D4E5F6G7H8J9Z"
    assert (resume["reason"], resume["data"]["resume_mode"]) == ("hold_released", "spaced")
    assert resume["data"]["stages"] == [
        {
            "stage_id": S2,
            "stage": "firm",
            "channel": "email",
            "previous_scheduled_at": isoformat(second),
            "scheduled_at": isoformat(resumed_at),
            "state": "scheduled",
        }
    ]


async def test_a_pause_for_another_tenants_invoice_is_rejected(client, pool, kit):
    inv = await invoice(client, kit)
    foreign = DunningPaused(
        inv["id"],
        kit.OTHER_TENANT,
        "hold",
        "hld_01JDR5T7V9X1Z3B5D7F9H1K3M5",
        "3f1c1a52-5d0b-4a43-9d0e-0d1f0e1b2c3d",
        utcnow(),
        (),
    )
    with pytest.raises(Rejected):
        await kit.apply(pool, envelope(foreign))
    assert await pool.fetchval("SELECT count(*) FROM stop_events") == 0


async def test_a_payment_plan_reads_back_in_the_history(client, pool, kit):
    inv = await invoice(client, kit)
    due = date.today() + timedelta(days=10)
    r = await client.post(
        f"/v1/invoices/{inv['id']}/payment-plans",
        json={"instalments": [{"due_date": due.isoformat(), "amount": "1250.00"}]},
    )
    assert r.status_code == 201, r.text
    plan = r.json()
    done = utcnow()
    completed = PaymentPlanCompleted(
        plan["plan_id"], kit.TENANT, inv["customer"]["id"], (inv["id"],), "EUR", Decimal("1250.00"), done
    )
    assert await kit.apply(pool, envelope(completed))
    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    assert [e["kind"] for e in history] == ["created", "payment_plan_agreed", "payment_plan_completed"]
    agreed = history[1]
    assert (agreed["reference"], agreed["amount"], agreed["at"]) == (
        plan["plan_id"],
        "1250.00",
        plan["acknowledged_at"],
    )
    assert agreed["data"] == {"instalments": 1, "invoice_ids": [inv["id"]]}
    assert history[2]["at"] == isoformat(done)
