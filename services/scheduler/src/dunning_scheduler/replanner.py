"""Re-planning invoices whose plan no longer fits: a due date or a customer's time zone changed, or a
policy version is applied to open invoices.

For each invoice the fresh plan (`planning.plan`, the planner's own rules) and the changes
(`replanning.replan`: pending stages move, what fired stays), then one statement writes every
invoice's changes (`repository.write_replanned`) and one StagesRescheduled per invoice whose stages
moved goes to the outbox, all in the caller's transaction. The caller holds the invoices' row locks
(as a settling payment takes them), and the timers are locked here before they are read, so a
payment waits and then cancels what this wrote, and a timer the firing loop fired just before is
seen fired and stays so.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import Customer
from dunning.logging import get_logger
from dunning_scheduler import messages, repository
from dunning_scheduler.planner import NO_SHAPING, TIMERS_CHANNEL, Shaping, shaping_for
from dunning_scheduler.planning import plan
from dunning_scheduler.policy import Policy
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.replanning import replan
from dunning_scheduler.repository import replans as replans_sql

log = get_logger(__name__)


async def replan_invoices(
    conn: asyncpg.Connection,
    invoices: Sequence[asyncpg.Record],
    *,
    reason: str,
    cause_event_id: str | None,
    changed_at: datetime,
    policies: ActivePolicies,
    policy: Policy | None = None,
) -> int:
    """Re-plan `invoices` (rows with repository.REPLAN_COLUMNS, locked by the caller) with the policy
    version each was planned with, or with `policy` (apply_to: the invoices then take its version).
    `changed_at`: when the change was accepted; a stage falling before it counts as past. Returns
    how many invoices had stages moved (one StagesRescheduled each)."""
    if not invoices:
        return 0
    timers = defaultdict(list)
    for row in await repository.lock_timers(conn, [i["invoice_id"] for i in invoices]):
        if row["kind"] == "policy":  # promise_broken and instalment reminders are no policy's stages
            timers[row["invoice_id"]].append(row)
    inputs = await replans_sql.planning_inputs(conn, [i["invoice_id"] for i in invoices])
    shapes = await _shapes(conn, policies, invoices, inputs)
    now = utcnow()
    written: list[list] = []
    planned_with: list[list] = []
    events = []
    for invoice in invoices:
        invoice_id, tenant_id = invoice["invoice_id"], invoice["tenant_id"]
        used = policy or await policies.version_of(
            conn,
            tenant_id,
            invoice["policy_version"],
            invoice["policy_is_default"],
            policy_key=inputs[invoice_id]["policy_key"] if invoice_id in inputs else None,
        )
        shaping, extra = shapes.get(invoice_id, (NO_SHAPING, {}))
        fresh = plan(
            used,
            due_date=invoice["due_date"],
            timezone_name=invoice["timezone"] or "UTC",
            issued_at=invoice["issued_at"],
            settled=False,
            now=now,
            accepted_at=changed_at,
            calendar=shaping.calendar,
            window=shaping.window,
            **extra,
        )
        changes = replan(
            timers[invoice_id],
            fresh,
            policy_version=used.version,
            reason=reason,
            paused=invoice["paused"],
            changed_at=changed_at,
        )
        written += [
            [
                c.stage_id,
                tenant_id,
                invoice_id,
                c.stage,
                c.sequence,
                c.channel,
                c.template,
                c.scheduled_at,
                c.state,
                c.reason,
                used.version,
                c.added,
            ]  # repository.REPLANNED_FIELDS
            for c in changes
        ]
        if policy is not None:
            planned_with.append([invoice_id, used.policy_id, used.version, used.is_default])
        if any(c.listed for c in changes):
            events.append(
                messages.stages_rescheduled(
                    tenant_id=tenant_id,
                    invoice_id=invoice_id,
                    reason=reason,
                    cause_event_id=cause_event_id,
                    policy_id=used.policy_id,
                    policy_version=used.version,
                    rescheduled_at=now,
                    changes=changes,
                )
            )
            log.info(
                "scheduler.stages.rescheduled",
                invoice_id=invoice_id,
                reason=reason,
                count=sum(c.listed for c in changes),
            )
    if written or planned_with:
        await repository.write_replanned(conn, written, planned_with, notify_channel=TIMERS_CHANNEL)
    if events:
        await outbox.add_many(conn, events)
    return len(events)


async def _shapes(
    conn: asyncpg.Connection, policies: ActivePolicies, invoices: Sequence[asyncpg.Record], inputs: dict
) -> dict[str, tuple[Shaping, dict]]:
    """Each invoice's calendar and window under its tenant's settings now (as the planner plans), and
    the keywords `plan` keys the customer's spread and the threshold by."""
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for invoice in invoices:
        by_tenant[invoice["tenant_id"]].append(invoice["invoice_id"])
    shapes: dict[str, tuple[Shaping, dict]] = {}
    for tenant_id, ids in by_tenant.items():
        rows = [inputs[i] for i in ids if i in inputs and inputs[i]["customer"] is not None]
        settings = await policies.config.settings_of(conn, tenant_id)
        windows = await policies.config.windows_of(conn, tenant_id, [r["customer"].get("customer_id") for r in rows])
        for row in rows:
            customer = Customer.from_data(row["customer"])
            shaping = shaping_for(settings, customer, windows.get(customer.customer_id), None)
            extra = {"customer_key": customer.customer_id, "balance": row["amount_due"], "currency": row["currency"]}
            shapes[row["invoice_id"]] = (shaping, extra)
    return shapes
