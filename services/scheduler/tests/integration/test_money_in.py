"""Money in (issue 11) on a real PostgreSQL, through the handlers and the firing loop: money taken
back reopens a settled invoice and dunning resumes by the policy (no burst, no stage twice); a
payment still processing and a chargeback pause it; the event with the higher balance version
states the balance, whatever order they arrive in."""

from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest

from dunning.clock import utcnow
from dunning.events import new_event, validate
from dunning.ids import new_id
from dunning_scheduler.bootstrap import handlers_for
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
    """Applying through handlers with a policy cache of this test's own (each schema has its own policy)."""

    class Fresh(h):
        apply = staticmethod(partial(apply_event, handlers=handlers_for(ActivePolicies())))

    return Fresh


def _money(event_type: str, data: dict) -> dict:
    envelope = new_event(event_type, data, source="/reconciliation", subject=data["invoice_id"],
                         tenant_id=data["tenant_id"])  # fmt: skip
    validate(envelope)
    return envelope


def received(issued: dict, *, amount: str, balance: str, settled: bool, version: int | None, **extra) -> dict:
    """One allocation of a payment (PaymentReceived) of `amount`, leaving `balance`, at `version`."""
    d, now = issued["data"], utcnow()
    data = {
        "payment_id": new_id("pay"), "invoice_id": d["invoice_id"], "tenant_id": d["tenant_id"],
        "invoice_external_id": d["external_id"], "source": "bank_statement", "source_reference": "stmt-1/3",
        "currency": d["currency"], "amount": amount, "amount_applied": amount, "balance_remaining": balance,
        "settled": settled, "received_at": now, "acknowledged_at": now, "allocation_id": new_id("alc"),
        "match_rule": "reference", "match_reason": "the invoice number in the remittance",
    } | ({"balance_version": version} if version is not None else {}) | extra  # fmt: skip
    return _money("dunning.PaymentReceived.v1", data)


def reversed_(paid: dict, *, amount: str, balance: str, settled: bool, version: int, kind: str = "refund") -> dict:
    """A PaymentReversed of the payment `paid` (its PaymentReceived envelope)."""
    p, now = paid["data"], utcnow()
    data = {
        "reversal_id": new_id("rev"), "payment_id": p["payment_id"], "invoice_id": p["invoice_id"],
        "tenant_id": p["tenant_id"], "invoice_external_id": p["invoice_external_id"], "kind": kind,
        "source": "stripe", "source_reference": f"re_{new_id('x')[-12:]}", "currency": p["currency"],
        "amount": amount, "balance_remaining": balance, "settled": settled, "reversed_at": now,
        "acknowledged_at": now, "balance_version": version,
    }  # fmt: skip
    return _money("dunning.PaymentReversed.v1", data)


def unallocated(paid: dict, *, balance: str, settled: bool, version: int) -> dict:
    p = paid["data"]
    data = {
        "allocation_id": p["allocation_id"], "payment_id": p["payment_id"], "invoice_id": p["invoice_id"],
        "tenant_id": p["tenant_id"], "invoice_external_id": p["invoice_external_id"], "currency": p["currency"],
        "amount": p["amount_applied"], "balance_remaining": balance, "settled": settled,
        "reason": "matched to the wrong invoice", "unallocated_by": "api", "unallocated_at": utcnow(),
        "balance_version": version,
    }  # fmt: skip
    return _money("dunning.PaymentUnallocated.v1", data)


def credit_applied(issued: dict, *, amount: str, balance: str, settled: bool, version: int) -> dict:
    d, now = issued["data"], utcnow()
    data = {
        "application_id": new_id("cca"), "credit_id": new_id("ccr"), "customer_id": d["customer"]["customer_id"],
        "invoice_id": d["invoice_id"], "tenant_id": d["tenant_id"], "invoice_external_id": d["external_id"],
        "source_payment_id": new_id("pay"), "currency": d["currency"], "amount_applied": amount,
        "credit_remaining": "0.00", "balance_remaining": balance, "settled": settled, "applied_at": now,
        "acknowledged_at": now, "balance_version": version,
    }  # fmt: skip
    return _money("dunning.CustomerCreditApplied.v1", data)


