"""The preview (POST /v1/policy/preview): what a policy and settings would send, changing nothing.

It is computed by the functions planning and firing use, so what it says is what is later sent:
each invoice's policy is chosen as the planner chooses it (`planner.TenantShaping.choose`: the
segment rules, with the customer's real payment history) unless the request names one, it is
planned by `planner.plan_for` (`planning.plan` with the customer's calendar and window, the preview's
`now` as the moment the invoice enters dunning), and the planned timers of each customer are run
forward by `firing_rules.simulate` (window re-check, caps and quiet period with the customer's real
contacts, consolidation into notices). Charges are projected with `charges` (each stage's fee, the
interest accrued to the stage's local date).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dunning.clock import utcnow
from dunning.contracts import Customer
from dunning_scheduler import repository
from dunning_scheduler.calendars import EVERY_DAY
from dunning_scheduler.firing_rules import ContactLog, Due, simulate
from dunning_scheduler.planner import Shaping, TenantShaping, plan_for, shaping_for
from dunning_scheduler.planning import UTC_ZONE, PlannedTimer, zone_for
from dunning_scheduler.policy import Policy, PolicyError, parse_policy
from dunning_scheduler.policy_schemas import PreviewInvoice
from dunning_scheduler.policy_store import ActivePolicies, named_policy
from dunning_scheduler.preview_charges import ProjectedCharges
from dunning_scheduler.repository import charges as charges_sql
from dunning_scheduler.repository import contacts as contacts_sql
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.segments import NO_RULES, needs_history, parse_rules
from dunning_scheduler.settings_store import history_of
from dunning_scheduler.tenant_settings import (
    DEFAULT_SETTINGS,
    SettingsError,
    TenantSettings,
    field_errors,
    parse_settings,
    parse_window,
)

MAX_INVOICES = 200
FIRST_YEAR, LAST_YEAR = 1970, 2100  # offsets and calendars stay far inside what dates can hold


class PreviewRequest(BaseModel):
    """The preview's body (see `policy_schemas.PREVIEW_EXAMPLE`)."""

    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Any] | None = Field(None, description="Try this document for every invoice.")
    policy_id: str | None = Field(None, description="Or this stored named policy; neither: the rules choose.")
    settings: dict[str, Any] | None = Field(None, description="Try these tenant settings instead of the stored ones.")
    invoices: list[PreviewInvoice] = Field([], max_length=MAX_INVOICES)
    invoice_ids: list[str] = Field([], max_length=MAX_INVOICES, description="Open invoices known to the scheduler.")
    now: str | None = Field(
        None, description="The moment the invoices enter dunning, RFC 3339 with its offset (default now)."
    )


class PreviewError(ValueError):
    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))
        self.errors = errors


@dataclass(frozen=True)
class Sample:
    """An invoice as planning reads it (`planner.Plannable`), and what the answer echoes."""

    due_date: date
    issued_at: datetime
    amount_due: Decimal
    balance: Decimal
    currency: str
    customer: Customer
    reference: str | None
    invoice_id: str | None
    known_customer: bool
    invoice_ledger: tuple[tuple[date, Decimal], ...] = ()


