"""Pauses on a real PostgreSQL, through the handlers, the firing loop and the deadline loop: every
stop that pauses (hold, dispute, promise, plan) pauses and nothing paused fires; the last pause's end
resumes by the policy's resume mode; terminal stops are always announced."""

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from dunning.clock import utcnow
from dunning.events import decode, dumps
from dunning_scheduler import pauser
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.deadline_loop import DeadlineLoop
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration
PAUSED, RESUMED = "dunning.DunningPaused.v1", "dunning.DunningResumed.v1"
ESCALATED, CANCELLED = "dunning.StageEscalated.v1", "dunning.StagesCancelled.v1"
NOW_THEN_DAYS = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT0S"},
        {"name": "firm", "offset": "P1D"},
        {"name": "final", "offset": "P3D"},
    ],
}


@pytest.fixture
def h(h):
    """The helpers, applying through handlers with a policy cache of this test's own: each test's
    schema stores its own version 1 of the tenant's policy (the resume mode differs)."""

    class Fresh(h):
        apply = staticmethod(partial(apply_event, handlers=handlers_for(ActivePolicies())))

    return Fresh


async def use_policy(pool, tenant: str, document: dict) -> None:
    async with pool.acquire() as conn:
        await save_policy(conn, tenant, parse_policy(document))


async def fire(pool) -> int:
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False).fire_once()


async def judge(pool, *, gated: bool = False) -> int:
    return await DeadlineLoop(pool, ActivePolicies(), gated=gated).judge_once()


async def states(h, pool, invoice_id: str) -> dict[str, str]:
    return {r["stage"]: r["state"] for r in await h.timers(pool, invoice_id)}


def z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def issue(pool, h, **kwargs) -> dict:
    issued = h.invoice_issued(**kwargs)
    await h.apply(pool, issued)
    return issued


@pytest.mark.parametrize("stop", ["hold", "customer_hold", "dispute", "promise", "payment_plan"])
async def test_each_stop_pauses_the_invoice_and_no_paused_stage_fires(pool, h, stop):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = await issue(pool, h)  # soft is due now
    invoice_id, today = issued["subject"], utcnow().date()
    event = {
        "hold": lambda: h.hold_placed(issued),
        "customer_hold": lambda: h.hold_placed(issued, whole_customer=True),
        "dispute": lambda: h.dispute_opened(issued),
        "promise": lambda: h.promise_made(issued, amount="100.00", promised_date=today + timedelta(days=5)),
        "payment_plan": lambda: h.plan_agreed([issued], [(today + timedelta(days=30), "1250.00")]),
    }[stop]()
    await h.apply(pool, event)

    assert await fire(pool) == 0
    policy_stages = [r for r in await h.timers(pool, invoice_id) if r["kind"] == "policy"]
    assert {r["state"] for r in policy_stages} == {"paused"}  # a plan's own instalment reminders run
    [paused] = await h.outbox_events(pool, PAUSED, invoice_id)
    assert paused["data"]["cause"] == stop.removeprefix("customer_")
    assert paused["data"]["cause_event_id"] == event["id"]
    assert [s["stage"] for s in paused["data"]["stages"]] == ["soft", "firm", "final"]
    assert await h.outbox_events(pool, ESCALATED, invoice_id) == []


async def test_a_paused_timer_left_scheduled_still_does_not_fire(pool, h):
    """The firing query checks the live pauses itself, as it checks closed invoices."""
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = await issue(pool, h)
    await h.apply(pool, h.dispute_opened(issued))
    await pool.execute("UPDATE timers SET state = 'scheduled' WHERE invoice_id = $1", issued["subject"])
    assert await fire(pool) == 0


