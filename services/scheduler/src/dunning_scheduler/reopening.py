"""Money applied to an invoice's balance, and a settled invoice reopened (issue 11).

`apply`: a money event (payment, credit note, customer credit, reversal, unallocation) states the
invoice's balance if its `balance_version` is newer than the one held (repository.money); settling,
its stop goes through the one stop statement. A newer event that says "not settled" of a settled,
open invoice (a refund, a lost chargeback, an allocation undone) REOPENS it: the balance rises, the
policy's stages its settle cancelled come back, and dunning resumes as if a pause had lasted from the
settle to now: the policy's `pauses.resume` places them (pausing.resume: no burst), stages that fired
stay fired (nothing is sent twice), and DunningResumed (cause `settled`, reason `reopened`) lists
them. A pause still live then (a chargeback open, a customer hold) keeps them paused: DunningResumed
with no stage, then DunningPaused for that pause, whose end resumes them as any pause's does. The
reopen is no stop: no StagesCancelled. An invoice reopened before it was planned is planned as any
open one. Why this keeps the cancel guarantee: docs/decisions/0018-money-in.md.
"""

from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

import asyncpg
from prometheus_client import Histogram

from dunning import outbox
from dunning.clock import utcnow
from dunning.events import Event
from dunning.handler_table import Rejected
from dunning.logging import get_logger
from dunning_scheduler import messages, pauser, repository, stopping
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import pauses as pause_sql

log = get_logger(__name__)
SETTLED_CAUSE, REOPENED = "settled", "reopened"


class Money(NamedTuple):
    """One money event, as the scheduler applies it."""

    payment_id: str  # the invoice's last payment, if this is the newest acknowledged
    money_id: str  # its row in money_applied (an allocation, a reversal, a credit note, ...)
    currency: str
    amount: Decimal  # applied to the balance; negative: taken back
    balance: Decimal  # as reconciliation left it
    settled: bool
    acknowledged_at: datetime
    version: int | None  # balance_version (None: an old producer's)
    reason: str  # the stop's reason if it settles: invoice_settled | invoice_credited
    cause_id: str  # a reopening's DunningResumed cause_id: the event's own id


async def apply(
    conn: asyncpg.Connection,
    event: Event,
    money: Money,
    *,
    policies: ActivePolicies,
    cancel_latency: Histogram | None = None,
) -> asyncpg.Record | None:
    """Apply `money` to the event's invoice; the invoice as applied (None: not this tenant's or a
    reopening: the caller reads what it needs; another currency: Rejected)."""
    invoice_id, tenant_id = stopping.checked(event)
    if money.version is not None and not money.settled:
        held = await repository.lock_money_state(conn, invoice_id)
        if reopens(held, tenant_id, money):
            await reopen(conn, event, money, policies=policies)
            return None
    row, cancelled = await repository.apply_payment(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        currency=money.currency,
        balance=money.balance,
        settled=money.settled,
        payment_id=money.payment_id,
        acknowledged_at=money.acknowledged_at,
        amount=money.amount,
        reason=money.reason,
        balance_version=money.version,
        money_id=money.money_id,
    )
    if row is None:
        existing = await stopping.owned(conn, event)
        if existing is not None and existing["currency"] not in (None, money.currency):
            raise Rejected(f"{event.name} currency {money.currency} differs from the invoice's {existing['currency']}")
        log.info("scheduler.payment.ignored", money_id=money.money_id)
        return None
    log.info(
        "scheduler.payment.applied",
        money_id=money.money_id,
        balance_version=money.version,
        settled=row["settled"],
        planned=row["planned_at"] is not None,
    )
    cancelled_at = await stopping.announce(conn, event, money.reason, row, cancelled)
    if cancelled_at is not None and cancel_latency is not None:  # acknowledged by reconciliation -> cancelled
        cancel_latency.observe(max((cancelled_at - money.acknowledged_at).total_seconds(), 0.0))
    return row


def reopens(held: asyncpg.Record | None, tenant_id: str, money: Money) -> bool:
    """Whether `money` reopens the invoice `held` (its row): a newer balance version, not settled, of
    this tenant's settled open invoice in its currency."""
    return (
        money.version is not None
        and not money.settled
        and held is not None
        and held["tenant_id"] == tenant_id
        and held["currency"] in (None, money.currency)
        and held["settled"]
        and held["status"] == "open"
        and (held["balance_version"] or 0) < (money.version or 0)
    )


async def reopen(conn: asyncpg.Connection, event: Event, money: Money, *, policies: ActivePolicies) -> None:
    """Reopen the settled invoice (its row locked by the caller) and resume its restored stages,
    or leave them to the pause that still holds it."""
    invoice_id, tenant_id = event.subject, event.tenant_id
    row, restored = await repository.reopen(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        balance=money.balance,
        balance_version=money.version or 0,
        money_id=money.money_id,
        acknowledged_at=money.acknowledged_at,
        amount=money.amount,
    )
    if row is None:
        return
    log.info("scheduler.invoice.reopened", money_id=money.money_id, balance_version=money.version,
             planned=row["planned_at"] is not None, stages=len(restored))  # fmt: skip
    if row["planned_at"] is None:
        return  # planned later as any open invoice
    if not await pause_sql.held(conn, invoice_id):
        await pauser.resume(conn, [invoice_id], cause=SETTLED_CAUSE, cause_id=money.cause_id, reason=REOPENED,
                            policies=policies)  # fmt: skip
        return
    # Still paused (a chargeback open, a hold): the reopening is said, and the pause that holds it.
    cover = await pause_sql.covering_pause(conn, invoice_id)
    assert cover is not None, "called only while a pause covers the invoice"
    policy = await pauser.policy_of(conn, policies, await repository.invoice_for_pause(conn, invoice_id))
    now = utcnow()
    await outbox.add(
        conn,
        messages.dunning_resumed(tenant_id=tenant_id, invoice_id=invoice_id, cause=SETTLED_CAUSE,
                                 cause_id=money.cause_id, reason=REOPENED, resume_mode=policy.resume_mode,
                                 resumed_at=now, stages=[]),
    )  # fmt: skip
    cause_event_id = str(cover["cause_event_id"]) if cover["cause_event_id"] is not None else event.id
    await pauser.publish_paused(
        conn, restored or [row], tenant_id=tenant_id, cause=cover["cause"], cause_id=cover["cause_id"],
        cause_event_id=cause_event_id,
    )  # fmt: skip
    log.info("scheduler.invoice.reopened_paused", cause=cover["cause"], cause_id=cover["cause_id"])
