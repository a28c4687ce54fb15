"""Payment plans in the scheduler: the plan's invoices pause; its instalments get their own reminders
(timers on the plan's first invoice, from the policy's `payment_plans`); money paid on the plan's
invoices covers instalments in order (`dunning.plans.allocate`, the rule invoice-ingest shows too),
cancelling a covered instalment's reminders; an instalment not covered at its deadline (the end of
its due date in the customer's zone plus the grace, judged under the gate by the deadline loop)
breaks the plan: InstalmentMissed, PaymentPlanBroken, the remaining reminders cancelled and dunning
resumed on every invoice of the plan. All covered: PaymentPlanCompleted.
"""

from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import PaymentPlanAgreed, PaymentPlanCancelled, RescheduledStage
from dunning.events import Event
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.plans import InstalmentState, allocate, paid_towards
from dunning_scheduler import messages, pauser, repository
from dunning_scheduler.planning import UTC_ZONE, zone_for
from dunning_scheduler.policy import Policy
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import pauses as sql

log = get_logger(__name__)
INSTALMENT = "instalment"
INSTALMENT_SEQUENCE = 1000  # instalment n's reminders: 1000 + 10 n + index, after every policy stage


async def agreed(conn: asyncpg.Connection, event: Event[PaymentPlanAgreed], *, policies: ActivePolicies) -> None:
    p = event.data
    await sql.lock_customer(conn, p.customer_id)
    invoices = [{"invoice_id": i.invoice_id, "balance": str(i.balance)} for i in p.invoices]
    instalments = [{"number": i.number, "due_date": i.due_date.isoformat(), "amount": str(i.amount)}
                   for i in p.instalments]  # fmt: skip
    if not await repository.insert_plan(
        conn,
        plan_id=p.plan_id,
        tenant_id=p.tenant_id,
        customer_id=p.customer_id,
        currency=p.currency,
        total=p.total,
        invoices=invoices,
        instalments=instalments,
        acknowledged_at=p.acknowledged_at,
    ):
        log.info("scheduler.plan.known", plan_id=p.plan_id)
        return
    await pauser.pause(
        conn,
        tenant_id=p.tenant_id,
        cause="payment_plan",
        cause_id=p.plan_id,
        cause_event_id=event.id,
        since=p.acknowledged_at,
        invoice_ids=[i.invoice_id for i in p.invoices],
        customer_id=p.customer_id,
    )
    first = p.invoices[0].invoice_id
    planned = await repository.invoice_for_pause(conn, first)  # the plan's reminders follow its first invoice's policy
    if planned is not None and planned["tenant_id"] == p.tenant_id:
        policy = await pauser.policy_of(conn, policies, planned)
    else:
        policy = (policies.get(p.tenant_id) or await policies.load(conn, p.tenant_id)).policy
    zone_name = await sql.timezone_of(conn, first, p.customer_id)
    now = utcnow()
    held = await sql.held(conn, first)  # another pause (a hold, a dispute) stops its reminders too
    rows: list[list] = []
    deadlines: list[tuple] = []
    count = len(p.instalments)
    for inst in p.instalments:
        context = {
            "kind": INSTALMENT,
            "plan_id": p.plan_id,
            "number": str(inst.number),
            "instalments": str(count),
            "amount": str(inst.amount),
            "due_date": inst.due_date.isoformat(),
            "currency": p.currency,
        }
        rows += _reminders(policy, p.tenant_id, first, inst.number, inst.due_date, zone_name, context, now, held)
        at = pauser.end_of_day(inst.due_date, zone_name, policy, grace="plan")
        deadlines.append(("instalment", p.plan_id, inst.number, p.tenant_id, at.isoformat(), True))
    await sql.insert_extra_timers(conn, rows)
    await repository.add_deadlines(conn, deadlines)
    await check(conn, p.plan_id, policies=policies)  # money paid meanwhile may cover some already
    log.info("scheduler.plan.agreed", plan_id=p.plan_id, instalments=count, reminders=len(rows))


def _reminders(
    policy: Policy,
    tenant_id: str,
    invoice_id: str,
    number: int,
    due: date,
    zone_name: str | None,
    context: dict,
    now: datetime,
    held: bool,
) -> list[list]:
    """Instalment `number`'s reminders (sql.EXTRA_FIELDS rows): one per policy reminder and channel,
    at the due date's send_time in the customer's zone plus the offset; one already past is skipped."""
    zone = zone_for(zone_name or "UTC") or UTC_ZONE
    anchor = datetime.combine(due, policy.send_time, tzinfo=zone)
    base = new_id("stg")
    rows: list[list] = []
    for index, reminder in enumerate(policy.plan_reminders):
        name = reminder.name.removeprefix(f"{INSTALMENT}_")
        stage = f"{INSTALMENT}_{number}_{name}"[:40]
        at = reminder.offset.add_to(anchor).astimezone(UTC)
        state = "skipped" if at <= now else ("paused" if held else "scheduled")
        for channel in policy.plan_channels:
            rows.append(
                [f"{base}{len(rows):02d}", tenant_id, invoice_id, stage, INSTALMENT_SEQUENCE + 10 * number + index,
                 channel, reminder.name, at.isoformat(), state, policy.version, INSTALMENT, context]
            )  # fmt: skip
    return rows


