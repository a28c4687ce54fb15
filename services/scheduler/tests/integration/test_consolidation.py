"""Consolidation at firing: a customer's stages due together go as one NoticeComposed per channel
(one contact), its later stages of the day join the notice through the firing gate (moved to the
notice's time), each StageEscalated names its notice, and the notice lists the customer's other open
overdue invoices as items without a stage."""

from datetime import timedelta

import pytest

from dunning.clock import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def h(firing_h):
    return firing_h


ESCALATED, DEFERRED = "dunning.StageEscalated.v1", "dunning.StageDeferred.v1"
NOTICE, ASSESSED = "dunning.NoticeComposed.v1", "dunning.LateChargesAssessed.v1"
RESCHEDULED, WAIVED = "dunning.StagesRescheduled.v1", "dunning.LateChargesWaived.v1"
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"  # the helpers' customer


NOW = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]}]}

TWO = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]},
        {"name": "firm", "offset": "PT1M", "channels": ["email"]},
    ],
}


async def test_three_invoices_go_as_one_notice_per_channel_with_the_overdue_one_listed(pool, h):
    await h.use_policy(pool, h.TENANT, TWO)
    await h.use_settings(pool, h.TENANT, {"consolidation": {"enabled": True}})
    a, b, c = [await h.issue(pool) for _ in range(3)]
    await pool.execute("UPDATE timers SET state = 'fired', fired_at = now() WHERE invoice_id = $1 AND stage = 'soft'",
                       c["subject"])  # fmt: skip  # c: only its firm stage is still to come (in a minute)
    today = utcnow().date()
    d = await h.issue(pool, due_date=today - timedelta(days=10), issued_at=utcnow() - timedelta(days=40))
    await pool.execute("UPDATE timers SET state = 'fired', fired_at = now() WHERE invoice_id = $1", d["subject"])
    paused = await h.issue(pool, due_date=today - timedelta(days=9), issued_at=utcnow() - timedelta(days=40))
    await h.apply(pool, h.dispute_opened(paused))  # overdue but paused: not listed

    # soft of a and b is due; the three firm stages (due within the customer's day) join the notice
    assert await h.fire(pool) == 7
    escalated = await h.outbox_events(pool, ESCALATED)
    assert len(escalated) == 7
    notices = await h.outbox_events(pool, NOTICE)
    assert sorted(n["data"]["channel"] for n in notices) == ["email", "sms"]
    by_channel = {n["data"]["channel"]: n for n in notices}
    for notice in notices:
        assert notice["subject"] == CUSTOMER and notice["data"]["customer_id"] == CUSTOMER
        assert notice["data"]["notice_id"].startswith("ntc_")
    for e in escalated:
        assert e["data"]["notice_id"] == by_channel[e["data"]["channel"]]["data"]["notice_id"]

    email = by_channel["email"]["data"]["items"]
    staged = [(i["invoice_id"], i["stage"]) for i in email if i["stage_id"] is not None]
    assert sorted(staged) == sorted(
        [(a["subject"], "soft"), (a["subject"], "firm"), (b["subject"], "soft"), (b["subject"], "firm"),
         (c["subject"], "firm")]
    )  # fmt: skip
    assert email[-1] == {**email[-1], "invoice_id": d["subject"], "stage_id": None, "stage": None}
    assert [i["invoice_id"] for i in email if i["stage_id"] is None] == [d["subject"]]
    sms = by_channel["sms"]["data"]["items"]
    assert sorted((i["invoice_id"], i["stage"]) for i in sms[:2]) == sorted(
        [(a["subject"], "soft"), (b["subject"], "soft")]
    )
    assert (sms[2]["invoice_id"], sms[2]["stage"]) == (d["subject"], None) and len(sms) == 3

    # the pulled stages fired at the notice's time: their scheduled_at is the earliest triggering one's
    softs = [r for x in (a, b) for r in await h.timers(pool, x["subject"]) if r["stage"] == "soft"]
    earliest = min(r["scheduled_at"] for r in softs)
    for x in (a, b, c):
        [firm] = [r for r in await h.timers(pool, x["subject"]) if r["stage"] == "firm"]
        assert firm["state"] == "fired" and firm["scheduled_at"] == earliest and firm["notice_id"] is not None
    assert await pool.fetchval("SELECT count(*) FROM customer_contacts") == 1
    assert await h.fire(pool) == 0


async def test_a_paused_invoice_stage_is_not_pulled_into_the_notice(pool, h):
    await h.use_policy(pool, h.TENANT, TWO)
    await h.use_settings(pool, h.TENANT, {"consolidation": {"enabled": True}})
    await h.issue(pool)  # its soft stage is due now
    b = await h.issue(pool)
    await pool.execute("UPDATE timers SET state = 'fired', fired_at = now() WHERE invoice_id = $1 AND stage = 'soft'",
                       b["subject"])  # fmt: skip
    await h.apply(pool, h.hold_placed(b))
    await pool.execute("UPDATE timers SET state = 'scheduled' WHERE invoice_id = $1 AND state = 'paused'",
                       b["subject"])  # fmt: skip  # left scheduled by a bug: the gate conditions still hold it
    assert await h.fire(pool) == 3  # a: soft x2 + firm
    [firm_b] = [r for r in await h.timers(pool, b["subject"]) if r["stage"] == "firm"]
    assert firm_b["state"] == "scheduled"
    assert await h.outbox_events(pool, ESCALATED, b["subject"]) == []
