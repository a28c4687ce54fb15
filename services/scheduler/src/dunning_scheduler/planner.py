"""InvoiceIssued -> the invoice's plan, for one event or a batch of them, in one statement.

For each invoice: the tenant's active policy (from memory: the `ActivePolicies` bootstrap hands in), the
timers (`planning.plan`) and the DunningPlanned event (`messages.dunning_planned`). Then one statement
(`repository.plan_invoices`) stores the snapshots, the timers and the outbox rows, and reports the
invoices whose tenant's policy changed meanwhile: those are planned again with the new version.
Round trips: one per call, plus one the first time a tenant is seen, one per policy change, and two
for an invoice whose payment arrived first (its plan is all `cancelled`, written separately).
"""

from datetime import date, datetime
from typing import Any

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import DunningPlanned, InvoiceIssued, instant_text, topic
from dunning.events import Event, dumps, envelope
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning_scheduler import messages, repository
from dunning_scheduler.planning import plan, zone_for
from dunning_scheduler.policy_store import ActivePolicies, ActiveVersion
from dunning_scheduler.repository import pauses as pauses_sql

log = get_logger(__name__)
TIMERS_CHANNEL = "scheduler_timers"  # NOTIFY <channel>_<schema> wakes the firing loop
_MAX_POLICY_RELOADS = 10


class PlanBatch:
    """The rows of one planning statement (`repository.plan_invoice_row`), and what each invoice's plan
    needs afterwards."""

    def __init__(self, now: datetime):
        self.now = now
        self.invoices: list[list[Any]] = []
        self.plans: list[tuple[ActiveVersion, date, datetime, list]] = []  # (policy, due, issued_at, timers)

    def add(self, n: int, event: Event[InvoiceIssued], active: ActiveVersion) -> None:
        data, policy, now = event.data, active.policy, self.now
        invoice_id, tenant_id = event.subject, event.tenant_id
        due_date, issued_at = data.due_date, data.issued_at
        timezone_name = data.customer.timezone
        if zone_for(timezone_name) is None:
            log.warning(
                "scheduler.invoice.unknown_timezone", invoice_id=invoice_id, timezone=timezone_name, fallback="UTC"
            )
        timers = plan(
            policy,
            due_date=due_date,
            timezone_name=timezone_name,
            issued_at=issued_at,
            settled=False,
            now=now,
            accepted_at=event.time,
        )  # past-ness as of ingest, not of planning
        planned = envelope(
            messages.dunning_planned(
                tenant_id=tenant_id,
                invoice_id=invoice_id,
                policy_id=policy.policy_id,
                policy_version=policy.version,
                planned_at=now,
                timers=timers,
            )
        )
        self.invoices.append(
            repository.plan_invoice_row(
                n=n,
                invoice_id=invoice_id,
                tenant_id=tenant_id,
                external_id=data.external_id,
                number=data.number,
                currency=data.currency,
                amount_due=str(data.amount_due),
                issue_date=data.issue_date.isoformat(),
                due_date=data.due_date.isoformat(),
                payment_url=data.payment_url,
                customer=data.customer.to_data(),
                issued_at=instant_text(data.issued_at),
                issued_event_id=event.id,
                policy_id=policy.policy_id,
                policy_version=policy.version,
                stored_version=active.stored_version,
                stored_at=active.stored_at,
                due_now=any(t.state == "scheduled" and t.scheduled_at <= now for t in timers),
                lane=outbox.lane_of(invoice_id),
                event_id=planned["id"],
                headers=outbox.headers_of(planned),
                payload=dumps(planned).decode(),
                timers=timers,
                gate_partition=event.partition,
                gate_offset=event.offset,  # the payments gate waits for reconciliation
                customer_as_of=instant_text(event.time),  # an older CustomerUpdated never overwrites it
            )
        )
        self.plans.append((active, due_date, issued_at, timers))


async def plan_invoices(
    conn: asyncpg.Connection, events: list[Event[InvoiceIssued]], *, policies: ActivePolicies
) -> None:
    """Plan every InvoiceIssued in `events`, in order (inside the caller's transaction), with the
    tenants' active policies kept in `policies` (bootstrap's, one per process). An invoice
    planned before (a redelivery or a second InvoiceIssued) is left as it is; an event whose data
    disagrees with its envelope, or for another tenant's invoice, raises Rejected."""
    for event in events:
        check_envelope(event)
    pending, planned = events, 0
    while pending:  # one statement may not touch an invoice twice: a repeat goes in the next one
        seen: set[str] = set()
        distinct: list[Event] = []
        later: list[Event] = []
        for event in pending:
            (later if event.subject in seen else distinct).append(event)
            seen.add(event.subject)
        planned += await _plan_distinct(conn, distinct, policies, log_each=len(events) == 1)
        pending = later
    if len(events) > 1:  # a batch: one line for all (each invoice at debug level)
        log.info("scheduler.invoices.planned", count=planned, events=len(events))


