"""The firing rules applied inside the firing transaction, to the timers `repository.fire_due` claimed.

A batch whose tenants have no firing rules (no send window, caps or consolidation) and whose policies
charge nothing and have no minimum balance takes the fast path: one StageEscalated per timer, exactly
as before (`FiringRules.needs_rules` is a memory lookup per tenant and policy version). Otherwise,
per customer, under the customer's advisory lock (two replicas never exceed a cap):
1. the threshold (`Policy.chased`): a stage below the minimum balance is skipped (state `skipped`,
   reason below_minimum_balance) and a StagesRescheduled drops it (scheduled_at None);
2. `firing_rules.decide`: deferred timers go back to `scheduled` at their new time with one
   StageDeferred per invoice; fired ones are recorded as a contact;
3. with consolidation the customer's other timers due before the end of the opening (no window: of
   the local day) join the notice through the firing gate (`repository.contacts.pull_into_notice`,
   their scheduled_at set to the earliest of the triggering timers'); one NoticeComposed per channel
   lists the stages, then the customer's other open overdue invoices;
4. charges (`charges_apply`): a LateChargesAssessed once per (invoice, stage), quoted on each
   channel's StageEscalated.charges; StageEscalated.context names the invoice's next stage and its
   local date when it has one.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from dunning.contracts import (
    Customer,
    NoticeComposed,
    NoticeItem,
    RescheduledStage,
    StageDeferred,
    StageInvoice,
    StagesRescheduled,
)
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import quantize
from dunning_scheduler import messages
from dunning_scheduler.charges_apply import assess_fired, has_charges
from dunning_scheduler.firing_rules import ContactLog, Decision, Due, consolidation_horizon, decide
from dunning_scheduler.policy import Policy
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import contacts as contacts_sql
from dunning_scheduler.tenant_settings import TenantSettings, calendar_for, has_firing_rules

log = get_logger(__name__)
BELOW_MINIMUM = "below_minimum_balance"


def _customer_id(row: asyncpg.Record) -> str:
    return row["customer_id"] or (row["customer"] or {}).get("customer_id") or ""


def _zone(customer: Customer) -> ZoneInfo:
    try:
        return ZoneInfo(customer.timezone)
    except Exception:  # a snapshot validated at ingest; a zone this host lacks falls back to UTC
        return ZoneInfo("UTC")


def _balance(row: asyncpg.Record):
    return row["amount_due"] if row["balance"] is None else row["balance"]


def _stage_invoice(row: asyncpg.Record) -> StageInvoice:
    c = row["currency"]
    return StageInvoice(
        row["external_id"], row["number"], c, quantize(row["amount_due"], c), quantize(row["balance"], c),
        row["issue_date"], row["due_date"], row["payment_url"],
    )  # fmt: skip


class FiringRules:
    """What the firing loop asks for each batch it claimed (see the module's docstring)."""

    def __init__(
        self,
        policies: ActivePolicies | None = None,
        *,
        gated: bool = True,
        payments_topic: str,
        sources: Sequence[str],
    ):
        self.policies = policies or ActivePolicies()
        self.gated = gated
        self.payments_topic = payments_topic
        self.sources = list(sources)
        self.deferred_total = 0
        self.skipped_total = 0
        self.notices_total = 0
        self.assessed_total = 0

    async def _policy(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Policy:
        return await self.policies.version_of(
            conn, row["tenant_id"], row["policy_version"] or 1, bool(row["policy_is_default"]),
            policy_key=row["policy_key"],
        )  # fmt: skip

    async def needs_rules(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> bool:
        """False: every tenant of the batch has no firing rules and its policies charge nothing."""
        seen: set[tuple] = set()
        customers: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            customers[row["tenant_id"]].add(_customer_id(row))
        for tenant, ids in customers.items():
            if has_firing_rules(await self.policies.config.settings_of(conn, tenant)):
                return True
            if await self.policies.config.windows_of(conn, tenant, ids):  # no query unless the tenant has any
                return True
        for row in rows:
            tenant = row["tenant_id"]
            key = (tenant, row["policy_key"], row["policy_version"], row["policy_is_default"])
            if key not in seen:
                seen.add(key)
                if has_charges(await self._policy(conn, row)):
                    return True
        return False

    async def apply(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> tuple[list, int]:
        """The events of the claimed rows under the rules, and how many timers fired."""
        now = rows[0]["fired_at"]  # the transaction's now(), the fired_at of every claimed row
        events: list = []
        fired = 0
        by_tenant: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            by_tenant[row["tenant_id"]].append(row)
        for tenant, tenant_rows in sorted(by_tenant.items()):  # one lock order (tenant, customer) for every replica
            settings = await self.policies.config.settings_of(conn, tenant)
            by_customer: dict[str, list[asyncpg.Record]] = defaultdict(list)
            for row in tenant_rows:
                by_customer[_customer_id(row)].append(row)
            windows = await self.policies.config.windows_of(conn, tenant, list(by_customer))
            for customer_id in sorted(by_customer):
                await contacts_sql.lock_customer_contacts(conn, customer_id)
                window = windows.get(customer_id, settings.send_window)
                fired += await self._customer(
                    conn, tenant, customer_id, by_customer[customer_id], settings, window, now, events
                )
        return events, fired

    async def _threshold(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record], now: datetime, events: list
    ) -> list[asyncpg.Record]:
        """Skip the policy stages below the policy's minimum balance; the rows kept."""
        kept, skipped = [], []
        for row in rows:
            policy = await self._policy(conn, row)
            stage = next((s for s in policy.stages if s.name == row["stage"]), None)
            if (
                row["kind"] == "policy"
                and stage is not None
                and not policy.chased(stage, _balance(row), row["currency"])
            ):
                skipped.append((row, policy))
            else:
                kept.append(row)
        if skipped:
            await contacts_sql.skip(conn, [r["stage_id"] for r, _ in skipped], BELOW_MINIMUM)
            self.skipped_total += len(skipped)
            by_invoice: dict[str, list] = defaultdict(list)
            for row, policy in skipped:
                by_invoice[row["invoice_id"]].append((row, policy))
            for invoice_id, items in by_invoice.items():
                row, policy = items[0]
                events.append(StagesRescheduled(
                    invoice_id, row["tenant_id"], BELOW_MINIMUM, None, policy.policy_id, policy.version, now,
                    tuple(RescheduledStage(r["stage_id"], r["stage"], r["sequence"], r["channel"], r["scheduled_at"],
                                           None, "skipped") for r, _ in items),
                ))  # fmt: skip
        return kept

    async def _customer(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        customer_id: str,
        rows: list[asyncpg.Record],
        settings: TenantSettings,
        window,
        now: datetime,
        events: list,
    ) -> int:
        customer = Customer.from_data(rows[0]["customer"])
        zone = _zone(customer)
        kept = await self._threshold(conn, rows, now, events)
        if not kept:
            return 0
        dues = [
            Due(r["stage_id"], r["invoice_id"], customer_id, r["stage"], r["sequence"], r["channel"], r["scheduled_at"])
            for r in kept
        ]
        rules = has_firing_rules(settings) or window is not None  # a customer's own window alone counts too
        if rules:
            contacts = await contacts_sql.recent_contacts(conn, tenant, customer_id, now)
            calendar = calendar_for(settings, customer)
            decisions = decide(dues, now=now, settings=settings, window=window, zone=zone, calendar=calendar,
                               contacts=ContactLog(contacts))  # fmt: skip
        else:
            decisions = [Decision("fire", tuple(dues), now, None, None, False)]
        by_id = {r["stage_id"]: r for r in kept}
        fired = 0
        for decision in decisions:
            chosen = [by_id[d.stage_id] for d in decision.due]
            if decision.kind == "defer":
                await self._defer(conn, tenant, customer_id, chosen, decision, now, events)
            else:
                fired += await self._fire(
                    conn, tenant, customer_id, customer, chosen, decision, settings, window, zone, now, events, rules
                )
        return fired

    async def _defer(
        self, conn, tenant: str, customer_id: str, rows: list, decision: Decision, now: datetime, events: list
    ) -> None:
        await contacts_sql.defer(conn, [r["stage_id"] for r in rows], decision.at)
        self.deferred_total += len(rows)
        by_invoice: dict[str, list] = defaultdict(list)
        for row in rows:
            by_invoice[row["invoice_id"]].append(row)
        for invoice_id, items in by_invoice.items():
            events.append(StageDeferred(
                invoice_id, tenant, customer_id, decision.reason or "send_window", decision.detail or "", now,
                tuple(RescheduledStage(r["stage_id"], r["stage"], r["sequence"], r["channel"], r["scheduled_at"],
                                       decision.at, "scheduled") for r in items),
            ))  # fmt: skip

    async def _fire(
        self, conn, tenant, customer_id, customer, rows, decision, settings, window, zone, now, events, rules
    ) -> int:
        if decision.notice:
            earliest = min(r["scheduled_at"] for r in rows)
            pulled = await contacts_sql.pull_into_notice(
                conn, tenant_id=tenant, customer_id=customer_id, at=earliest,
                horizon=consolidation_horizon(now, window, zone), gated=self.gated,
                payments_topic=self.payments_topic, sources=self.sources,
            )  # fmt: skip
            rows = rows + await self._threshold(conn, list(pulled), now, events)
        notices: dict[str, str] = {}
        if decision.notice:
            for channel in sorted({r["channel"] for r in rows}):
                notices[channel] = new_id("ntc")
            await contacts_sql.set_notices(conn, [r["stage_id"] for r in rows], [notices[r["channel"]] for r in rows])
        if rules:
            await contacts_sql.add_contact(
                conn, new_id("cnt"), tenant, customer_id, now, next(iter(notices.values()), None),
                [r["stage_id"] for r in rows],
            )  # fmt: skip
        charges, assessed = await assess_fired(conn, self, rows, zone, now)
        self.assessed_total += len(assessed)
        events.extend(assessed)
        following = await contacts_sql.next_stages(conn, sorted({r["invoice_id"] for r in rows}))
        for row in rows:
            event = messages.stage_escalated(row)
            context = row["context"]
            nxt = following.get(row["invoice_id"])
            if context is None and row["kind"] == "policy" and nxt is not None:
                on = nxt["scheduled_at"].astimezone(zone).date().isoformat()
                context = {"kind": "stage", "next_stage": nxt["stage"], "next_stage_on": on}
            events.append(event._replace(
                notice_id=notices.get(row["channel"]), charges=charges.get(row["stage_id"]), context=context
            ))  # fmt: skip
        if notices:
            await self._notices(conn, tenant, customer_id, customer, rows, notices, charges, zone, now, events)
        return len(rows)

    async def _notices(self, conn, tenant, customer_id, customer, rows, notices, charges, zone, now, events) -> None:
        overdue = await contacts_sql.other_overdue(conn, tenant, customer_id, now.astimezone(zone).date(), [])
        for channel, notice_id in notices.items():
            staged = {r["invoice_id"] for r in rows if r["channel"] == channel}
            others = [o for o in overdue if o["invoice_id"] not in staged]
            items = [
                NoticeItem(r["invoice_id"], r["stage_id"], r["stage"], r["sequence"], r["template"], _stage_invoice(r),
                           charges.get(r["stage_id"]))
                for r in sorted(rows, key=lambda r: (r["due_date"], r["invoice_id"], r["sequence"]))
                if r["channel"] == channel
            ]  # fmt: skip
            items += [NoticeItem(o["invoice_id"], None, None, None, None, _stage_invoice(o), None) for o in others]
            events.append(NoticeComposed(notice_id, tenant, customer_id, channel, now, customer, tuple(items)))
            self.notices_total += 1
