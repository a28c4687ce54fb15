"""Planning many InvoiceIssued in one statement, and the in-memory active policy (a new version is
used from the very next planning on)."""

from datetime import date, timedelta

import pytest

from dunning import inbox
from dunning.clock import utcnow
from dunning.consumer import Rejected
from dunning.contracts import InvoiceIssued
from dunning.events import decode, dumps, validate

from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy

pytestmark = pytest.mark.integration
PLANNED = "dunning.DunningPlanned.v1"
HANDLERS = handlers_for(ActivePolicies())


async def apply_batch(pool, envelopes: list[dict]) -> None:
    """As a runner with batch handlers would: claim every id, then one call for the run."""
    events = [decode(dumps(e)) for e in envelopes]
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            assert await inbox.claim(conn, event.id, event.type, "test")
        await HANDLERS[InvoiceIssued].batch(conn, events)


async def test_a_batch_plans_each_invoice_once_as_one_by_one_would(pool, h):
    old = h.invoice_issued(issued_at=utcnow() - timedelta(days=30), due_date=utcnow().date() - timedelta(days=16))
    paid_first = h.invoice_issued(due_date=date(2031, 3, 20))
    fresh = h.invoice_issued(due_date=date(2031, 3, 20), timezone="America/New_York")
    again = h.invoice_issued(invoice_id=fresh["subject"], due_date=date(2031, 5, 1))  # same invoice, new event
    await h.apply(pool, h.payment_received(paid_first["subject"], balance="0.00", settled=True))

    await apply_batch(pool, [old, paid_first, fresh, again])

    states = {e["subject"]: [(r["stage"], r["state"]) for r in await h.timers(pool, e["subject"])]
              for e in (old, paid_first, fresh)}
    assert states[old["subject"]] == [("pre_due", "skipped"), ("soft", "skipped"), ("firm", "skipped"),
                                      ("final", "scheduled"), ("collections", "scheduled")]
    assert {s for _, s in states[paid_first["subject"]]} == {"cancelled"}
    assert {s for _, s in states[fresh["subject"]]} == {"scheduled"}
    fresh_rows = await h.timers(pool, fresh["subject"])
    assert fresh_rows[1]["scheduled_at"].date() == date(2031, 3, 21)  # the first event's due date won
    for envelope in (old, paid_first, fresh):
        [planned] = await h.outbox_events(pool, PLANNED, envelope["subject"])
        validate(planned)
        rows = await h.timers(pool, envelope["subject"])
        assert [(s["stage_id"], s["state"], s["scheduled_at"]) for s in planned["data"]["stages"]] == [
            (r["stage_id"], r["state"], r["scheduled_at"].isoformat().replace("+00:00", "Z")) for r in rows]
    outbox = await pool.fetch("SELECT key, event_id::text, headers FROM outbox WHERE event_type = $1", PLANNED)
    for row in outbox:
        assert row["headers"]["ce_id"] == row["event_id"] and row["headers"]["ce_type"] == PLANNED


async def test_another_tenants_invoice_in_a_batch_is_rejected(pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, event)
    intruder = h.invoice_issued(invoice_id=event["subject"], tenant_id="ten_other")
    with pytest.raises(Rejected):
        await apply_batch(pool, [h.invoice_issued(due_date=date(2031, 3, 20)), intruder])


async def test_a_new_policy_version_is_used_from_the_next_invoice_on(pool, h):
    first = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, first)  # the built-in default, now remembered
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy({"id": "pol_two", "stages": [
            {"name": "only", "offset": "P2D"}]}))
    second = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, second)
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy({"id": "pol_three", "stages": [
            {"name": "one", "offset": "P1D"}, {"name": "two", "offset": "P3D"}]}))
    third = h.invoice_issued(due_date=date(2031, 3, 20))
    await apply_batch(pool, [third])

    assert len(await h.timers(pool, first["subject"])) == 5
    assert [r["stage"] for r in await h.timers(pool, second["subject"])] == ["only"]
    assert [r["stage"] for r in await h.timers(pool, third["subject"])] == ["one", "two"]
    [planned] = await h.outbox_events(pool, PLANNED, third["subject"])
    assert (planned["data"]["policy_id"], planned["data"]["policy_version"]) == ("pol_three", 2)
