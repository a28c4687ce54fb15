"""SQL of money on an invoice: a payment, a credit note, a customer credit, a reversal or an
unallocation applied to its balance (`apply_payment`, a stop statement: the balance may settle
it), and a settled invoice reopened (`reopen`). Every function runs on the caller's connection and
transaction. The rules, in words: docs/decisions/0018-money-in.md."""

from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning_scheduler.planning import CREDITED, SETTLED
from dunning_scheduler.repository.invoices import run_stop, stop_statement

# Whether money on invoice $1 matters beyond its balance: a pending promise, an active payment plan.
MONEY_WATCHERS = """EXISTS (SELECT 1 FROM pauses AS p WHERE p.invoice_id = $1 AND p.cause = 'promise'
                       AND p.state = 'active') AS promised,
       EXISTS (SELECT 1 FROM payment_plans AS pl WHERE pl.status = 'active'
               AND pl.invoices @> jsonb_build_array(jsonb_build_object('invoice_id', $1::text))) AS in_plan"""
# Whether the event's balance version ($10) states the balance: newer than the one held.
_NEWER = "(EXCLUDED.balance_version > coalesce(i.balance_version, 0))"
# Money applied, as reconciliation left the invoice.
# With a balance version ($10, issue 11): the event with the higher version states the balance
# (reconciliation counts each change of the invoice's balance), whatever order they arrive in; an
# older one only records its money. A newer one that says "not settled" of a settled invoice is a
# reopening: the caller takes `reopen` instead (this statement never unsettles).
# Without one (an old producer): reconciliation reads a payment's acknowledged_at (under its fence)
# before it takes the invoice's lock, so two payments on one invoice may commit, and reach the
# scheduler, in the other order of their acknowledged_at. Hence:
# - settled: a settling payment settles, whatever its age (never undone);
# - balance: the lowest reported wins (a newly settling payment's own), not the newest
#   acknowledged. Reconciliation's balance after each payment or credit only goes down (at most
#   the balance is applied) until an amount correction, so of the payments between two corrections
#   the lowest balance is the one applied last, in whichever order they arrive. Newest-acknowledged
#   would keep a partial payment's balance over the lower one of a payment acknowledged before it
#   but applied after. (An amount correction consumed from the other topic is a race under either
#   rule; the lowest balance overstates it by at most the smaller of the payment and the correction.)
# In both cases:
# - last_payment_*: the newest acknowledged;
# - the money is recorded in money_applied (what a promise counts: pauses.count_promise_paid; the
#   interest ledger) as `$11` (the allocation's or reversal's id, else the payment's), signed (a
#   reversal's is negative), in this statement, only for the invoice's own tenant and currency;
#   money seen twice once.
# Returns nothing only for another tenant's invoice or another currency.
_APPLY_PAYMENT = stop_statement(
    f"""
    INSERT INTO invoices AS i (invoice_id, tenant_id, currency, balance, settled, settled_at,
                               last_payment_id, last_payment_acknowledged_at, balance_version)
    VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 THEN now() END, $6, $7, $10)
    ON CONFLICT (invoice_id) DO UPDATE SET
        balance = CASE WHEN EXCLUDED.balance_version IS NOT NULL
                       THEN CASE WHEN {_NEWER} THEN EXCLUDED.balance ELSE i.balance END
                       WHEN EXCLUDED.settled AND NOT i.settled THEN EXCLUDED.balance
                       ELSE least(i.balance, EXCLUDED.balance) END,
        settled = i.settled OR (EXCLUDED.settled AND (EXCLUDED.balance_version IS NULL OR {_NEWER})),
        settled_at = CASE WHEN i.settled THEN i.settled_at
                          WHEN EXCLUDED.settled AND (EXCLUDED.balance_version IS NULL OR {_NEWER}) THEN now() END,
        balance_version = greatest(i.balance_version, EXCLUDED.balance_version),
        last_payment_id = CASE WHEN i.last_payment_acknowledged_at >= EXCLUDED.last_payment_acknowledged_at
                               THEN i.last_payment_id ELSE EXCLUDED.last_payment_id END,
        last_payment_acknowledged_at = greatest(i.last_payment_acknowledged_at,
                                                EXCLUDED.last_payment_acknowledged_at),
        updated_at = now()
    WHERE i.tenant_id = EXCLUDED.tenant_id
      AND (i.currency IS NULL OR i.currency = EXCLUDED.currency)
    RETURNING settled, balance, planned_at, settled AS stop, settled AND settled_at = now() AS newly,
              {MONEY_WATCHERS}""",
    "$8",
    """, money AS (
    INSERT INTO money_applied (invoice_id, money_id, acknowledged_at, amount)
    SELECT $1, coalesce($11, $6), $7, $9 FROM changed
    ON CONFLICT DO NOTHING
)""",
)


