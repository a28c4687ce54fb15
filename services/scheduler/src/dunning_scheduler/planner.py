"""InvoiceIssued -> the invoice's plan, for one event or a batch of them, in one statement.

For each invoice: the policy the tenant's segment rules choose (`segments.choose`; the tenant's
default policy without rules), from memory (the `ActivePolicies` bootstrap hands in), the timers
(`planning.plan`, with the customer's working calendar and send window from the tenant's settings)
and the DunningPlanned event (`messages.dunning_planned`, with the segment rule and its reason). Then
one statement (`repository.plan_invoices`) stores the snapshots (with the policy's key and the
segment), the timers and the outbox rows, and reports the invoices whose policy changed meanwhile:
those are planned again with the new version.
Round trips: one per call, plus one the first time a policy is seen, one per policy change, the
tenant's settings and rules once per 2 s (`settings_store.TenantConfig`), the customers' own windows
once per batch for a tenant that has any, the payment history once per batch for rules that need it,
and two for an invoice whose payment arrived first (its plan is all `cancelled`, written separately).
"""

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import Customer, DunningPlanned, InvoiceIssued, instant_text, topic
from dunning.events import Event, dumps, envelope
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning_scheduler import messages, repository
from dunning_scheduler.calendars import WorkingCalendar
from dunning_scheduler.planning import PlannedTimer, plan, zone_for
from dunning_scheduler.policy_store import DEFAULT_KEY, ActivePolicies, ActiveVersion
from dunning_scheduler.repository import pauses as pauses_sql
from dunning_scheduler.segments import History, SegmentRules, choose, needs_history
from dunning_scheduler.settings_store import history_of
from dunning_scheduler.tenant_settings import DEFAULT_SETTINGS, TenantSettings, calendar_for
from dunning_scheduler.windows import SendWindow

log = get_logger(__name__)
TIMERS_CHANNEL = "scheduler_timers"  # NOTIFY <channel>_<schema> wakes the firing loop
WAKE_AHEAD = timedelta(seconds=repository.WAKE_AHEAD_SECONDS)
_MAX_POLICY_RELOADS = 10


@dataclass(frozen=True)
class Shaping:
    """What shapes an invoice's plan besides its policy: the customer's working calendar and send
    window (None: every day, any time), and the segment rule that chose the policy."""

    calendar: WorkingCalendar | None = None
    window: SendWindow | None = None
    segment: dict[str, str] | None = None  # {rule, reason}; None: the tenant has no rules


NO_SHAPING = Shaping()


def shaping_for(
    settings: TenantSettings, customer, window: SendWindow | None, segment: dict[str, str] | None
) -> Shaping:
    """The calendar and window planning uses for one customer under the tenant's settings (none
    stored, or the defaults: neither, exactly as before settings existed); `window`: the customer's own."""
    if window is None and replace(settings, version=0) == DEFAULT_SETTINGS:
        return Shaping(segment=segment) if segment else NO_SHAPING
    return Shaping(calendar_for(settings, customer), window or settings.send_window, segment)


class Plannable(Protocol):
    """What planning reads of an invoice (an InvoiceIssued's data, or a preview's sample)."""

    @property
    def due_date(self) -> date: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def amount_due(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def customer(self) -> Customer: ...


def plan_for(
    policy,
    *,
    data: Plannable,
    shaping: Shaping,
    settled: bool,
    now: datetime,
    accepted_at: datetime | None = None,
    stage_ids: list[str] | None = None,
) -> list[PlannedTimer]:
    """`planning.plan` for an invoice as the planner plans it (the preview calls it too, with an
    InvoiceIssued-shaped sample): the customer's calendar and window, keyed by the customer."""
    return plan(
        policy,
        due_date=data.due_date,
        timezone_name=data.customer.timezone,
        issued_at=data.issued_at,
        settled=settled,
        now=now,
        stage_ids=stage_ids,
        accepted_at=accepted_at,
        calendar=shaping.calendar,
        window=shaping.window,
        customer_key=data.customer.customer_id,
        balance=data.amount_due,
        currency=data.currency,
    )


class PlanBatch:
    """The rows of one planning statement (`repository.plan_invoice_row`), and what each invoice's plan
    needs afterwards."""

    def __init__(self, now: datetime):
        self.now = now
        self.invoices: list[list[Any]] = []
        self.plans: list[tuple[ActiveVersion, Shaping, list]] = []  # (policy, calendar/window/segment, timers)

    def add(self, n: int, event: Event[InvoiceIssued], active: ActiveVersion, shaping: Shaping = NO_SHAPING) -> None:
        data, policy, now = event.data, active.policy, self.now
        invoice_id, tenant_id = event.subject, event.tenant_id
        timezone_name = data.customer.timezone
        if zone_for(timezone_name) is None:
            log.warning(
                "scheduler.invoice.unknown_timezone", invoice_id=invoice_id, timezone=timezone_name, fallback="UTC"
            )
        timers = plan_for(
            policy, data=data, shaping=shaping, settled=False, now=now, accepted_at=event.time
        )  # past-ness as of ingest, not of planning
        planned = envelope(
            messages.dunning_planned(
                tenant_id=tenant_id,
                invoice_id=invoice_id,
                policy_id=policy.policy_id,
                policy_version=policy.version,
                planned_at=now,
                timers=timers,
                segment=shaping.segment,
            )
        )
        segment = shaping.segment or {}
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
                due_now=any(t.state == "scheduled" and t.scheduled_at <= now + WAKE_AHEAD for t in timers),
                lane=outbox.lane_of(invoice_id),
                event_id=planned["id"],
                headers=outbox.headers_of(planned),
                payload=dumps(planned).decode(),
                timers=timers,
                gate_partition=event.partition,
                gate_offset=event.offset,  # the payments gate waits for reconciliation
                customer_as_of=instant_text(event.time),  # an older CustomerUpdated never overwrites it
                policy_key=active.policy_key,
                segment_rule=segment.get("rule"),
                segment_reason=segment.get("reason"),
            )
        )
        self.plans.append((active, shaping, timers))


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


