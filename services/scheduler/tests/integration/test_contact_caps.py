"""Contact caps and the quiet period at firing: a customer's contacts are counted across its invoices
(one contact per fired (invoice, stage), its channels together); what the cap or the quiet period holds
back is deferred (StageDeferred) to when it allows a contact again, then fires."""

from datetime import timedelta

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def h(firing_h):
    return firing_h


ESCALATED, DEFERRED = "dunning.StageEscalated.v1", "dunning.StageDeferred.v1"
NOTICE, ASSESSED = "dunning.NoticeComposed.v1", "dunning.LateChargesAssessed.v1"
RESCHEDULED, WAIVED = "dunning.StagesRescheduled.v1", "dunning.LateChargesWaived.v1"
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"  # the helpers' customer


NOW = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]}]}


async def test_the_cap_defers_a_stage_of_another_invoice_of_the_customer(pool, h):
    await h.use_policy(pool, h.TENANT, NOW)
    await h.use_settings(pool, h.TENANT, {"contact_caps": {"max_reminders": 1, "period": "P7D"}})
    first = await h.issue(pool)
    second = await h.issue(pool)  # the same customer, due now too

    assert await h.fire(pool) == 2  # one contact: the first invoice's stage on both channels
    fired = [r for r in await h.timers(pool, first["subject"])]
    assert {r["state"] for r in fired} == {"fired"}
    contact_at = fired[0]["fired_at"]
    held = await h.timers(pool, second["subject"])
    assert {r["state"] for r in held} == {"scheduled"}
    assert {r["scheduled_at"] for r in held} == {contact_at + timedelta(days=7)}
    assert await h.outbox_events(pool, ESCALATED, second["subject"]) == []
    [deferred] = await h.outbox_events(pool, DEFERRED, second["subject"])
    assert deferred["data"]["reason"] == "contact_cap"
    assert deferred["data"]["detail"].startswith("at most 1 reminder per P7D: 1 sent since ")
    assert h.at(deferred["data"]["stages"][0]["scheduled_at"]) == contact_at + timedelta(days=7)
    assert await pool.fetchval("SELECT count(*) FROM customer_contacts WHERE customer_id = $1", CUSTOMER) == 1

    # a week later (the contact moved back 7 days): the held stage fires
    await pool.execute("UPDATE customer_contacts SET contacted_at = contacted_at - interval '7 days'")
    await h.make_due(pool, second["subject"])
    assert await h.fire(pool) == 2
    assert {r["state"] for r in await h.timers(pool, second["subject"])} == {"fired"}


async def test_the_quiet_period_holds_the_next_contact(pool, h):
    await h.use_policy(pool, h.TENANT, NOW)
    await h.use_settings(pool, h.TENANT, {"contact_caps": {"quiet_period": "P2D"}})
    first = await h.issue(pool)
    assert await h.fire(pool) == 2
    contact_at = (await h.timers(pool, first["subject"]))[0]["fired_at"]

    second = await h.issue(pool)
    assert await h.fire(pool) == 0
    [deferred] = await h.outbox_events(pool, DEFERRED, second["subject"])
    assert deferred["data"]["reason"] == "quiet_period" and "P2D" in deferred["data"]["detail"]
    assert {r["scheduled_at"] for r in await h.timers(pool, second["subject"])} == {contact_at + timedelta(days=2)}
    # another customer is not held by this one's quiet period
    other = await h.issue(pool, customer_id="cus_01JB2F7H9K3M5N7P9Q1R3S5TZZ")
    assert await h.fire(pool) == 2
    assert len(await h.outbox_events(pool, ESCALATED, other["subject"])) == 2