def pending(issued: dict, *, kind: str, payment_id: str | None = None, acknowledged_at=None) -> dict:
    d, now = issued["data"], utcnow()
    data = {
        "payment_id": payment_id or new_id("pay"), "invoice_id": d["invoice_id"], "tenant_id": d["tenant_id"],
        "invoice_external_id": d["external_id"], "kind": kind, "source": "gocardless",
        "source_reference": f"PM{new_id('x')[-10:]}", "currency": d["currency"], "amount": d["amount_due"],
        "since": now, "acknowledged_at": acknowledged_at or now,
    }  # fmt: skip
    return _money("dunning.PaymentPending.v1", data)


def pending_ended(started: dict, *, outcome: str) -> dict:
    p = started["data"]
    data = {k: p[k] for k in ("payment_id", "invoice_id", "tenant_id", "kind", "source_reference")}
    return _money("dunning.PaymentPendingEnded.v1", data | {"outcome": outcome, "ended_at": utcnow()})


async def fire(pool, **kwargs) -> int:
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False, **kwargs).fire_once()


async def issue(pool, h, **kwargs) -> dict:
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy(NOW_THEN_DAYS))
    issued = h.invoice_issued(issued_at=utcnow(), amount_due="1250.00", **kwargs)
    await h.apply(pool, issued)
    return issued


async def states(h, pool, invoice_id: str) -> dict[str, str]:
    return {r["stage"]: r["state"] for r in await h.timers(pool, invoice_id)}


async def days_pass(pool, invoice_id: str, days: int) -> None:
    """Time passes: every stage not fired moves `days` earlier (the settle lasted that long)."""
    await pool.execute(
        "UPDATE timers SET scheduled_at = scheduled_at - make_interval(days => $2) WHERE invoice_id = $1"
        " AND state <> 'fired'",
        invoice_id,
        days,
    )


async def invoice(pool, invoice_id: str):
    return await pool.fetchrow(
        "SELECT balance, settled, balance_version FROM invoices WHERE invoice_id = $1", invoice_id
    )


@pytest.mark.parametrize("takeback", ["refund", "chargeback", "unallocation"])
async def test_money_taken_back_reopens_a_paid_invoice_and_sends_the_next_stage_once_without_a_burst(pool, h, takeback):
    """soft was sent, the invoice paid (firm and final cancelled), then two days later the money
    leaves again: firm, owed during those days, goes now; final keeps its spacing; soft is not sent
    again; nothing is cancelled by the reopening."""
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    assert await fire(pool) == 1  # soft
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    await h.apply(pool, paid)
    assert await states(h, pool, invoice_id) == {"soft": "fired", "firm": "cancelled", "final": "cancelled"}
    await days_pass(pool, invoice_id, 2)
    before = {r["stage"]: r["scheduled_at"] for r in await h.timers(pool, invoice_id)}

    back = {
        "refund": lambda: reversed_(paid, amount="1250.00", balance="1250.00", settled=False, version=2),
        "chargeback": lambda: reversed_(paid, amount="1250.00", balance="1250.00", settled=False, version=2,
                                        kind="chargeback"),
        "unallocation": lambda: unallocated(paid, balance="1250.00", settled=False, version=2),
    }[takeback]()  # fmt: skip
    await h.apply(pool, back)

    row = await invoice(pool, invoice_id)
    assert (row["balance"], row["settled"], row["balance_version"]) == (Decimal("1250.00"), False, 2)
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    d = resumed["data"]
    assert (d["cause"], d["reason"], d["resume_mode"]) == ("settled", "reopened", "spaced")
    assert d["cause_id"] == (back["data"].get("reversal_id") or back["data"]["allocation_id"])
    assert [(s["stage"], s["state"]) for s in d["stages"]] == [("firm", "scheduled"), ("final", "scheduled")]
    after = {r["stage"]: r["scheduled_at"] for r in await h.timers(pool, invoice_id)}
    assert after["soft"] == before["soft"]
    assert after["final"] - after["firm"] == before["final"] - before["firm"]  # spaced: no burst
    assert len(await h.outbox_events(pool, CANCELLED, invoice_id)) == 1  # the settle's only

    assert await fire(pool) == 1  # firm, now; final two days later
    assert await fire(pool) == 0
    escalated = [e["data"]["stage"] for e in await h.outbox_events(pool, ESCALATED, invoice_id)]
    assert escalated == ["soft", "firm"]
    [firm] = [e for e in await h.outbox_events(pool, ESCALATED, invoice_id) if e["data"]["stage"] == "firm"]
    assert firm["data"]["invoice"]["balance"] == "1250.00"