@dataclass(frozen=True)
class TenantShaping:
    """One tenant's settings, rules, customer windows and payment history, read once per batch."""

    settings: TenantSettings
    rules: SegmentRules
    windows: dict[str, SendWindow]
    history: dict[str, History]

    def choose(self, data: Plannable) -> tuple[str, Shaping]:
        """The policy key (DEFAULT_KEY: the tenant's default) and the shaping of the invoice's plan."""
        customer = data.customer
        segment = None
        key = DEFAULT_KEY
        if self.rules.version > 0:
            policy_id, rule, reason = choose(
                self.rules,
                customer=customer,
                currency=data.currency,
                amount_due=data.amount_due,
                history=self.history.get(customer.customer_id),
            )
            key, segment = policy_id or DEFAULT_KEY, {"rule": rule, "reason": reason}
        return key, shaping_for(self.settings, customer, self.windows.get(customer.customer_id), segment)


async def tenant_shaping(
    conn: asyncpg.Connection, policies: ActivePolicies, tenant_id: str, customer_ids: list[str]
) -> TenantShaping:
    config = policies.config
    settings = await config.settings_of(conn, tenant_id)
    rules = await config.rules_of(conn, tenant_id)
    windows = await config.windows_of(conn, tenant_id, customer_ids)
    wanted = needs_history(rules) if rules.version > 0 else 0
    history = await history_of(conn, tenant_id, customer_ids, wanted) if wanted else {}
    return TenantShaping(settings, rules, windows, history)


async def _plan_distinct(
    conn: asyncpg.Connection, events: list[Event], policies: ActivePolicies, *, log_each: bool
) -> int:
    todo, planned = events, 0
    customers: dict[str, list[str]] = {}
    for event in events:
        customers.setdefault(event.tenant_id, []).append(event.data.customer.customer_id)
    tenants = {t: await tenant_shaping(conn, policies, t, ids) for t, ids in customers.items()}
    for _ in range(_MAX_POLICY_RELOADS):
        batch = PlanBatch(utcnow())
        for n, event in enumerate(todo):
            key, shaping = tenants[event.tenant_id].choose(event.data)
            active = policies.get(event.tenant_id, key) or await policies.load(conn, event.tenant_id, key)
            if active.policy_key != key and shaping.segment is not None:  # a named policy deleted meanwhile
                shaping = Shaping(
                    shaping.calendar,
                    shaping.window,
                    {**shaping.segment, "reason": f"{shaping.segment['reason']} (policy {key} not found: the default)"},
                )
            batch.add(n, event, active, shaping)
        await pauses_sql.share_customers(conn, [e.data.customer.customer_id for e in todo])  # vs customer holds
        await pauses_sql.lock_invoices(conn, [e.subject for e in todo])  # vs a pause placed or ended now
        rows = await repository.plan_invoices(
            conn,
            batch.invoices,
            planned_at=batch.now,
            topic=topic(DunningPlanned),
            event_type=DunningPlanned.TYPE,
            notify_channel=TIMERS_CHANNEL,
        )
        stale: list[Event] = []
        reload: set[tuple[str, str]] = set()
        for row in rows:
            event, n = todo[row["n"]], row["n"]
            active, shaping, timers = batch.plans[n]
            if not row["policy_current"]:
                stale.append(event)
                reload.add((event.tenant_id, active.policy_key))
                continue
            if row["settled"] is None:
                await _not_planned(conn, event)
                continue
            if row["settled"]:
                timers = await _plan_settled(conn, event, active, shaping, timers, batch.now)
            elif row["paused"]:
                await _planned_paused(conn, event)
            planned += 1
            if log_each:
                log.info(
                    "scheduler.invoice.planned",
                    invoice_id=event.subject,
                    policy_id=active.policy.policy_id,
                    policy_version=active.policy.version,
                    segment_rule=(shaping.segment or {}).get("rule"),
                    timers=len(timers),
                    settled=row["settled"],
                    skipped=sum(t.state == "skipped" for t in timers),
                )
            else:
                log.debug("scheduler.invoice.planned", invoice_id=event.subject, settled=row["settled"])
        if not stale:
            return planned
        for tenant_id, key in reload:
            await policies.load(conn, tenant_id, key)
        todo = stale
    raise RuntimeError("the tenant's policy kept changing while planning; retry")


async def _plan_settled(
    conn: asyncpg.Connection,
    event: Event[InvoiceIssued],
    active: ActiveVersion,
    shaping: Shaping,
    opened: list,
    now: datetime,
) -> list:
    """The invoice's payment arrived first: the plan shows what would have happened, all cancelled."""
    policy = active.policy
    timers = plan_for(
        policy,
        data=event.data,
        shaping=shaping,
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
            segment=shaping.segment,
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