def _states(plan: asyncpg.Record) -> tuple[list[InstalmentState], Decimal]:
    before = [Decimal(i["balance"]) for i in plan["invoices"]]
    now = [Decimal(b) for b in plan["balances_now"]]
    paid = paid_towards(before, now)
    instalments = [(i["number"], date.fromisoformat(i["due_date"]), Decimal(i["amount"])) for i in plan["instalments"]]
    return allocate(instalments, paid), paid


async def paid(conn: asyncpg.Connection, invoice_id: str, *, policies: ActivePolicies) -> None:
    """Money applied to `invoice_id`: check every active plan it is in."""
    for plan_id in await repository.active_plans_of(conn, invoice_id):
        await check(conn, plan_id, policies=policies)


async def check(conn: asyncpg.Connection, plan_id: str, *, policies: ActivePolicies) -> None:
    """Cancel the reminders of the instalments covered now; all covered: the plan is completed."""
    plan = await repository.lock_plan(conn, plan_id)
    if plan is None or plan["status"] != "active":
        return
    states, _ = _states(plan)
    covered = [s.number for s in states if s.covered]
    if covered:
        await repository.cancel_instalments(conn, plan["first_invoice_id"], plan_id, covered, "instalment_paid")
    if len(covered) < len(states):
        return
    await repository.finish_plan(conn, plan_id, "completed")
    await repository.drop_deadlines(conn, plan_id)
    await outbox.add(conn, messages.payment_plan_completed(plan, at=utcnow()))
    # Paid in full: its invoices are settled (terminal stops). One still open (its amount was raised
    # meanwhile) is no longer under the plan and resumes quietly (no DunningResumed reason fits).
    await pauser.end(conn, cause_id=plan_id, reason="payment_plan_completed", policies=policies, announce=False)
    log.info("scheduler.plan.completed", plan_id=plan_id)


async def on_deadline(conn: asyncpg.Connection, deadline: asyncpg.Record, *, policies: ActivePolicies) -> None:
    """Instalment `number` of the plan at its deadline: not covered, the plan is broken."""
    plan_id, number = deadline["cause_id"], deadline["number"]
    plan = await repository.lock_plan(conn, plan_id)
    if plan is None or plan["status"] != "active":
        return
    states, paid_total = _states(plan)
    state = next((s for s in states if s.number == number), None)
    if state is None or state.covered:
        return
    now = utcnow()
    remaining = sum((s.amount - s.paid for s in states), Decimal(0))
    await outbox.add_many(
        conn,
        [
            messages.instalment_missed(
                plan,
                number=number,
                due=state.due_date,
                amount=state.amount,
                paid=paid_total,
                deadline=deadline["at"],
                at=now,
            ),  # fmt: skip
            messages.payment_plan_broken(plan, number=number, remaining=remaining, at=now),
        ],
    )
    await _finish(conn, plan, "broken", "payment_plan_broken", policies=policies)
    log.info("scheduler.plan.broken", plan_id=plan_id, missed=number)


async def cancelled(conn: asyncpg.Connection, event: Event[PaymentPlanCancelled], *, policies: ActivePolicies) -> None:
    p = event.data
    await sql.lock_customer(conn, p.customer_id)
    plan = await repository.lock_plan(conn, p.plan_id)
    if plan is None or plan["status"] != "active":
        log.info("scheduler.plan.not_active", plan_id=p.plan_id)
        return
    await _finish(conn, plan, "cancelled", "payment_plan_cancelled", policies=policies)
    log.info("scheduler.plan.cancelled", plan_id=p.plan_id)


async def _finish(conn: asyncpg.Connection, plan: asyncpg.Record, status: str, reason: str, *,
                  policies: ActivePolicies) -> None:  # fmt: skip
    """A plan broken or cancelled: its remaining reminders cancelled, dunning resumed on its invoices."""
    plan_id, first = plan["plan_id"], plan["first_invoice_id"]
    await repository.finish_plan(conn, plan_id, status)
    gone = await repository.cancel_instalments(conn, first, plan_id, [], reason)
    listed = [RescheduledStage(r["stage_id"], r["stage"], r["sequence"], r["channel"], r["scheduled_at"], None,
                               "cancelled") for r in gone]  # fmt: skip
    await pauser.end(conn, cause_id=plan_id, reason=reason, policies=policies, cancelled={first: listed})