async def test_a_customer_hold_covers_an_invoice_issued_later_until_released(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    first = await issue(pool, h)
    placed = h.hold_placed(first, whole_customer=True)
    await h.apply(pool, placed)

    later = await issue(pool, h)  # same customer
    assert set((await states(h, pool, later["subject"])).values()) == {"paused"}
    [paused] = await h.outbox_events(pool, PAUSED, later["subject"])
    assert (paused["data"]["cause"], paused["data"]["cause_id"]) == ("hold", placed["data"]["hold_id"])
    assert await fire(pool) == 0

    await h.apply(pool, h.hold_released(placed))
    for invoice in (first, later):
        [resumed] = await h.outbox_events(pool, RESUMED, invoice["subject"])
        assert resumed["data"]["reason"] == "hold_released" and resumed["data"]["resume_mode"] == "spaced"
    assert await fire(pool) == 2  # each invoice's soft stage, once


async def test_a_hold_placed_before_its_invoice_is_known_pauses_it_when_planned(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = h.invoice_issued()
    await h.apply(pool, h.hold_placed(issued))  # the customers topic ran ahead of the invoices topic
    await h.apply(pool, issued)
    assert set((await states(h, pool, issued["subject"])).values()) == {"paused"}
    assert await fire(pool) == 0


async def _open(pool, envelope: dict, policies: ActivePolicies):
    """Run `envelope`'s handler in a transaction left open: (connection, transaction) to commit."""
    event = decode(dumps(envelope))
    spec = next(spec for record, spec in handlers_for(policies).items() if record.TYPE == event.type)
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await spec.each(conn, event)
    return conn, tx


async def _expire_open(pool, hold_id: str, policies: ActivePolicies):
    """The deadline loop's hold_end for `hold_id`, in a transaction left open."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    assert await pauser.end(conn, cause_id=hold_id, reason="hold_expired", policies=policies)
    return conn, tx


@pytest.mark.parametrize("first", ["expiry", "planning"])
async def test_a_hold_expiring_while_its_invoice_is_planned_leaves_nothing_paused(pool, h, first):
    """Planning reads the live pauses and writes the timers; a hold's end reads the invoice and its
    timers to resume: each waits for the other's transaction (a chaos run found the invoice planned
    paused 17 ms before its hold expired in another transaction, paused for good)."""
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    policies = ActivePolicies()
    issued = h.invoice_issued()
    placed = h.hold_placed(issued, ends_at=utcnow() + timedelta(hours=1))
    await h.apply(pool, placed)  # before the invoice is known: planning will find it live
    hold_id = placed["data"]["hold_id"]
    held = []  # (connection, transaction) left open, closed whatever happens
    committed = 0
    try:
        if first == "expiry":
            held.append(await _expire_open(pool, hold_id, policies))
            other = asyncio.ensure_future(h.apply(pool, issued))
        else:
            held.append(await _open(pool, issued, policies))
            other = asyncio.ensure_future(_expire_open(pool, hold_id, policies))
        await asyncio.sleep(0.5)
        waited = not other.done()
        await held[0][1].commit()
        committed = 1
        result = await asyncio.wait_for(other, 10)
        if first == "planning":
            held.append(result)
            await result[1].commit()
            committed = 2
    finally:
        for n, (conn, tx) in enumerate(held):
            if n >= committed:
                await tx.rollback()
            await pool.release(conn)
    assert set((await states(h, pool, issued["subject"])).values()) == {"scheduled"}
    assert await fire(pool) == 1  # soft, due now
    assert waited, "the second waited for the first's transaction"


@pytest.mark.parametrize(
    "mode, expected",
    [
        pytest.param(
            "spaced",
            {"soft": ("scheduled", 0), "firm": ("scheduled", "spaced"), "final": ("scheduled", "spaced")},
            id="spaced-keeps-the-spacing-after-the-resume",
        ),
        pytest.param(
            "latest_only",
            {"soft": ("skipped", None), "firm": ("scheduled", 0), "final": ("scheduled", "original")},
            id="latest-only-sends-the-most-escalated-owed-stage",
        ),
        pytest.param(
            "all_at_once",
            {"soft": ("scheduled", 0), "firm": ("scheduled", 0), "final": ("scheduled", "original")},
            id="all-at-once-sends-every-owed-stage",
        ),
    ],
)
async def test_a_release_resumes_by_the_policys_resume_mode(pool, h, mode, expected):
    await use_policy(pool, h.TENANT, {**NOW_THEN_DAYS, "pauses": {"resume": mode}})
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    placed = h.hold_placed(issued)
    await h.apply(pool, placed)
    # As if the hold had lasted two days and a half: soft and firm fell due during it, final did not.
    await pool.execute(
        "UPDATE timers SET scheduled_at = scheduled_at - interval '60 hours' WHERE invoice_id = $1", invoice_id
    )
    before = {r["stage"]: r["scheduled_at"] for r in await h.timers(pool, invoice_id)}

    await h.apply(pool, h.hold_released(placed))

    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    resumed_at = datetime.fromisoformat(resumed["data"]["resumed_at"])
    after = {r["stage"]: r for r in await h.timers(pool, invoice_id)}
    for stage, (state, days) in expected.items():
        assert after[stage]["state"] == state, stage
        if days == "original":
            assert after[stage]["scheduled_at"] == before[stage]
        elif days == "spaced":  # its original distance from the first owed stage
            assert after[stage]["scheduled_at"] == resumed_at + (before[stage] - before["soft"]), stage
        elif days is not None:
            assert after[stage]["scheduled_at"] == resumed_at + timedelta(days=days), stage
    listed = {s["stage"]: s for s in resumed["data"]["stages"]}
    assert listed["soft"]["previous_scheduled_at"] == z(before["soft"])
    assert listed["soft"]["state"] == expected["soft"][0]
    assert await fire(pool) == sum(1 for state, days in expected.values() if days == 0)


async def test_a_dispute_rejected_resumes_and_an_upheld_one_waits_for_its_credit_note(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    rejected = await issue(pool, h)
    opened = h.dispute_opened(rejected)
    await h.apply(pool, opened)
    await h.apply(pool, h.dispute_resolved(opened, outcome="rejected"))
    [resumed] = await h.outbox_events(pool, RESUMED, rejected["subject"])
    assert resumed["data"]["reason"] == "dispute_rejected"

    upheld = await issue(pool, h, amount_due="1250.00")
    opened = h.dispute_opened(upheld, amount="250.00")
    await h.apply(pool, opened)
    await h.apply(pool, h.dispute_resolved(opened, outcome="upheld", credit_amount="250.00"))
    assert await h.outbox_events(pool, RESUMED, upheld["subject"]) == []  # waits for the credit
    assert set((await states(h, pool, upheld["subject"])).values()) == {"paused"}
    credit = h.credit_note_issued(
        upheld, amount="250.00", balance="1000.00", settled=False, reference=opened["data"]["dispute_id"]
    )
    await h.apply(pool, credit)
    [resumed] = await h.outbox_events(pool, RESUMED, upheld["subject"])
    assert resumed["data"]["reason"] == "dispute_upheld"
    assert await fire(pool) == 2  # both invoices' soft stage


async def test_a_promise_paid_in_time_is_kept_and_dunning_resumes_on_what_is_left(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = await issue(pool, h, amount_due="1250.00")
    invoice_id = issued["subject"]
    made = h.promise_made(issued, amount="500.00", promised_date=utcnow().date() + timedelta(days=3))
    await h.apply(pool, made)
    await h.apply(pool, h.payment_received(invoice_id, balance="950.00", settled=False, amount="300.00"))
    assert await h.outbox_events(pool, "dunning.PromiseKept.v1", invoice_id) == []  # 300 of 500
    await h.apply(pool, h.payment_received(invoice_id, balance="750.00", settled=False, amount="200.00"))

    [kept] = await h.outbox_events(pool, "dunning.PromiseKept.v1", invoice_id)
    assert kept["data"]["promise_id"] == made["data"]["promise_id"] and kept["data"]["paid_amount"] == "500.00"
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["reason"] == "promise_kept"
    assert await pool.fetchval("SELECT count(*) FROM deadlines WHERE cause_id = $1", made["data"]["promise_id"]) == 0


async def test_a_broken_promise_resumes_with_a_promise_broken_reminder_quoting_it_first(pool, h):
    await use_policy(pool, h.TENANT, {**NOW_THEN_DAYS, "pauses": {"promise_grace": "PT0S"}})
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    made = h.promise_made(issued, amount="500.00", promised_date=utcnow().date() - timedelta(days=2))
    await h.apply(pool, made)  # its deadline (the end of that day in Berlin) has passed

    assert await judge(pool) == 1

    [broken] = await h.outbox_events(pool, "dunning.PromiseBroken.v1", invoice_id)
    assert broken["data"]["paid_amount"] == "0.00"
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["reason"] == "promise_broken"
    assert resumed["data"]["stages"][0]["stage"] == "promise_broken"
    assert resumed["data"]["stages"][0]["previous_scheduled_at"] is None
    assert await fire(pool) == 1  # promise_broken now; soft (owed) one stage-gap later (soft to firm: a day)
    timers = {r["stage"]: r for r in await h.timers(pool, invoice_id)}
    resumed_at = datetime.fromisoformat(resumed["data"]["resumed_at"])
    assert (
        timers["soft"]["scheduled_at"] - resumed_at == timers["firm"]["scheduled_at"] - timers["soft"]["scheduled_at"]
    )
    assert timers["soft"]["scheduled_at"] > resumed_at + timedelta(hours=23)
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert escalated["data"]["template"] == "promise_broken"
    assert escalated["data"]["context"] == {
        "kind": "promise_broken",
        "promise_id": made["data"]["promise_id"],
        "promised_amount": "500.00",
        "promised_date": made["data"]["promised_date"],
        "currency": "EUR",
    }


async def test_a_promise_by_an_instant_is_due_then_plus_the_grace_and_broken_at_that_deadline(pool, h):
    await use_policy(pool, h.TENANT, {**NOW_THEN_DAYS, "pauses": {"promise_grace": "PT2S"}})
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    due_by = utcnow() + timedelta(seconds=1)
    berlin_day = due_by.astimezone(ZoneInfo("Europe/Berlin")).date()
    made = h.promise_made(issued, amount="500.00", promised_date=berlin_day, due_by=due_by)
    await h.apply(pool, made)
    promise_id = made["data"]["promise_id"]
    deadline = due_by + timedelta(seconds=2)  # not the end of the day in Berlin plus the grace
    assert await pool.fetchval("SELECT at FROM deadlines WHERE cause_id = $1", promise_id) == deadline
    [paused] = await h.outbox_events(pool, PAUSED, invoice_id)
    assert paused["data"]["cause_id"] == promise_id

    assert await judge(pool) == 0  # not yet
    await asyncio.sleep((deadline - utcnow()).total_seconds() + 0.05)
    assert await judge(pool) == 1

    [broken] = await h.outbox_events(pool, "dunning.PromiseBroken.v1", invoice_id)
    assert datetime.fromisoformat(broken["data"]["deadline"]) == deadline
    assert broken["data"]["promised_date"] == berlin_day.isoformat()
    assert datetime.fromisoformat(broken["data"]["broken_at"]) >= deadline
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert (resumed["data"]["reason"], resumed["data"]["stages"][0]["stage"]) == ("promise_broken", "promise_broken")


async def test_a_promise_deadline_waits_for_the_gate_so_a_payment_acknowledged_before_it_is_seen(pool, h):
    await use_policy(pool, h.TENANT, {**NOW_THEN_DAYS, "pauses": {"promise_grace": "PT0S"}})
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    promised = utcnow().date() - timedelta(days=2)
    made_at = datetime.combine(promised, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    made = h.promise_made(issued, amount="500.00", promised_date=promised, acknowledged_at=made_at)
    await h.apply(pool, made)
    # No acknowledging service has stated a watermark past the deadline: it is not judged yet ...
    assert await judge(pool, gated=True) == 0
    # ... and the payment acknowledged before it, applied only now, keeps the promise.
    paid_at = datetime.combine(promised, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    await h.apply(
        pool, h.payment_received(invoice_id, balance="750.00", settled=False, amount="500.00", acknowledged_at=paid_at)
    )
    assert len(await h.outbox_events(pool, "dunning.PromiseKept.v1", invoice_id)) == 1
    assert await judge(pool) == 0  # nothing left to judge
    assert await h.outbox_events(pool, "dunning.PromiseBroken.v1", invoice_id) == []


async def test_plan_instalments_paid_in_order_cancel_their_reminders_and_a_missed_one_breaks_the_plan(pool, h):
    await use_policy(pool, h.TENANT, {**NOW_THEN_DAYS, "payment_plans": {"grace": "PT0S"}})
    issued = await issue(pool, h, amount_due="1250.00")
    invoice_id = issued["subject"]
    today = utcnow().date()
    agreed = h.plan_agreed([issued], [(today + timedelta(days=10), "500.00"), (today + timedelta(days=40), "750.00")])
    await h.apply(pool, agreed)
    reminders = {r["stage"]: r for r in await h.timers(pool, invoice_id) if r["kind"] == "instalment"}
    assert sorted(reminders) == [
        "instalment_1_overdue", "instalment_1_pre_due", "instalment_2_overdue", "instalment_2_pre_due",
    ]  # fmt: skip
    assert {r["state"] for r in reminders.values()} == {"scheduled"}  # the plan's own pause lets them run
    assert reminders["instalment_2_pre_due"]["context"]["instalments"] == "2"

    await h.apply(pool, h.payment_received(invoice_id, balance="750.00", settled=False, amount="500.00"))
    after = await states(h, pool, invoice_id)
    assert after["instalment_1_pre_due"] == after["instalment_1_overdue"] == "cancelled"
    assert after["instalment_2_pre_due"] == "scheduled" and after["soft"] == "paused"

    # Instalment 2's deadline passes uncovered (moved into the past: the test cannot wait 40 days).
    await pool.execute(
        "UPDATE deadlines SET at = now() - interval '1 second' WHERE cause_id = $1 AND number = 2",
        agreed["data"]["plan_id"],
    )
    assert await judge(pool) == 1
    [missed] = await h.outbox_events(pool, "dunning.InstalmentMissed.v1")
    assert (missed["data"]["number"], missed["data"]["paid_amount"]) == (2, "500.00")
    [broken] = await h.outbox_events(pool, "dunning.PaymentPlanBroken.v1")
    assert broken["data"]["remaining"] == "750.00" and broken["data"]["invoice_ids"] == [invoice_id]
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["reason"] == "payment_plan_broken"
    cancelled = {s["stage"] for s in resumed["data"]["stages"] if s["state"] == "cancelled"}
    assert cancelled == {"instalment_2_pre_due", "instalment_2_overdue"}
    assert (await states(h, pool, invoice_id))["soft"] == "scheduled"


async def test_a_plan_paid_in_full_is_completed(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = await issue(pool, h, amount_due="1000.00")
    invoice_id = issued["subject"]
    today = utcnow().date()
    agreed = h.plan_agreed([issued], [(today + timedelta(days=10), "400.00"), (today + timedelta(days=20), "600.00")])
    await h.apply(pool, agreed)
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True, amount="1000.00"))
    [completed] = await h.outbox_events(pool, "dunning.PaymentPlanCompleted.v1")
    assert completed["data"]["plan_id"] == agreed["data"]["plan_id"]
    assert set((await states(h, pool, invoice_id)).values()) == {"cancelled"}
    assert await pool.fetchval("SELECT count(*) FROM deadlines WHERE cause_id = $1", agreed["data"]["plan_id"]) == 0


async def test_every_terminal_stop_is_announced_even_with_no_stage_left(pool, h):
    await use_policy(pool, h.TENANT, {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S"}]})
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    assert await fire(pool) == 1  # nothing left to cancel
    await h.apply(pool, h.invoice_voided(issued, version=2))
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert (cancelled["data"]["reason"], cancelled["data"]["stages"]) == ("invoice_voided", [])
    await h.apply(pool, h.invoice_written_off(issued, version=3))  # closed already: no second announcement
    assert len(await h.outbox_events(pool, CANCELLED, invoice_id)) == 1


async def test_a_terminal_stop_ends_the_pauses_and_cancels_the_paused_stages(pool, h):
    await use_policy(pool, h.TENANT, NOW_THEN_DAYS)
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    await h.apply(pool, h.dispute_opened(issued))
    await h.apply(pool, h.payment_received(invoice_id, balance="0.00", settled=True, amount="1250.00"))
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert [s["stage"] for s in cancelled["data"]["stages"]] == ["soft", "firm", "final"]
    assert (
        await pool.fetchval("SELECT count(*) FROM pauses WHERE invoice_id = $1 AND state <> 'ended'", invoice_id) == 0
    )
    assert await h.outbox_events(pool, RESUMED, invoice_id) == []
