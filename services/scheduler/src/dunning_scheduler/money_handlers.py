"""The handlers of money on an invoice (dunning.payments.v1; in the table at the end of `handlers.py`):

- PaymentReceived (one allocation of a payment), CreditNoteIssued, CustomerCreditApplied: money
  applied; settling, the invoice's pending stages are cancelled in the same statement
  (invoice_settled, invoice_credited; a customer credit settles as a payment does) and
  StagesCancelled is published. A payment may arrive before its invoice: the invoice row is created
  settled, and its plan will be all `cancelled`.
- PaymentReversed (a refund, a lost chargeback, a failed debit), PaymentUnallocated (an allocation
  undone by hand): money taken back; the balance rises and a settled invoice reopens (`reopening`).
Which balance an event states: its `balance_version` (repository.money). Money counts towards a
pending promise and the payment plans the invoice is in; an upheld dispute's credit note resumes it.
PaymentPending / PaymentPendingEnded pause and resume (pause_handlers.py).
"""

from decimal import Decimal

import asyncpg
from prometheus_client import Histogram

from dunning.contracts import (
    CreditNoteIssued,
    CustomerCreditApplied,
    PaymentReceived,
    PaymentReversed,
    PaymentUnallocated,
)
from dunning.events import Event
from dunning_scheduler import disputes, pauser, plans, reopening, repository
from dunning_scheduler.planning import CREDITED, SETTLED
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.reopening import Money


async def on_payment_received(
    conn: asyncpg.Connection,
    event: Event[PaymentReceived],
    *,
    policies: ActivePolicies,
    cancel_latency: Histogram | None = None,
) -> None:
    p = event.data
    money_id = p.allocation_id or p.payment_id  # one payment, allocated, undone and allocated again
    money = Money(p.payment_id, money_id, p.currency, p.amount_applied, p.balance_remaining, p.settled,
                  p.acknowledged_at, p.balance_version, SETTLED, money_id)  # fmt: skip
    await _money(conn, event, money, policies, cancel_latency)


async def on_credit_note_issued(
    conn: asyncpg.Connection,
    event: Event[CreditNoteIssued],
    *,
    policies: ActivePolicies,
    cancel_latency: Histogram | None = None,
) -> None:
    n = event.data
    money = Money(n.credit_note_id, n.credit_note_id, n.currency, n.amount_applied, n.balance_remaining, n.settled,
                  n.acknowledged_at, n.balance_version, CREDITED, n.credit_note_id)  # fmt: skip
    await _money(conn, event, money, policies, cancel_latency)
    if n.reference.startswith("dsp_"):  # an upheld dispute's credit (DisputeResolved.credit_amount)
        await disputes.credited(conn, event, n.reference, policies=policies)


async def on_customer_credit_applied(
    conn: asyncpg.Connection,
    event: Event[CustomerCreditApplied],
    *,
    policies: ActivePolicies,
    cancel_latency: Histogram | None = None,
) -> None:
    """An over-payment's excess applied: as a payment (it settles with invoice_settled)."""
    c = event.data
    money = Money(c.application_id, c.application_id, c.currency, c.amount_applied, c.balance_remaining, c.settled,
                  c.acknowledged_at, c.balance_version, SETTLED, c.application_id)  # fmt: skip
    await _money(conn, event, money, policies, cancel_latency)


async def on_payment_reversed(
    conn: asyncpg.Connection, event: Event[PaymentReversed], *, policies: ActivePolicies
) -> None:
    r = event.data
    money = Money(r.payment_id, r.reversal_id, r.currency, -r.amount, r.balance_remaining, r.settled,
                  r.acknowledged_at, r.balance_version, SETTLED, r.reversal_id)  # fmt: skip
    await _money(conn, event, money, policies, None)


async def on_payment_unallocated(
    conn: asyncpg.Connection, event: Event[PaymentUnallocated], *, policies: ActivePolicies
) -> None:
    u = event.data
    money = Money(u.payment_id, f"{u.allocation_id}/unallocated", u.currency, -u.amount, u.balance_remaining,
                  u.settled, u.unallocated_at, u.balance_version, SETTLED, u.allocation_id)  # fmt: skip
    await _money(conn, event, money, policies, None)


async def _money(
    conn: asyncpg.Connection,
    event: Event,
    money: Money,
    policies: ActivePolicies,
    cancel_latency: Histogram | None,
) -> None:
    row = await reopening.apply(conn, event, money, policies=policies, cancel_latency=cancel_latency)
    if money.amount > Decimal(0):
        await _counts(conn, event, row, policies)


async def _counts(conn: asyncpg.Connection, event: Event, row: asyncpg.Record | None, policies: ActivePolicies) -> None:
    """Money on an invoice counts towards its pending promise (what money_applied holds, see
    pauser.paid) and the payment plans it is in."""
    if row is None:
        row = await repository.money_watchers(conn, event.subject, event.tenant_id)
    if row is None:
        return
    if row["promised"]:
        await pauser.paid(conn, event.subject, policies=policies)
    if row["in_plan"]:
        await plans.paid(conn, event.subject, policies=policies)