async def test_a_partial_refund_of_an_open_invoice_moves_its_balance_only(pool, h):
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    paid = received(issued, amount="500.00", balance="750.00", settled=False, version=1)
    await h.apply(pool, paid)
    await h.apply(pool, reversed_(paid, amount="200.00", balance="950.00", settled=False, version=2))

    row = await invoice(pool, invoice_id)
    assert (row["balance"], row["settled"], row["balance_version"]) == (Decimal("950.00"), False, 2)
    assert await h.outbox_events(pool, RESUMED, invoice_id) == []
    assert await h.outbox_events(pool, CANCELLED, invoice_id) == []
    assert await fire(pool) == 1
    [soft] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert soft["data"]["invoice"]["balance"] == "950.00"
    ledger = await pool.fetch("SELECT amount FROM money_applied WHERE invoice_id = $1 ORDER BY amount", invoice_id)
    assert [r["amount"] for r in ledger] == [Decimal("-200.00"), Decimal("500.00")]  # what a promise, interest count


async def test_a_customer_credit_settles_as_a_payment_does(pool, h):
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    await h.apply(pool, credit_applied(issued, amount="1250.00", balance="0.00", settled=True, version=1))
    [cancelled] = await h.outbox_events(pool, CANCELLED, invoice_id)
    assert cancelled["data"]["reason"] == "invoice_settled"
    assert set((await states(h, pool, invoice_id)).values()) == {"cancelled"}
    assert await fire(pool) == 0


@pytest.mark.parametrize("order", ["in_order", "reversed"])
async def test_the_higher_balance_version_states_the_balance_whatever_order_events_arrive_in(pool, h, order):
    """A settle (v1) then a refund (v2): delivered in either order, the invoice ends open at the
    refund's balance; delivered late, the settle only records its money (it never settles)."""
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    refund = reversed_(paid, amount="400.00", balance="400.00", settled=False, version=2)
    for event in [paid, refund] if order == "in_order" else [refund, paid]:
        await h.apply(pool, event)

    row = await invoice(pool, invoice_id)
    assert (row["balance"], row["settled"], row["balance_version"]) == (Decimal("400.00"), False, 2)
    assert await pool.fetchval("SELECT sum(amount) FROM money_applied WHERE invoice_id = $1", invoice_id) == 850
    stopped = len(await h.outbox_events(pool, CANCELLED, invoice_id))
    assert stopped == (1 if order == "in_order" else 0)
    assert set((await states(h, pool, invoice_id)).values()) == {"scheduled"}


async def test_a_later_settle_holds_against_an_older_partial_payment_and_an_old_producers_event(pool, h):
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    await h.apply(pool, received(issued, amount="1250.00", balance="0.00", settled=True, version=3))
    await h.apply(pool, received(issued, amount="300.00", balance="950.00", settled=False, version=2))
    row = await invoice(pool, invoice_id)
    assert (row["balance"], row["settled"], row["balance_version"]) == (Decimal("0.00"), True, 3)
    assert await h.outbox_events(pool, RESUMED, invoice_id) == []
    # An old producer's event (no version) never unsettles: a settling one settles whatever its age.
    await h.apply(pool, received(issued, amount="10.00", balance="940.00", settled=False, version=None))
    assert (await invoice(pool, invoice_id))["settled"] is True


async def test_an_invoice_reopened_before_it_was_planned_is_planned_as_an_open_one(pool, h):
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy(NOW_THEN_DAYS))
    issued = h.invoice_issued(issued_at=utcnow(), amount_due="1250.00")
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    await h.apply(pool, paid)
    await h.apply(pool, reversed_(paid, amount="1250.00", balance="1250.00", settled=False, version=2))
    await h.apply(pool, issued)

    assert set((await states(h, pool, issued["subject"])).values()) == {"scheduled"}
    assert (await invoice(pool, issued["subject"]))["balance"] == Decimal("1250.00")
    assert await h.outbox_events(pool, RESUMED, issued["subject"]) == []
    assert await fire(pool) == 1