async def _plan_distinct(
    conn: asyncpg.Connection, events: list[Event], policies: ActivePolicies, *, log_each: bool
) -> int:
    todo, planned = events, 0
    for _ in range(_MAX_POLICY_RELOADS):
        batch = PlanBatch(utcnow())
        for n, event in enumerate(todo):
            active = policies.get(event.tenant_id) or await policies.load(conn, event.tenant_id)
            batch.add(n, event, active)
        await pauses_sql.share_customers(conn, [e.data.customer.customer_id for e in todo])  # vs customer holds
        rows = await repository.plan_invoices(
            conn,
            batch.invoices,
            planned_at=batch.now,
            topic=topic(DunningPlanned),
            event_type=DunningPlanned.TYPE,
            notify_channel=TIMERS_CHANNEL,
        )
        stale: list[Event] = []
        for row in rows:
            event, n = todo[row["n"]], row["n"]
            if not row["policy_current"]:
                stale.append(event)
                continue
            if row["settled"] is None:
                await _not_planned(conn, event)
                continue
            active, due_date, issued_at, timers = batch.plans[n]
            if row["settled"]:
                timers = await _plan_settled(conn, event, active, due_date, issued_at, timers, batch.now)
            elif row["paused"]:
                await _planned_paused(conn, event)
            planned += 1
            if log_each:
                log.info(
                    "scheduler.invoice.planned",
                    invoice_id=event.subject,
                    policy_id=active.policy.policy_id,
                    policy_version=active.policy.version,
                    timers=len(timers),
                    settled=row["settled"],
                    skipped=sum(t.state == "skipped" for t in timers),
                )
            else:
                log.debug("scheduler.invoice.planned", invoice_id=event.subject, settled=row["settled"])
        if not stale:
            return planned
        for tenant_id in {event.tenant_id for event in stale}:
            await policies.load(conn, tenant_id)
        todo = stale
    raise RuntimeError("the tenant's policy kept changing while planning; retry")


async def _plan_settled(
    conn: asyncpg.Connection,
    event: Event[InvoiceIssued],
    active: ActiveVersion,
    due_date: date,
    issued_at: datetime,
    opened: list,
    now: datetime,
) -> list:
    """The invoice's payment arrived first: the plan shows what would have happened, all cancelled."""
    policy = active.policy
    timers = plan(
        policy,
        due_date=due_date,
        timezone_name=event.data.customer.timezone,
        issued_at=issued_at,
        settled=True,
        now=now,
        stage_ids=[t.stage_id for t in opened],
    )
    await repository.insert_timers(conn, event.tenant_id, event.subject, policy.version, timers)
    await outbox.add(
        conn,
        messages.dunning_planned(
            tenant_id=event.tenant_id,
            invoice_id=event.subject,
            policy_id=policy.policy_id,
            policy_version=policy.version,
            planned_at=now,
            timers=timers,
        ),
    )
    return timers


async def _planned_paused(conn: asyncpg.Connection, event: Event[InvoiceIssued]) -> None:
    """A pause covered the invoice before it was planned (a customer hold, or a hold placed on it
    before its InvoiceIssued arrived): its timers were written paused; say so (DunningPaused)."""
    cover = await pauses_sql.covering_pause(conn, event.subject)
    assert cover is not None, "the planning statement saw it"
    rows = await repository.timers_of(conn, event.tenant_id, event.subject)
    await outbox.add(
        conn,
        messages.dunning_paused(
            tenant_id=event.tenant_id,
            invoice_id=event.subject,
            cause=cover["cause"],
            cause_id=cover["cause_id"],
            cause_event_id=str(cover["cause_event_id"]),
            paused_at=utcnow(),
            rows=[r for r in rows if r["state"] == "paused"],
        ),
    )
    log.info("scheduler.invoice.planned_paused", invoice_id=event.subject, cause=cover["cause"])


async def _not_planned(conn: asyncpg.Connection, event: Event) -> None:
    existing = await repository.invoice_owner(conn, event.subject)
    if existing is not None and existing["tenant_id"] != event.tenant_id:
        raise Rejected(f"invoice {event.subject} belongs to another tenant")
    log.info("scheduler.invoice.already_planned", invoice_id=event.subject)