def _prefixed(errors: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    return [{**e, "field": f"{prefix}.{e['field']}" if e["field"] != "(body)" else prefix} for e in errors]


def _sample(n: int, inv: PreviewInvoice, now: datetime) -> Sample:
    where = f"invoices.{n}"
    try:
        due_date = date.fromisoformat(inv.due_date)
        if not FIRST_YEAR <= due_date.year <= LAST_YEAR:
            raise ValueError
    except ValueError:
        message = f"must be a date YYYY-MM-DD from {FIRST_YEAR} to {LAST_YEAR}"
        raise PreviewError([{"field": f"{where}.due_date", "message": message}]) from None
    c = inv.customer
    if zone_for(c.timezone) is None:
        raise PreviewError([{"field": f"{where}.customer.timezone", "message": "must be an IANA time zone"}])
    customer = Customer(
        c.customer_id or f"preview_{n}",
        "preview",
        "Preview",
        "preview@example.com",
        c.locale,
        c.timezone,
        c.country,
        c.subdivision,
        tuple(c.tags) if c.tags else None,
        c.attributes or None,
    )
    amount = Decimal(inv.amount_due)
    return Sample(due_date, now, amount, amount, inv.currency, customer, inv.reference, None, c.customer_id is not None)


async def _stored_sample(conn: asyncpg.Connection, tenant_id: str, n: int, invoice_id: str) -> Sample:
    row = await repository.invoice_of(conn, tenant_id, invoice_id)
    if row is None or row["planned_at"] is None:
        raise PreviewError(
            [{"field": f"invoice_ids.{n}", "message": f"no invoice {invoice_id} is known to the scheduler"}]
        )
    ledger = tuple(
        (r["acknowledged_at"].astimezone(zone_for(row["customer"].get("timezone", "UTC")) or UTC_ZONE).date(),
         r["amount"])
        for r in await charges_sql.money_applied(conn, invoice_id)
    )  # fmt: skip
    return Sample(
        row["due_date"],
        row["issued_at"],
        row["amount_due"],
        row["balance"],
        row["currency"],
        Customer.from_data(row["customer"]),
        None,
        invoice_id,
        True,
        ledger,
    )


async def _settings(conn: asyncpg.Connection, tenant_id: str, document: dict | None) -> TenantSettings:
    if document is not None:
        try:
            return parse_settings(document)
        except SettingsError as exc:
            raise PreviewError(_prefixed(exc.errors, "settings")) from None
    row = await settings_sql.latest(conn, settings_sql.SETTINGS, tenant_id)
    return DEFAULT_SETTINGS if row is None else parse_settings(row["document"], version=row["version"])


async def _fixed_policy(conn: asyncpg.Connection, tenant_id: str, req: PreviewRequest) -> Policy | None:
    if req.policy is not None:
        try:
            return parse_policy(req.policy, version=0)
        except PolicyError as exc:
            raise PreviewError(_prefixed(exc.errors, "policy")) from None
    if req.policy_id is not None:
        stored = await named_policy(conn, tenant_id, req.policy_id)
        if stored is None:
            raise PreviewError([{"field": "policy_id", "message": f"no policy {req.policy_id}"}])
        return stored.policy
    return None


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.astimezone(UTC)


class _Errors:
    """Every problem of a request, named, before anything is computed."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    async def check(self, step: Any) -> Any:
        try:
            return await step
        except PreviewError as exc:
            self.errors += exc.errors
            return None


async def preview(conn: asyncpg.Connection, tenant_id: str, body: Any, policies: ActivePolicies) -> dict:
    """The preview's answer (see the module). Read-only: the caller runs it in a read-only transaction."""
    try:
        req = PreviewRequest.model_validate(body)
    except ValidationError as exc:
        raise PreviewError(field_errors(exc)) from None
    found = _Errors()
    now = _instant(req.now) if req.now is not None else utcnow()
    if now is None:
        found.errors.append(
            {"field": "now", "message": "must be an instant with its offset, e.g. 2026-12-01T00:00:00Z"}
        )
    elif not FIRST_YEAR <= now.year <= LAST_YEAR:
        found.errors.append({"field": "now", "message": f"must be from {FIRST_YEAR} to {LAST_YEAR}"})
    settings = await found.check(_settings(conn, tenant_id, req.settings))
    fixed = await found.check(_fixed_policy(conn, tenant_id, req))
    if req.policy is not None and req.policy_id is not None:
        found.errors.append({"field": "policy_id", "message": "give policy or policy_id, not both"})
    if not req.invoices and not req.invoice_ids:
        found.errors.append({"field": "invoices", "message": "give sample invoices or invoice_ids"})
    samples: list[Sample] = []
    for n, inv in enumerate(req.invoices):
        try:
            samples.append(_sample(n, inv, now or utcnow()))
        except PreviewError as exc:
            found.errors += exc.errors
    for n, invoice_id in enumerate(req.invoice_ids):
        sample = await found.check(_stored_sample(conn, tenant_id, n, invoice_id))
        if sample is not None:
            samples.append(sample)
    if found.errors:
        raise PreviewError(found.errors)
    assert now is not None and settings is not None
    known = sorted({s.customer.customer_id for s in samples if s.known_customer})

    rules = NO_RULES
    if fixed is None:
        row = await settings_sql.latest(conn, settings_sql.RULES, tenant_id)
        rules = NO_RULES if row is None else parse_rules(row["document"], version=row["version"])
    wanted = needs_history(rules) if rules.version > 0 else 0
    history = await history_of(conn, tenant_id, known, wanted) if wanted else {}
    windows = {
        r["customer_id"]: parse_window(r["send_window"])
        for r in (await settings_sql.customer_windows(conn, tenant_id, known) if known else [])
    }
    shaper = TenantShaping(settings, rules, windows, history)

    planned: list[_Planned] = []
    for sample in samples:
        if fixed is not None:
            policy, segment = fixed, None
            shaping = shaping_for(settings, sample.customer, windows.get(sample.customer.customer_id), None)
        else:
            key, shaping = shaper.choose(sample)
            policy, segment = (await policies.load(conn, tenant_id, key)).policy, shaping.segment
        timers = plan_for(policy, data=sample, shaping=shaping, settled=False, now=now, accepted_at=now)
        planned.append((sample, policy, segment, shaping, timers))

    sends = await _simulate(conn, tenant_id, settings, planned, known, now)
    return {
        "invoices": [await _invoice_answer(conn, tenant_id, p, sends, n) for n, p in enumerate(planned)],
        "notices": sends.notices,
    }


_Planned = tuple[Sample, Policy, dict[str, str] | None, Shaping, list[PlannedTimer]]  # as planned for the answer


class _Sends:
    """What the simulation did to each timer (by (invoice n, stage_id)), and the notices it composed."""

    def __init__(self) -> None:
        self.at: dict[tuple[int, str], datetime] = {}
        self.deferred: dict[tuple[int, str], list[dict]] = defaultdict(list)
        self.notice: dict[tuple[int, str], str] = {}
        self.notices: list[dict] = []


async def _simulate(
    conn: asyncpg.Connection,
    tenant_id: str,
    settings: TenantSettings,
    planned: list[_Planned],
    known: list[str],
    now: datetime,
) -> _Sends:
    by_customer: dict[str, list[Due]] = defaultdict(list)
    zones, calendars, windows = {}, {}, {}
    for n, (sample, _, _, shaping, timers) in enumerate(planned):
        customer = sample.customer.customer_id
        zones[customer] = zone_for(sample.customer.timezone) or UTC_ZONE
        calendars[customer] = shaping.calendar or EVERY_DAY
        windows[customer] = shaping.window
        by_customer[customer] += [
            Due(t.stage_id, str(n), customer, t.stage, t.sequence, t.channel, t.scheduled_at)
            for t in timers
            if t.state == "scheduled"
        ]
    contacts = {c: ContactLog(await contacts_sql.recent_contacts(conn, tenant_id, c, now)) for c in known}
    out = _Sends()
    for send in simulate(by_customer, settings, windows, zones, calendars, contacts, now):
        decision = send.decision
        if decision.kind == "defer":
            for due in decision.due:
                key = (int(due.invoice_id), due.stage_id)
                out.deferred[key].append(
                    {"reason": decision.reason, "detail": decision.detail, "from": due.scheduled_at, "to": decision.at}
                )
            continue
        by_channel: dict[str, list[Due]] = defaultdict(list)
        for due in decision.due:
            out.at[(int(due.invoice_id), due.stage_id)] = decision.at
            by_channel[due.channel].append(due)
        if decision.notice:
            for channel, dues in sorted(by_channel.items()):
                name = f"ntc-preview-{len(out.notices) + 1}"
                for due in dues:
                    out.notice[(int(due.invoice_id), due.stage_id)] = name
                invoices = sorted({_name(planned[int(d.invoice_id)][0]) for d in dues})
                out.notices.append(
                    {"notice": name, "customer": send.customer_id, "channel": channel, "at": decision.at,
                     "invoices": invoices}
                )  # fmt: skip
    return out


def _name(sample: Sample) -> str:
    return sample.invoice_id or sample.reference or ""


async def _invoice_answer(conn: asyncpg.Connection, tenant_id: str, item: _Planned, sends: _Sends, n: int) -> dict:
    sample, policy, segment, _, timers = item
    zone = zone_for(sample.customer.timezone) or UTC_ZONE
    projector = await ProjectedCharges.for_policy(conn, tenant_id, policy, sample)
    stages = []
    for t in timers:
        key = (n, t.stage_id)
        at = sends.at.get(key, t.scheduled_at)
        charged = projector.at(policy.stages[t.sequence], at.astimezone(zone).date()) if t.state == "scheduled" else {}
        stages.append(
            {
                "stage": t.stage,
                "sequence": t.sequence,
                "channel": t.channel,
                "template": t.template,
                "state": t.state,
                "reason": t.reason,
                "scheduled_at": at,
                "local_time": at.astimezone(zone).isoformat(),
                "timezone": sample.customer.timezone,
                "moved": getattr(t, "moved", None),
                "deferred": sends.deferred.get(key, []),
                "notice": sends.notice.get(key),
                "late_fee": charged.get("late_fee"),
                "interest": charged.get("interest"),
                "total_due": charged.get("total_due"),
            }
        )
    answer = {"policy_id": policy.policy_id, "policy_version": policy.version, "segment": segment, "stages": stages}
    if sample.invoice_id is not None:
        answer["invoice_id"] = sample.invoice_id
    else:
        answer["reference"] = sample.reference
    return answer
