"""The dunning timeline and the balance converge whatever order the scheduler's, notifier's and
reconciliation's events arrive in, and redelivery changes nothing."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from dunning.handler_table import Rejected
from dunning.ids import new_id
from dunning_tools.testing.events import planned_stage

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)


def story(kit, invoice_id: str) -> list[dict]:
    """Plan of three stages; the first fires and is sent (after a transient failure), a partial and a
    settling payment arrive, and the scheduler cancels what is still pending."""
    t = kit.TENANT
    stg = [new_id("stg") for _ in range(3)]
    plan = [
        planned_stage(stg[0], "soft", 0, T0),
        planned_stage(stg[1], "firm", 1, T0 + timedelta(days=7)),
        planned_stage(
            stg[2],
            "final",
            2,
            T0 + timedelta(days=14),
            channel="sms",
            state="skipped",
            reason="customer has no phone number",
        ),
    ]
    first = {k: plan[0][k] for k in ("stage_id", "stage", "channel")}

    def payment(amount: str, **data) -> dict:
        """A payment of `amount`, applied in full to the invoice."""
        return kit.event_like(
            "PaymentReceived",
            "partial-stripe-payment.json",
            tenant_id=t,
            invoice_id=invoice_id,
            payment_id=new_id("pay"),
            amount=amount,
            amount_applied=amount,
            **data,
        )

    return [
        kit.event_like(
            "DunningPlanned",
            "eur-five-stages.json",
            tenant_id=t,
            invoice_id=invoice_id,
            planned_at=T0 - timedelta(days=14),
            stages=plan,
        ),
        kit.event_like(
            "StageEscalated",
            "eur-soft-after-partial-payment.json",
            tenant_id=t,
            invoice_id=invoice_id,
            sequence=0,
            scheduled_at=T0,
            fired_at=T0 + timedelta(seconds=1),
            **first,
        ),
        kit.event_like(
            "ReminderFailed",
            "transient-webhook-timeout.json",
            tenant_id=t,
            invoice_id=invoice_id,
            channel="email",
            stage_id=stg[0],
            stage="soft",
            failed_at=T0 + timedelta(seconds=2),
            delivery_id=new_id("dlv"),
        ),
        kit.event_like(
            "ReminderSent",
            "eur-soft-email.json",
            tenant_id=t,
            invoice_id=invoice_id,
            sent_at=T0 + timedelta(seconds=30),
            delivery_id=new_id("dlv"),
            **first,
        ),
        payment("500.00", balance_remaining="750.00", settled=False, acknowledged_at=T0 + timedelta(days=2)),
        payment(
            "750.00",
            balance_remaining="0.00",
            settled=True,
            acknowledged_at=T0 + timedelta(days=3),
            source_reference="evt_settling",
        ),
        kit.event_like(
            "StagesCancelled",
            "jpy-invoice-settled.json",
            tenant_id=t,
            invoice_id=invoice_id,
            reason="invoice_settled",
            cancelled_at=T0 + timedelta(days=3, seconds=1),
            stages=[{k: plan[1][k] for k in ("stage_id", "stage", "sequence", "channel", "scheduled_at")}],
        ),
    ]


def normalised(invoice: dict) -> dict:
    """The invoice with ids replaced by positions, to compare invoices told the same story."""
    return {
        "status": invoice["status"],
        "balance": invoice["balance"],
        "payments": [(p["amount_applied"], p["balance_remaining"], p["settled"]) for p in invoice["payments"]],
        "timeline": [{k: v for k, v in s.items() if k != "stage_id"} for s in invoice["timeline"]],
    }


async def test_timeline_and_balance_converge_in_any_order(client, pool, kit):
    rng = random.Random(20261116)
    views = []
    for attempt in range(4):
        invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
        events = story(kit, invoice["id"])
        if attempt:
            rng.shuffle(events)
        for event in events:
            assert await kit.apply(pool, event)
        for event in events[:3]:  # redelivery is dropped by the inbox...
            assert not await kit.apply(pool, event)
        views.append(normalised((await client.get(f"/v1/invoices/{invoice['id']}")).json()))

    assert all(v == views[0] for v in views[1:])
    view = views[0]
    assert view["status"] == "paid" and view["balance"] == "0.00"
    assert view["payments"] == [("500.00", "750.00", False), ("750.00", "0.00", True)]
    soft, firm, final = view["timeline"]
    assert (soft["stage"], soft["sequence"], soft["state"]) == ("soft", 0, "sent")
    assert [h["state"] for h in soft["history"]] == ["scheduled", "escalated", "failed", "sent"]
    assert soft["changed_at"] == "2026-11-16T08:00:30Z"
    assert (firm["state"], firm["reason"]) == ("cancelled", "invoice_settled")
    assert [h["state"] for h in firm["history"]] == ["scheduled", "cancelled"]
    assert (final["state"], final["reason"], final["channel"]) == ("skipped", "customer has no phone number", "sms")
    assert final["scheduled_at"] == "2026-11-30T08:00:00Z"


async def test_a_reminder_before_its_plan_still_ends_up_sent_with_the_planned_attributes(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    planned, escalated, failed, sent, *_ = story(kit, invoice["id"])
    await kit.apply(pool, sent)
    early = (await client.get(f"/v1/invoices/{invoice['id']}")).json()["timeline"]
    assert [(s["stage"], s["state"], s["sequence"], s["scheduled_at"]) for s in early] == [("soft", "sent", None, None)]
    await kit.apply(pool, planned)
    await kit.apply(pool, escalated)
    timeline = (await client.get(f"/v1/invoices/{invoice['id']}")).json()["timeline"]
    assert [(s["stage"], s["state"], s["sequence"]) for s in timeline] == [
        ("soft", "sent", 0),
        ("firm", "scheduled", 1),
        ("final", "skipped", 2),
    ]


async def test_an_older_payment_arriving_late_never_overwrites_a_newer_balance(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    *_, partial, settling, _cancel = story(kit, invoice["id"])
    await kit.apply(pool, settling)
    await kit.apply(pool, partial)
    got = (await client.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (got["status"], got["balance"], len(got["payments"])) == ("paid", "0.00", 2)
    listed = (await client.get("/v1/invoices", params={"status": "paid"})).json()["data"]
    assert [i["id"] for i in listed] == [invoice["id"]]


async def test_the_same_payment_under_another_event_id_is_applied_once(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    partial = story(kit, invoice["id"])[4]
    resent = {**partial, "id": "0193a4f2-6d1b-7e09-b3c5-7a8e9f0d1c99"}
    await kit.apply(pool, partial)
    await kit.apply(pool, resent)
    got = (await client.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (got["balance"], len(got["payments"])) == ("750.00", 1)


@pytest.mark.parametrize(
    "mutate, why",
    [
        pytest.param(lambda e, kit: e, "unknown invoice", id="unknown-invoice"),
        pytest.param(
            lambda e, kit: {**e, "tenantid": kit.OTHER_TENANT, "data": {**e["data"], "tenant_id": kit.OTHER_TENANT}},
            "tenant",
            id="other-tenant",
        ),
        pytest.param(lambda e, kit: {**e, "data": {**e["data"], "currency": "USD"}}, "USD", id="other-currency"),
    ],
)
async def test_events_that_can_never_apply_are_rejected(client, pool, kit, mutate, why):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    target = new_id("inv") if why == "unknown invoice" else invoice["id"]
    payment = story(kit, target)[4]
    with pytest.raises(Rejected, match=why):
        await kit.apply(pool, mutate(payment, kit))


async def test_a_stage_of_another_invoice_is_rejected(client, pool, kit):
    a = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    b = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    planned = story(kit, a["id"])[0]
    await kit.apply(pool, planned)
    hijack = kit.event_like(
        "DunningPlanned",
        "eur-five-stages.json",
        tenant_id=kit.TENANT,
        invoice_id=b["id"],
        stages=planned["data"]["stages"],
        planned_at=T0,
    )
    with pytest.raises(Rejected, match="another invoice"):
        await kit.apply(pool, hijack)
    assert (await client.get(f"/v1/invoices/{b['id']}")).json()["timeline"] == []


# --- re-planning and credit notes ------------------------------------------------------------------


def _replan(kit, invoice_id: str, planned: dict, at: datetime) -> tuple[dict, str]:
    """A due-date move: the first planned stage moves by a week, the second is dropped, a new one is added."""
    first, second = planned["data"]["stages"][:2]
    added = new_id("stg")
    rescheduled = kit.event_like(
        "StagesRescheduled",
        "eur-due-date-moved.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice_id,
        rescheduled_at=at,
        stages=[
            {
                **{k: first[k] for k in ("stage_id", "stage", "sequence", "channel")},
                "previous_scheduled_at": first["scheduled_at"],
                "scheduled_at": T0 + timedelta(days=7),
                "state": "scheduled",
            },
            {
                **{k: second[k] for k in ("stage_id", "stage", "sequence", "channel")},
                "previous_scheduled_at": second["scheduled_at"],
                "scheduled_at": None,
                "state": "cancelled",
            },
            {
                "stage_id": added,
                "stage": "collections",
                "sequence": 5,
                "channel": "email",
                "previous_scheduled_at": None,
                "scheduled_at": T0 + timedelta(days=21),
                "state": "scheduled",
            },
        ],
    )
    return rescheduled, added


async def test_a_replan_moves_adds_and_drops_stages_in_the_timeline_in_any_order(client, pool, kit):
    views = []
    for reverse in (False, True):
        invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
        planned = story(kit, invoice["id"])[0]
        rescheduled, added = _replan(kit, invoice["id"], planned, T0 - timedelta(days=1))
        for event in [rescheduled, planned] if reverse else [planned, rescheduled]:
            assert await kit.apply(pool, event)
        assert not await kit.apply(pool, rescheduled)
        views.append(normalised((await client.get(f"/v1/invoices/{invoice['id']}")).json()))
    assert views[0] == views[1]
    by_stage = {s["stage"]: s for s in views[0]["timeline"]}
    soft, firm, added_stage = by_stage["soft"], by_stage["firm"], by_stage["collections"]
    assert (soft["state"], soft["scheduled_at"], soft["reason"]) == (
        "scheduled",
        "2026-11-23T08:00:00Z",
        "due_date_changed",
    )
    moved = soft["history"][-1]
    assert (moved["previous_scheduled_at"], moved["scheduled_at"]) == ("2026-11-16T08:00:00Z", "2026-11-23T08:00:00Z")
    assert soft["history"][0]["previous_scheduled_at"] is None  # the plan itself moved nothing
    assert (firm["state"], firm["reason"], firm["scheduled_at"]) == (
        "cancelled",
        "due_date_changed",
        "2026-11-23T08:00:00Z",
    )
    assert (firm["history"][-1]["previous_scheduled_at"], firm["history"][-1]["scheduled_at"]) == (
        "2026-11-23T08:00:00Z",
        None,
    )
    assert (added_stage["state"], added_stage["scheduled_at"], added_stage["sequence"]) == (
        "scheduled",
        "2026-12-07T08:00:00Z",
        5,
    )
    assert added_stage["history"][0]["previous_scheduled_at"] is None


async def test_a_replan_never_moves_back_a_stage_already_sent(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    planned, escalated, _failed, sent, *_ = story(kit, invoice["id"])
    for event in (planned, escalated, sent):
        await kit.apply(pool, event)
    rescheduled, _ = _replan(kit, invoice["id"], planned, T0 + timedelta(days=1))
    await kit.apply(pool, rescheduled)
    soft = (await client.get(f"/v1/invoices/{invoice['id']}")).json()["timeline"][0]
    assert soft["state"] == "sent" and soft["history"][-1]["scheduled_at"] == "2026-11-23T08:00:00Z"


async def test_a_settling_credit_note_pays_the_invoice_and_shows_with_the_cancellation(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    planned, *_, partial, _settling, _cancelled = story(kit, invoice["id"])
    credit = kit.event_like(
        "CreditNoteIssued",
        "eur-partial-credit.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        credit_note_id=new_id("cn"),
        amount="750.00",
        amount_applied="750.00",
        balance_remaining="0.00",
        settled=True,
        acknowledged_at=T0 + timedelta(days=3),
    )
    cancelled = kit.event_like(
        "StagesCancelled",
        "eur-written-off.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        reason="invoice_credited",
        cancelled_at=T0 + timedelta(days=3, seconds=1),
        stages=[
            {k: s[k] for k in ("stage_id", "stage", "sequence", "channel", "scheduled_at")}
            for s in planned["data"]["stages"][:2]
        ],
    )
    for event in (credit, planned, cancelled, partial):  # the credit note before the payment acknowledged first
        assert await kit.apply(pool, event)
    await kit.apply(pool, {**credit, "id": "0193a4f2-6d1b-7e09-b3c5-7a8e9f0d1c98"})  # the same note, another event
    got = (await client.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (got["status"], got["balance"], got["version"]) == ("paid", "0.00", 1)
    [note] = got["credit_notes"]
    assert (note["amount_applied"], note["reference"], note["settled"]) == ("750.00", "CN-2026-0031", True)
    # by time: both were acknowledged (in this story) before the invoice was imported
    assert [(e["kind"], e["amount"]) for e in got["history"]] == [
        ("payment", "500.00"),
        ("credit_note", "750.00"),
        ("created", None),
    ]
    assert [(s["state"], s["reason"]) for s in got["timeline"][:2]] == [("cancelled", "invoice_credited")] * 2
    listed = (await client.get("/v1/invoices", params={"status": "paid"})).json()["data"]
    assert [i["id"] for i in listed] == [invoice["id"]]


async def test_a_credit_note_in_another_currency_is_rejected(client, pool, kit):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    credit = kit.event_like(
        "CreditNoteIssued", "jpy-settling-credit.json", tenant_id=kit.TENANT, invoice_id=invoice["id"]
    )
    with pytest.raises(Rejected, match="JPY"):
        await kit.apply(pool, credit)