@pytest.mark.parametrize("outcome", ["failed", "succeeded"])
async def test_a_payment_still_processing_pauses_without_counting_as_paid_until_it_ends(pool, h, outcome):
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    started = pending(issued, kind="processing")
    await h.apply(pool, started)

    [paused] = await h.outbox_events(pool, PAUSED, invoice_id)
    assert (paused["data"]["cause"], paused["data"]["cause_id"]) == (
        "payment_processing",
        started["data"]["payment_id"],
    )
    assert [s["stage"] for s in paused["data"]["stages"]] == ["soft", "firm", "final"]
    assert (await invoice(pool, invoice_id))["balance"] == Decimal("1250.00")  # not counted as paid
    assert await fire(pool) == 0

    await h.apply(pool, pending_ended(started, outcome=outcome))
    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert (resumed["data"]["cause"], resumed["data"]["reason"]) == ("payment_processing", f"payment_{outcome}")
    if outcome == "succeeded":  # its PaymentReceived follows, in the same transaction at reconciliation
        paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1,
                        payment_id=started["data"]["payment_id"])  # fmt: skip
        await h.apply(pool, paid)
        assert await fire(pool) == 0
        assert set((await states(h, pool, invoice_id)).values()) == {"cancelled"}
    else:
        assert await fire(pool) == 1  # soft, owed during the pause
        assert (await states(h, pool, invoice_id))["soft"] == "fired"


async def test_a_chargeback_on_a_paid_invoice_keeps_a_refunded_reopening_paused_until_it_is_won(pool, h):
    """The chargeback on the paid invoice is recorded (nothing to pause yet); a partial refund then
    reopens it while the chargeback is open: its stages come back paused (DunningResumed reopened
    with none, DunningPaused chargeback), and resume only when the chargeback is won."""
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    await h.apply(pool, paid)
    disputed = pending(issued, kind="chargeback", payment_id=paid["data"]["payment_id"])
    await h.apply(pool, disputed)
    assert await h.outbox_events(pool, PAUSED, invoice_id) == []  # settled: nothing to pause
    await h.apply(pool, reversed_(paid, amount="250.00", balance="250.00", settled=False, version=2))

    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert (resumed["data"]["reason"], resumed["data"]["stages"]) == ("reopened", [])
    [paused] = await h.outbox_events(pool, PAUSED, invoice_id)
    assert (paused["data"]["cause"], paused["data"]["cause_id"]) == ("chargeback", paid["data"]["payment_id"])
    assert paused["data"]["cause_event_id"] == disputed["id"]
    assert [s["stage"] for s in paused["data"]["stages"]] == ["soft", "firm", "final"]
    assert await fire(pool) == 0

    await h.apply(pool, pending_ended(disputed, outcome="won"))
    resumed = await h.outbox_events(pool, RESUMED, invoice_id)
    assert [r["data"]["reason"] for r in resumed] == ["reopened", "chargeback_won"]
    assert await fire(pool) == 1  # soft: owed
    assert await fire(pool) == 0


async def test_a_lost_chargeback_ends_its_pause_and_its_reversal_reopens_and_resumes(pool, h):
    """Lost: PaymentPendingEnded (the pause ends; the invoice is still paid, nothing resumes) then
    PaymentReversed(chargeback) reopens it, with no pause left: dunning resumes."""
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    await h.apply(pool, paid)
    disputed = pending(issued, kind="chargeback", payment_id=paid["data"]["payment_id"])
    await h.apply(pool, disputed)
    await h.apply(pool, pending_ended(disputed, outcome="lost"))
    assert await h.outbox_events(pool, RESUMED, invoice_id) == []
    await h.apply(pool, reversed_(paid, amount="1250.00", balance="1250.00", settled=False, version=2,
                                  kind="chargeback"))  # fmt: skip

    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["reason"] == "reopened"
    assert [s["stage"] for s in resumed["data"]["stages"]] == ["soft", "firm", "final"]
    assert await pool.fetchval("SELECT count(*) FROM pauses WHERE state <> 'ended'") == 0
    assert await fire(pool) == 1


async def test_a_processing_then_charged_back_payment_pauses_twice(pool, h):
    """One payment: a debit processing (paused, then succeeded), later disputed: its chargeback's
    pause is its own (the same cause id, another pause)."""
    issued = await issue(pool, h)
    invoice_id = issued["subject"]
    started = pending(issued, kind="processing")
    await h.apply(pool, started)
    await h.apply(pool, pending_ended(started, outcome="succeeded"))
    pay_id = started["data"]["payment_id"]
    await h.apply(pool, received(issued, amount="250.00", balance="1000.00", settled=False, version=1,
                                 payment_id=pay_id))  # fmt: skip
    await h.apply(pool, pending(issued, kind="chargeback", payment_id=pay_id))
    causes = [p["data"]["cause"] for p in await h.outbox_events(pool, PAUSED, invoice_id)]
    assert causes == ["payment_processing", "chargeback"]
    assert await fire(pool) == 0


