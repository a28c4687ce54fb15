"""SQL of matching: the open invoices a batch of payments may pay, read in one statement, and the
payer accounts learnt from manual allocations (a payer's IBAN -> its customer)."""

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from dunning_reconciliation.repository.base import Conn

# One statement per tenant and batch. The rows are the open invoices named by a token (number or
# external id, upper case), by a creditor reference's body (the number's alphanumerics), of a customer
# (known by the payer's account, the processor's customer id, or a payer name equal to the customer's
# name), or with an open balance equal to a payment's amount (at most ten per amount: suggestions; a
# join, as no index names the balance: its updates stay HOT, migration 20261201440000);
# then one row per payer account known (`account` set, the invoice columns null).
_CANDIDATES = """
WITH acct AS (
    SELECT account, customer_id FROM payer_accounts WHERE tenant_id = $1 AND account = ANY ($8::text[])
), customers AS (
    SELECT customer_id FROM acct
    UNION SELECT unnest($4::text[])
    UNION SELECT customer_id FROM invoices
        WHERE tenant_id = $1 AND status = 'open' AND lower(customer_name) = ANY ($5::text[])
), amounts AS (
    SELECT DISTINCT currency, amount FROM unnest($6::text[], $7::numeric[]) AS a (currency, amount)
), hits AS (
    SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND status = 'open' AND upper(number) = ANY ($2::text[])
    UNION SELECT invoice_id FROM invoices
        WHERE tenant_id = $1 AND status = 'open' AND upper(external_id) = ANY ($2::text[])
    UNION SELECT invoice_id FROM invoices
        WHERE tenant_id = $1 AND status = 'open'
        AND upper(regexp_replace(number, '[^0-9A-Za-z]', '', 'g')) = ANY ($3::text[])
    UNION SELECT i.invoice_id FROM invoices i JOIN customers c ON c.customer_id = i.customer_id
        WHERE i.tenant_id = $1 AND i.status = 'open'
    UNION SELECT e.invoice_id FROM (
        SELECT i.invoice_id, row_number() OVER (
            PARTITION BY i.currency, i.balance ORDER BY i.due_date NULLS LAST, i.invoice_id) AS n
        FROM invoices i JOIN amounts a ON a.currency = i.currency AND a.amount = i.balance
        WHERE i.tenant_id = $1 AND i.status = 'open') e
        WHERE e.n <= 10
)
SELECT i.invoice_id, i.number, i.external_id, i.currency, i.balance, i.due_date, i.customer_id,
       i.customer_name, NULL::text AS account
FROM invoices i JOIN hits h ON h.invoice_id = i.invoice_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, customer_id, NULL, account FROM acct
"""


async def candidates(
    conn: Conn,
    tenant_id: str,
    *,
    tokens: Sequence[str] = (),
    compact_numbers: Sequence[str] = (),
    customer_ids: Sequence[str] = (),
    names: Sequence[str] = (),
    amounts: Sequence[tuple[str, Decimal]] = (),
    accounts: Sequence[str] = (),
) -> list[asyncpg.Record]:
    """The open invoices the batch may pay, and the payer accounts known (rows with `account`).
    `tokens` upper case, `names` lower case, `amounts` (currency, amount) pairs."""
    return await conn.fetch(
        _CANDIDATES,
        tenant_id,
        list(tokens),
        list(compact_numbers),
        list(customer_ids),
        list(names),
        [c for c, _ in amounts],
        [a for _, a in amounts],
        list(accounts),
    )


# For the queue's suggestions: open invoices of customers whose name has one of the words of the
# payers' names (`query`: a text-search query, `word | word`), at most `limit` rows.
_SUGGESTION_CANDIDATES = (
    "SELECT invoice_id, number, external_id, currency, balance, due_date, customer_id, customer_name"
    " FROM invoices WHERE tenant_id = $1 AND status = 'open'"
    " AND to_tsvector('simple', coalesce(customer_name, '')) @@ to_tsquery('simple', $2) LIMIT $3"
)


async def suggestion_candidates(conn: Conn, tenant_id: str, query: str, *, limit: int = 2000) -> list[asyncpg.Record]:
    """Open invoices of customers named like the payers (at most `limit`)."""
    return await conn.fetch(_SUGGESTION_CANDIDATES, tenant_id, query, limit)


_CUSTOMER_BALANCES = (
    "SELECT invoice_id, balance, status FROM invoices WHERE tenant_id = $1 AND customer_id = $2 AND currency = $3"
)


async def customer_balances(conn: Conn, tenant_id: str, customer_id: str, currency: str) -> dict[str, Decimal]:
    """The balances of a customer's invoices in a currency (0 for those not open): after its credit
    was applied, the batch's book reads them again."""
    rows = await conn.fetch(_CUSTOMER_BALANCES, tenant_id, customer_id, currency)
    return {r["invoice_id"]: r["balance"] if r["status"] == "open" else Decimal(0) for r in rows}


_LEARN_PAYER_ACCOUNT = (
    "INSERT INTO payer_accounts (tenant_id, account, customer_id, learned_from_payment_id, learned_at)"
    " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (tenant_id, account) DO UPDATE SET"
    " customer_id = EXCLUDED.customer_id, learned_from_payment_id = EXCLUDED.learned_from_payment_id,"
    " learned_at = EXCLUDED.learned_at"
)


async def learn_payer_account(conn: Conn, tenant_id: str, account: str, customer_id: str, payment_id: str) -> None:
    """The payer's account belongs to `customer_id` (the latest manual allocation says so)."""
    await conn.execute(_LEARN_PAYER_ACCOUNT, tenant_id, account, customer_id, payment_id)


_FORGET_PAYER_ACCOUNT = (
    "DELETE FROM payer_accounts WHERE tenant_id = $1 AND account = $2 AND learned_from_payment_id = $3"
)


async def forget_payer_account(conn: Conn, tenant_id: str, account: str, payment_id: str) -> None:
    """Forget the account's customer if this payment's manual allocation taught it (it was undone)."""
    await conn.execute(_FORGET_PAYER_ACCOUNT, tenant_id, account, payment_id)


_PAYER_ACCOUNT = "SELECT customer_id FROM payer_accounts WHERE tenant_id = $1 AND account = $2"


async def payer_account_customer(conn: Conn, tenant_id: str, account: str) -> str | None:
    return await conn.fetchval(_PAYER_ACCOUNT, tenant_id, account)
