"""Money applied in the other order of its acknowledgements, on a real PostgreSQL through the
handlers: reconciliation reads a payment's acknowledged_at before it locks the invoice, and the
payments and invoices topics are consumed apart, so the scheduler may see a later payment first,
or a payment before the promise it keeps (the two rules docs/model-checking.md shows wrong)."""

from datetime import timedelta
from functools import partial

import pytest

from dunning.clock import utcnow
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.deadline_loop import DeadlineLoop
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration
CANCELLED, ESCALATED = "dunning.StagesCancelled.v1", "dunning.StageEscalated.v1"
KEPT, BROKEN, RESUMED = "dunning.PromiseKept.v1", "dunning.PromiseBroken.v1", "dunning.DunningResumed.v1"
SOON_THEN_DAYS = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT0S"},
        {"name": "firm", "offset": "P1D"},
        {"name": "final", "offset": "P3D"},
    ],
}


@pytest.fixture
def h(h):
    """Applying through handlers with a policy cache of this test's own (each schema has its own policy)."""

    class Fresh(h):
        apply = staticmethod(partial(apply_event, handlers=handlers_for(ActivePolicies())))

    return Fresh


async def issue(pool, h, **kwargs) -> dict:
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy(SOON_THEN_DAYS))
    issued = h.invoice_issued(issued_at=utcnow() + timedelta(hours=1), amount_due="1250.00", **kwargs)
    await h.apply(pool, issued)
    return issued


async def fire_everything_due_within(pool, invoice_id: str, within: timedelta) -> int:
    """Bring the invoice's timers due `within` from now to now and run the firing loop once."""
    await pool.execute(
        "UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND scheduled_at < now() + $2::interval",
        invoice_id,
        within,
    )
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False).fire_once()


@pytest.mark.parametrize("settling", ["payment", "credit_note"])
async def test_a_settling_payment_applied_after_a_later_acknowledged_one_still_settles(pool, h, settling):
    """Payment 1 is acknowledged first but takes the invoice's lock at reconciliation second: the
    scheduler sees payment 2 (partial, newer) first, then payment 1 (settling, older)."""
    issued = await issue(pool, h)
    invoice_id, t0 = issued["subject"], utcnow()
    second = h.payment_received(invoice_id, balance="750.00", settled=False, amount="500.00",
                                acknowledged_at=t0 + timedelta(milliseconds=1))  # fmt: skip
    if settling == "payment":
        first = h.payment_received(invoice_id, balance="0.00", settled=True, amount="750.00", acknowledged_at=t0)
    else:
        first = h.credit_note_issued(issued, amount="750.00", balance="0.00", settled=True, acknowledged_at=t0)
    await h.apply(pool, second)
    await h.apply(pool, first)

    invoice = await pool.fetchrow(
        "SELECT settled, balance, last_payment_id FROM invoices WHERE invoice_id = $1", invoice_id
    )
    assert invoice["settled"] and invoice["balance"] == 0
    assert invoice["last_payment_id"] == second["data"]["payment_id"]  # the newest acknowledged
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert cancelled["data"]["reason"] == ("invoice_settled" if settling == "payment" else "invoice_credited")
    assert [s["stage"] for s in cancelled["data"]["stages"]] == ["soft", "firm", "final"]
    assert await fire_everything_due_within(pool, invoice_id, timedelta(days=4)) == 0
    assert await h.outbox_events(pool, ESCALATED, invoice_id) == []


async def test_the_lowest_balance_wins_whatever_order_partial_payments_arrive_in(pool, h):
    """Reconciliation's balance only goes down between amount corrections, so the lowest is the
    last it applied; the newest acknowledged may be a higher one (applied first)."""
    issued = await issue(pool, h)
    invoice_id, t0 = issued["subject"], utcnow()
    newer = h.payment_received(invoice_id, balance="1000.00", settled=False, amount="250.00",
                               acknowledged_at=t0 + timedelta(milliseconds=1))  # fmt: skip
    older = h.payment_received(invoice_id, balance="750.00", settled=False, amount="250.00", acknowledged_at=t0)
    await h.apply(pool, newer)
    await h.apply(pool, older)
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice_id) == 750

    assert await fire_everything_due_within(pool, invoice_id, timedelta(hours=2)) == 1
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["invoice"]["balance"] == "750.00"


async def test_a_payment_applied_before_its_promise_keeps_it(pool, h):
    """The payment is acknowledged after the promise was made, but the scheduler consumes the
    payments topic ahead of the invoices topic: the promise counts it when applied, and is kept."""
    issued = await issue(pool, h)
    invoice_id, t0 = issued["subject"], utcnow()
    made = h.promise_made(issued, amount="500.00", promised_date=t0.date() + timedelta(days=3), acknowledged_at=t0)
    await h.apply(pool, h.payment_received(invoice_id, balance="750.00", settled=False, amount="500.00",
                                           acknowledged_at=t0 + timedelta(milliseconds=1)))  # fmt: skip
    await h.apply(pool, made)

    [kept] = await h.outbox_events(pool, KEPT, invoice_id)
    assert kept["data"]["promise_id"] == made["data"]["promise_id"] and kept["data"]["paid_amount"] == "500.00"
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["reason"] == "promise_kept"
    assert await pool.fetchval("SELECT count(*) FROM pauses WHERE state <> 'ended'") == 0
    assert await pool.fetchval("SELECT count(*) FROM deadlines WHERE cause_id = $1", made["data"]["promise_id"]) == 0
    assert await DeadlineLoop(pool, ActivePolicies(), gated=False).judge_once() == 0
    assert await h.outbox_events(pool, BROKEN, invoice_id) == []


async def test_a_promise_counts_money_since_it_was_made_once_whenever_it_was_applied(pool, h):
    """Of the money applied before PromiseMade, only what was acknowledged at or after the promise
    counts; money applied after it adds to that, and a payment seen twice counts once."""
    issued = await issue(pool, h)
    invoice_id, t0 = issued["subject"], utcnow()
    made = h.promise_made(issued, amount="500.00", promised_date=t0.date() + timedelta(days=3), acknowledged_at=t0)
    before = h.payment_received(invoice_id, balance="950.00", settled=False, amount="300.00",
                                acknowledged_at=t0 - timedelta(seconds=1))  # fmt: skip
    since = h.payment_received(invoice_id, balance="750.00", settled=False, amount="200.00",
                               acknowledged_at=t0 + timedelta(milliseconds=1))  # fmt: skip
    await h.apply(pool, before)
    await h.apply(pool, since)
    await h.apply(pool, made)
    assert await h.outbox_events(pool, KEPT, invoice_id) == []  # 200 of 500
    assert await pool.fetchval("SELECT paid FROM pauses WHERE cause_id = $1", made["data"]["promise_id"]) == 200

    copy = h.payment_received(invoice_id, balance="750.00", settled=False, amount="200.00",
                              acknowledged_at=t0 + timedelta(milliseconds=1))  # fmt: skip
    copy["data"]["payment_id"] = since["data"]["payment_id"]  # the same payment, another envelope
    await h.apply(pool, copy)
    assert await h.outbox_events(pool, KEPT, invoice_id) == []

    await h.apply(pool, h.payment_received(invoice_id, balance="450.00", settled=False, amount="300.00"))
    [kept] = await h.outbox_events(pool, KEPT, invoice_id)
    assert kept["data"]["paid_amount"] == "500.00"