async def test_a_stage_due_after_a_payment_pending_was_acknowledged_never_fires_before_it_is_applied(pool, h):
    """The cancel guarantee for the new pause, through the gate: reconciliation's statement covers
    the stage's time and names the PaymentPending's offset; until the scheduler has applied it the
    gate stays shut, and once applied the stage is paused."""
    issued = await issue(pool, h)
    invoice_id, now = issued["subject"], utcnow()
    started = pending(issued, kind="processing", acknowledged_at=now - timedelta(seconds=30))
    await pool.execute("UPDATE timers SET scheduled_at = now() - interval '1 second' WHERE invoice_id = $1"
                       " AND stage = 'soft'", invoice_id)  # fmt: skip
    await pool.execute(
        "INSERT INTO watermark_statements (statement_id, source, watermark, payments_offsets, invoice_positions,"
        " offsets, computed_at) VALUES (gen_random_uuid(), 'reconciliation', $1, '{\"0\": 1}', '{}', '{}', $1)",
        now + timedelta(minutes=1),
    )
    gated_fire = partial(FiringLoop, gated=True, sources=("reconciliation",))
    schema = await pool.fetchval("SELECT current_schema()")
    assert await gated_fire(pool, schema).fire_once() == 0  # offset 0 (the PaymentPending) not applied yet

    await h.apply(pool, started)
    await pool.execute(
        "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('dunning.payments.v1', 0, 1)"
    )
    assert await gated_fire(pool, schema).fire_once() == 0  # applied: paused
    assert (await states(h, pool, invoice_id))["soft"] == "paused"

    await h.apply(pool, pending_ended(started, outcome="failed"))
    assert await gated_fire(pool, schema).fire_once() == 1  # the control: the same gate lets it through


async def test_below_the_minimum_balance_a_stage_is_skipped_and_a_refund_above_it_chases_again(pool, h):
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy({**NOW_THEN_DAYS, "minimum_balance": {"EUR": "100.00"}}))
    issued = h.invoice_issued(issued_at=utcnow(), amount_due="1250.00")
    await h.apply(pool, issued)
    invoice_id = issued["subject"]
    paid = received(issued, amount="1200.00", balance="50.00", settled=False, version=1)
    await h.apply(pool, paid)
    assert await fire(pool) == 0
    assert (await states(h, pool, invoice_id))["soft"] == "skipped"

    await h.apply(pool, reversed_(paid, amount="500.00", balance="550.00", settled=False, version=2))
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND stage = 'firm'", invoice_id)
    assert await fire(pool) == 1
    [firm] = await h.outbox_events(pool, ESCALATED, invoice_id)
    assert (firm["data"]["stage"], firm["data"]["invoice"]["balance"]) == ("firm", "550.00")


@pytest.mark.parametrize(
    ("mode", "fired_now", "skipped"),
    [
        pytest.param("spaced", ["firm"], [], id="spaced-next-owed-now"),
        pytest.param("latest_only", ["final"], ["firm"], id="latest_only-the-most-escalated-owed"),
        pytest.param("all_at_once", ["firm", "final"], [], id="all_at_once-every-owed"),
    ],
)
async def test_a_reopening_places_the_owed_stages_by_the_policys_resume_mode(pool, h, mode, fired_now, skipped):
    """Paid after soft, refunded five days later: firm and final were owed meanwhile."""
    async with pool.acquire() as conn:
        await save_policy(conn, h.TENANT, parse_policy({**NOW_THEN_DAYS, "pauses": {"resume": mode}}))
    issued = h.invoice_issued(issued_at=utcnow(), amount_due="1250.00")
    await h.apply(pool, issued)
    invoice_id = issued["subject"]
    assert await fire(pool) == 1
    paid = received(issued, amount="1250.00", balance="0.00", settled=True, version=1)
    await h.apply(pool, paid)
    await days_pass(pool, invoice_id, 5)
    await h.apply(pool, reversed_(paid, amount="1250.00", balance="1250.00", settled=False, version=2))

    [resumed] = await h.outbox_events(pool, RESUMED, invoice_id)
    assert resumed["data"]["resume_mode"] == mode
    await fire(pool)
    escalated = [e["data"]["stage"] for e in await h.outbox_events(pool, ESCALATED, invoice_id)]
    assert escalated[0] == "soft" and sorted(escalated[1:]) == sorted(fired_now)  # all_at_once: same instant
    assert [s for s, state in (await states(h, pool, invoice_id)).items() if state == "skipped"] == skipped
