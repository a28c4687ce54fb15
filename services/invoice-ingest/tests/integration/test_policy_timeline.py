"""The policies at work on an invoice's timeline (issue 10), on a real PostgreSQL, the events applied
through the handler table as the consumer does: the segment rule that chose the policy and a stage the
calendar moved, a deferral, a consolidated notice (keyed by customer: on every invoice it names) and
what was sent or left out, late charges and their waiver (the invoice's `charges`; `amount_due` and
`balance` unchanged), and stages no longer chased below the minimum balance."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from dunning.clock import isoformat, utcnow
from dunning.contracts import (
    Customer,
    DunningPlanned,
    InterestPeriod,
    LateChargesAssessed,
    LateChargesWaived,
    NoticeComposed,
    NoticeItem,
    NoticeSent,
    PlannedStage,
    ReminderSent,
    RescheduledStage,
    StageDeferred,
    StageInvoice,
    StagesRescheduled,
)
from dunning.events import envelope
from dunning.handler_table import Rejected

pytestmark = pytest.mark.integration

S1, S2 = "stg_01KQ4ZA1B2C3D4E5F6G7H8J9P", "stg_01KQ4ZA1B2C3D4E5F6G7H8J9Q"
NOTICE = "ntc_01KQ4ZB1B2C3D4E5F6G7H8J9R"
MOVED = "2026-12-25 is Christmas Day (DE): moved to the next working day"
WHY = "average 17.5 days late over the last 4 invoices >= 15"


async def invoice(client, kit, **changes) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(**changes))
    assert r.status_code == 201, r.text
    return r.json()


def history(body: dict, *kinds: str) -> list[dict]:
    return [e for e in body["history"] if e["kind"] in kinds]


def stage_invoice(inv: dict) -> StageInvoice:
    return StageInvoice(
        inv["external_id"],
        inv["number"],
        inv["currency"],
        Decimal(inv["amount_due"]),
        Decimal(inv["balance"]),
        date.fromisoformat(inv["issue_date"]),
        date.fromisoformat(inv["due_date"]),
        inv["payment_url"],
    )


def customer_of(inv: dict) -> Customer:
    c = inv["customer"]
    return Customer(c["id"], c["external_id"], c["name"], c["email"], c["locale"], c["timezone"])


async def test_segment_moves_deferral_notice_and_charges_read_back_on_the_timeline(client, pool, kit):
    a, b = await invoice(client, kit), await invoice(client, kit)
    t0 = utcnow()
    first, second = t0 + timedelta(days=3), t0 + timedelta(days=10)
    stages = (
        PlannedStage(S1, "soft", 1, "email", first, "scheduled", None, MOVED),
        PlannedStage(S2, "firm", 2, "email", second, "scheduled", None),
    )
    segment = {"rule": "late_payers", "reason": WHY}
    planned = DunningPlanned(a["id"], kit.TENANT, "pol_firm", 3, t0, stages, segment)
    assert await kit.apply(pool, envelope(planned))

    deferred_to = first + timedelta(hours=20)
    deferred = StageDeferred(
        a["id"],
        kit.TENANT,
        a["customer"]["id"],
        "contact_cap",
        "at most 2 reminders per P7D: 2 sent since 2026-12-01T09:00:00Z",
        t0 + timedelta(seconds=1),
        (RescheduledStage(S1, "soft", 1, "email", first, deferred_to, "scheduled"),),
    )
    assert await kit.apply(pool, envelope(deferred))

    composed_at = t0 + timedelta(seconds=2)
    items = (
        NoticeItem(a["id"], S1, "soft", 1, "soft", stage_invoice(a)),
        NoticeItem(b["id"], None, None, None, None, stage_invoice(b)),
    )
    notice = NoticeComposed(NOTICE, kit.TENANT, a["customer"]["id"], "email", composed_at, customer_of(a), items)
    notice_env = envelope(notice)
    assert await kit.apply(pool, notice_env)
    assert not await kit.apply(pool, notice_env)  # redelivered: nothing twice

    sent_at = t0 + timedelta(seconds=3)
    sent = NoticeSent(
        NOTICE,
        kit.TENANT,
        a["customer"]["id"],
        "email",
        "ap@brandt-soehne.de",
        "msg-1",
        (a["id"],),
        (b["id"],),
        sent_at,
    )
    assert await kit.apply(pool, envelope(sent))
    reminder = ReminderSent(
        "dlv_01KQ4ZC1B2C3D4E5F6G7H8J9S",
        S1,
        a["id"],
        kit.TENANT,
        "soft",
        "email",
        "ap@brandt-soehne.de",
        "msg-1",
        sent_at,
        NOTICE,
    )
    assert await kit.apply(pool, envelope(reminder))

    period = InterestPeriod(
        date(2026, 2, 1), date(2026, 3, 2), 30, Decimal("1000.00"), Decimal("10.15"), Decimal("8.342465753424657")
    )
    assessed = LateChargesAssessed(
        a["id"],
        kit.TENANT,
        S1,
        "soft",
        "EUR",
        Decimal("40.00"),
        Decimal("8.34"),
        date(2026, 2, 1),
        date(2026, 3, 2),
        "ACT/365F",
        (period,),
        Decimal("40.00"),
        Decimal("8.34"),
        t0 + timedelta(seconds=4),
    )
    later = assessed._replace(
        stage_id=S2,
        stage="firm",
        late_fee=Decimal("0"),
        interest=Decimal("1.00"),
        total_interest=Decimal("9.34"),
        assessed_at=t0 + timedelta(seconds=5),
    )
    assert await kit.apply(pool, envelope(later))  # out of order: the later totals stand
    assert await kit.apply(pool, envelope(assessed))

    body = (await client.get(f"/v1/invoices/{a['id']}")).json()
    assert body["amount_due"] == body["balance"] == a["amount_due"]  # charges never change them
    assert body["charges"] == {
        "currency": "EUR",
        "late_fees": "40.00",
        "interest": "9.34",
        "total_claimed": "49.34",
        "waived": False,
        "waived_late_fees": None,
        "waived_interest": None,
        "waived_at": None,
        "waived_by": None,
        "reason": None,
        "last_assessed_at": isoformat(later.assessed_at),
    }
    (chosen,) = history(body, "segment_chosen")
    assert chosen["reference"] == "late_payers" and WHY in chosen["reason"]
    assert chosen["data"] == {"rule": "late_payers", "reason": WHY, "policy_id": "pol_firm", "policy_version": 3}
    (held,) = history(body, "deferred")
    assert held["reference"] == "contact_cap" and held["reason"].startswith("at most 2 reminders")
    assert held["data"]["stages"] == [
        {"stage_id": S1, "stage": "soft", "channel": "email", "from": isoformat(first), "to": isoformat(deferred_to)}
    ]
    (listed,) = history(body, "notice_composed")
    assert listed["reference"] == NOTICE and listed["data"]["listed_as"] == "stage"
    assert listed["reason"] == f"in notice {NOTICE} (email) with 1 other invoice: its stage soft"
    (went,) = history(body, "notice_sent")
    assert went["reason"] == f"sent to ap@brandt-soehne.de in notice {NOTICE}"
    charged = history(body, "charges_assessed")
    assert [(e["reference"], e["amount"]) for e in charged] == [(S1, "48.34"), (S2, "1.00")]
    assert charged[0]["data"]["periods"][0]["days"] == 30 and charged[0]["data"]["day_count"] == "ACT/365F"

    s1 = next(s for s in body["timeline"] if s["stage_id"] == S1)
    assert s1["state"] == "sent" and s1["reason"] == f"sent to ap@brandt-soehne.de in notice {NOTICE}"
    reasons = [h["reason"] for h in s1["history"]]
    assert f"moved: {MOVED}" in reasons
    assert any(r and r.startswith("deferred (contact_cap): at most 2") for r in reasons)
    assert s1["scheduled_at"] == isoformat(deferred_to)

    other = (await client.get(f"/v1/invoices/{b['id']}")).json()
    (listed_b,) = history(other, "notice_composed")
    assert listed_b["reason"] == f"in notice {NOTICE} (email) with 1 other invoice: listed as overdue"
    assert listed_b["data"]["invoice_ids"] == [a["id"], b["id"]]
    (left_out,) = history(other, "notice_left_out")
    assert left_out["reference"] == NOTICE and "left out" in left_out["reason"]
    assert history(other, "notice_sent") == [] and other["charges"] is None

    waived = LateChargesWaived(
        a["id"], kit.TENANT, "EUR", Decimal("40.00"), Decimal("9.34"), "goodwill", "maria", t0 + timedelta(seconds=6)
    )
    assert await kit.apply(pool, envelope(waived))
    body = (await client.get(f"/v1/invoices/{a['id']}")).json()
    charges = body["charges"]
    assert (charges["waived"], charges["total_claimed"], charges["waived_by"], charges["reason"]) == (
        True,
        "0.00",
        "maria",
        "goodwill",
    )
    assert (charges["late_fees"], charges["interest"], charges["waived_interest"]) == ("40.00", "9.34", "9.34")
    (entry,) = history(body, "charges_waived")
    assert (entry["amount"], entry["by"], entry["reason"]) == ("49.34", "maria", "goodwill")
    assert body["amount_due"] == body["balance"] == a["amount_due"]
    assert [e["kind"] for e in body["history"]][-1] == "charges_waived"


async def test_stages_no_longer_chased_below_the_minimum_balance(client, pool, kit):
    a = await invoice(client, kit)
    t0 = utcnow()
    when = t0 + timedelta(days=3)
    planned = DunningPlanned(
        a["id"], kit.TENANT, "pol_x", 1, t0, (PlannedStage(S1, "soft", 1, "email", when, "scheduled", None),)
    )
    assert await kit.apply(pool, envelope(planned))
    skipped = StagesRescheduled(
        a["id"],
        kit.TENANT,
        "below_minimum_balance",
        None,
        "pol_x",
        1,
        t0 + timedelta(seconds=1),
        (RescheduledStage(S1, "soft", 1, "email", when, None, "skipped"),),
    )
    assert await kit.apply(pool, envelope(skipped))  # as the scheduler's firing sends it after a partial payment
    body = (await client.get(f"/v1/invoices/{a['id']}")).json()
    (stage,) = body["timeline"]
    assert (stage["state"], stage["reason"]) == ("skipped", "below_minimum_balance")
    (entry,) = history(body, "below_minimum_balance")
    assert entry["reason"] == "the balance is below the policy's minimum: 1 stage not chased"
    assert entry["data"]["stages"] == [{"stage_id": S1, "stage": "soft", "channel": "email", "state": "skipped"}]


async def test_a_plan_skipping_below_the_minimum_and_without_rules_adds_no_segment(client, pool, kit):
    a = await invoice(client, kit)
    t0 = utcnow()
    stage = PlannedStage(S1, "soft", 1, "email", t0 + timedelta(days=3), "skipped", "below_minimum_balance")
    assert await kit.apply(pool, envelope(DunningPlanned(a["id"], kit.TENANT, "pol_x", 1, t0, (stage,))))
    body = (await client.get(f"/v1/invoices/{a['id']}")).json()
    assert body["timeline"][0]["reason"] == "below_minimum_balance"
    assert history(body, "segment_chosen") == []


async def test_a_notice_naming_no_invoice_of_the_tenant_is_rejected(client, pool, kit):
    a = await invoice(client, kit)
    items = (NoticeItem(a["id"], None, None, None, None, stage_invoice(a)),)
    notice = NoticeComposed(NOTICE, kit.OTHER_TENANT, a["customer"]["id"], "email", utcnow(), customer_of(a), items)
    with pytest.raises(Rejected):
        await kit.apply(pool, envelope(notice))
    body = (await client.get(f"/v1/invoices/{a['id']}")).json()
    assert history(body, "notice_composed") == []


async def test_charges_in_another_currency_are_rejected(client, pool, kit):
    a = await invoice(client, kit)
    waived = LateChargesWaived(a["id"], kit.TENANT, "GBP", Decimal("40.00"), Decimal("0"), "x", "maria", utcnow())
    with pytest.raises(Rejected):
        await kit.apply(pool, envelope(waived))
    assert (await client.get(f"/v1/invoices/{a['id']}")).json()["charges"] is None


async def test_a_stage_fired_into_a_notice_says_so(client, pool, kit):
    from dunning_tools.testing.events import stage_escalated

    a = await invoice(client, kit)
    t0 = utcnow()
    event = stage_escalated(tenant_id=kit.TENANT, invoice_id=a["id"], stage_id=S1, scheduled_at=t0, fired_at=t0)
    event["data"]["notice_id"] = NOTICE
    assert await kit.apply(pool, event)
    (stage,) = (await client.get(f"/v1/invoices/{a['id']}")).json()["timeline"]
    assert (stage["state"], stage["reason"]) == ("escalated", f"fired in notice {NOTICE}")


async def test_a_large_notice_goes_on_every_invoice_it_lists(client, pool, kit):
    items = [kit.invoice_payload() for _ in range(60)]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    ids = [x["id"] for x in r.json()["results"]]
    invoices = [(await client.get(f"/v1/invoices/{i}")).json() for i in ids]
    listed = tuple(NoticeItem(inv["id"], None, None, None, None, stage_invoice(inv)) for inv in invoices)
    a = invoices[0]
    notice = NoticeComposed(NOTICE, kit.TENANT, a["customer"]["id"], "letter", utcnow(), customer_of(a), listed)
    assert await kit.apply(pool, envelope(notice))
    for inv in (invoices[0], invoices[-1]):
        (entry,) = history((await client.get(f"/v1/invoices/{inv['id']}")).json(), "notice_composed")
        assert entry["reason"] == f"in notice {NOTICE} (letter) with 59 other invoices: listed as overdue"
        assert entry["data"]["invoices"] == 60 and entry["data"]["invoice_ids"] == ids[:50]
    assert await pool.fetchval("SELECT count(*) FROM stop_events WHERE kind = 'notice_composed'") == 60