async def apply_payment(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    currency: str,
    balance: Decimal,
    settled: bool,
    payment_id: str,
    acknowledged_at: datetime,
    amount: Decimal,
    reason: str = SETTLED,
    balance_version: int | None = None,
    money_id: str | None = None,
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Apply money (a payment, a credit note: `payment_id` is then its id and `reason`
    invoice_credited; a reversal: `amount` negative) by the rules of `_APPLY_PAYMENT` and record it
    in money_applied as `money_id` (default `payment_id`). Once settled, every still-scheduled timer
    is cancelled (fired ones are history and stay), in the same statement. Returns the invoice
    (settled, balance, planned_at, promised, in_plan; None: another tenant's or currency's invoice)
    and the timers cancelled now, in plan order. One round trip."""
    return await run_stop(
        conn,
        _APPLY_PAYMENT,
        invoice_id,
        tenant_id,
        currency,
        balance,
        settled,
        payment_id,
        acknowledged_at,
        reason,
        amount,
        balance_version,
        money_id,
    )


_MONEY_WATCHERS = f"SELECT {MONEY_WATCHERS} FROM invoices WHERE invoice_id = $1 AND tenant_id = $2"


async def money_watchers(conn: asyncpg.Connection, invoice_id: str, tenant_id: str) -> asyncpg.Record | None:
    """promised, in_plan of an invoice (None: unknown, or another tenant's)."""
    return await conn.fetchrow(_MONEY_WATCHERS, invoice_id, tenant_id)


_LOCK_MONEY_STATE = (
    "SELECT tenant_id, currency, settled, status, balance_version, planned_at FROM invoices"
    " WHERE invoice_id = $1 FOR UPDATE"
)


async def lock_money_state(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    """The invoice's row locked (None: not known yet): whether a money event reopens it."""
    return await conn.fetchrow(_LOCK_MONEY_STATE, invoice_id)


# A settled open invoice reopened by money of a newer balance version (a refund, a lost chargeback,
# an allocation undone): the balance as stated, not settled (settled_at cleared, so the next settle
# is `newly` one), the money recorded; the policy's stages its settle cancelled (a settling payment's
# or credit's reason, $8) come back `paused`, at their planned times: the caller resumes them as the
# end of a pause that lasted from the settle to now (pauser.resume), or leaves them paused under a
# pause still live. Stages that fired stay fired. One row per stage restored (or one with null stage
# columns); none: nothing reopened (another tenant's, not settled, closed, or an older version).
_REOPEN = """
WITH inv AS (
    UPDATE invoices AS i SET balance = $3, settled = false, settled_at = NULL, balance_version = $4,
                             updated_at = now()
    WHERE i.invoice_id = $1 AND i.tenant_id = $2 AND i.settled AND i.status = 'open'
      AND coalesce(i.balance_version, 0) < $4
    RETURNING i.invoice_id, i.planned_at
), money AS (
    INSERT INTO money_applied (invoice_id, money_id, acknowledged_at, amount)
    SELECT invoice_id, $5, $6, $7 FROM inv
    ON CONFLICT DO NOTHING
), restored AS (
    UPDATE timers AS t SET state = 'paused', cancelled_at = NULL, reason = NULL
    FROM inv
    WHERE t.invoice_id = inv.invoice_id AND t.state = 'cancelled' AND t.kind = 'policy' AND t.reason = ANY($8::text[])
    RETURNING t.invoice_id, t.stage_id, t.stage, t.sequence, t.channel, t.scheduled_at
)
SELECT inv.invoice_id, inv.planned_at, r.stage_id, r.stage, r.sequence, r.channel, r.scheduled_at
FROM inv LEFT JOIN restored AS r USING (invoice_id)
ORDER BY r.sequence, r.channel
"""


async def reopen(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    balance: Decimal,
    balance_version: int,
    money_id: str,
    acknowledged_at: datetime,
    amount: Decimal,
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Reopen a settled invoice (see `_REOPEN`): the invoice (invoice_id, planned_at; None: nothing
    reopened) and the stages restored `paused`, in plan order. The caller holds the row lock."""
    rows = await conn.fetch(
        _REOPEN, invoice_id, tenant_id, balance, balance_version, money_id, acknowledged_at, amount,
        [SETTLED, CREDITED],
    )  # fmt: skip
    if not rows:
        return None, []
    return rows[0], [r for r in rows if r["stage_id"] is not None]
