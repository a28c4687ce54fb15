"""SQL of the changes an accounting system makes to an invoice and its customer: InvoiceUpdated
(snapshot, balance moved by the amount's difference), InvoiceVoided and InvoiceWrittenOff (the
invoice closes), CustomerUpdated (the latest contact data, copied into the open invoices'
snapshots). Each applies only an event whose version is newer than the one held. Every stop goes
through `invoices.stop_statement`, as a settling payment does."""

from datetime import date, datetime
from decimal import Decimal

import asyncpg

from dunning_scheduler.repository.invoices import run_stop, stop_statement
from dunning_scheduler.repository.pauses import LIVE_PAUSE

# What re-planning needs of an invoice (replanner.replan): every statement that hands invoices to it
# returns these columns.
REPLAN_COLUMNS = (
    "i.invoice_id, i.tenant_id, i.due_date, i.issued_at, i.customer->>'timezone' AS timezone, i.policy_id,"
    " i.policy_version, i.policy_is_default, (" + LIVE_PAUSE.format(inv="i", extra="") + ") AS paused"
)

_LOCK_INVOICE = (
    "SELECT tenant_id, version, status, settled, planned_at, due_date, customer->>'timezone' AS timezone"
    " FROM invoices WHERE invoice_id = $1 FOR UPDATE"
)


async def lock_invoice(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    """The invoice as held now, its row locked until the transaction ends (as a payment locks it)."""
    return await conn.fetchrow(_LOCK_INVOICE, invoice_id)


# The customer's profile (country, subdivision, tags, attributes: what calendars and segments read;
# phone and postal address: what the SMS and letter channels read)
# replaces the snapshot's, unless the profile is unknown (NULL: a row stored before it existed).
_PROFILE_KEYS = "- 'country' - 'subdivision' - 'tags' - 'attributes' - 'phone' - 'postal_address'"


def with_profile(snap: str, profile: str) -> str:
    return f"(CASE WHEN {profile} IS NULL THEN {snap} ELSE ({snap} {_PROFILE_KEYS}) || {profile} END)"


# The contact data of the customers row, over a snapshot `snap`, where the row is newer than `as_of`
# (a CustomerUpdated applied before this older invoice event): the latest contact data wins.
def _newer_contacts(snap: str, as_of: str, tenant: str) -> str:
    return f"""(SELECT {with_profile(snap, "c.profile")}
                       || jsonb_build_object('external_id', c.external_id, 'name', c.name, 'email', c.email,
                                             'locale', c.locale, 'timezone', c.timezone)
     FROM customers AS c
     WHERE c.customer_id = {snap}->>'customer_id' AND c.tenant_id = {tenant} AND c.updated_at > {as_of})"""


# The balance moves by the difference of the amounts; at or below zero the invoice is settled and
# its pending timers are cancelled (reason $10, invoice_settled). The caller holds the row lock
# (lock_invoice) and has checked the version, the tenant and that the invoice is open.
_UPDATE_INVOICE = stop_statement(
    f"""
    UPDATE invoices AS i SET
        number = $2, customer = coalesce({_newer_contacts("$3::jsonb", "$4", "$9")}, $3::jsonb),
        customer_id = $3::jsonb->>'customer_id',
        customer_as_of = greatest($4, (SELECT c.updated_at FROM customers AS c
                                       WHERE c.customer_id = $3::jsonb->>'customer_id' AND c.tenant_id = $9)),
        amount_due = $5, balance = i.balance + ($5 - i.amount_due),
        settled = i.settled OR i.balance + ($5 - i.amount_due) <= 0,
        settled_at = CASE WHEN i.settled THEN i.settled_at WHEN i.balance + ($5 - i.amount_due) <= 0 THEN now() END,
        due_date = $6, payment_url = $7, version = $8, updated_at = now()
    WHERE i.invoice_id = $1 AND i.tenant_id = $9 AND i.version < $8 AND i.status = 'open'
    RETURNING i.settled, i.balance, i.settled AS stop, i.settled AND i.settled_at = now() AS newly, i.planned_at,
              {REPLAN_COLUMNS}""",
    "$10",
)


async def update_invoice(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    version: int,
    number: str,
    customer: dict,
    customer_as_of: datetime,
    amount_due: Decimal,
    due_date: date,
    payment_url: str | None,
    reason: str,
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Apply an InvoiceUpdated's state (see _UPDATE_INVOICE). Returns the invoice (None: not
    applied) and the timers cancelled if the new amount settled it."""
    return await run_stop(
        conn,
        _UPDATE_INVOICE,
        invoice_id,
        number,
        customer,  # jsonb: the pool's codec writes it
        customer_as_of,
        amount_due,
        due_date,
        payment_url,
        version,
        tenant_id,
        reason,
    )


# A void or a write-off: the invoice closes (status $3) and every pending timer is cancelled.
_CLOSE_INVOICE = stop_statement(
    """
    UPDATE invoices AS i SET status = $3, version = $4, closed_at = $5, updated_at = now()
    WHERE i.invoice_id = $1 AND i.tenant_id = $2 AND i.version < $4 AND i.status = 'open'
    RETURNING i.settled, i.balance, i.planned_at, true AS stop, true AS newly""",
    "$6",
)


async def close_invoice(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    status: str,
    version: int,
    closed_at: datetime,
    reason: str,
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Close an open invoice (void | written_off) unless its version is not newer than the one held.
    Returns the invoice (None: not applied) and the timers cancelled now, in plan order."""
    return await run_stop(conn, _CLOSE_INVOICE, invoice_id, tenant_id, status, version, closed_at, reason)


_STORE_CUSTOMER = """
INSERT INTO customers AS c (customer_id, tenant_id, external_id, version, name, email, cc, locale, timezone,
                            updated_at, profile)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11::jsonb)
ON CONFLICT (customer_id) DO UPDATE SET
    external_id = EXCLUDED.external_id, version = EXCLUDED.version, name = EXCLUDED.name, email = EXCLUDED.email,
    cc = EXCLUDED.cc, locale = EXCLUDED.locale, timezone = EXCLUDED.timezone, updated_at = EXCLUDED.updated_at,
    profile = EXCLUDED.profile
WHERE c.tenant_id = EXCLUDED.tenant_id AND c.version < EXCLUDED.version
RETURNING c.version
"""


async def store_customer(
    conn: asyncpg.Connection,
    *,
    customer_id: str,
    tenant_id: str,
    external_id: str,
    version: int,
    name: str,
    email: str,
    cc: list[str],
    locale: str,
    timezone: str,
    updated_at: datetime,
    profile: dict,
) -> bool:
    """Keep the customer's latest state; False: a version not newer (or another tenant's customer)."""
    stored = await conn.fetchval(
        _STORE_CUSTOMER,
        customer_id,
        tenant_id,
        external_id,
        version,
        name,
        email,
        cc,
        locale,
        timezone,
        updated_at,
        profile,
    )
    return stored is not None


async def customer_tenant(conn: asyncpg.Connection, customer_id: str) -> str | None:
    return await conn.fetchval("SELECT tenant_id FROM customers WHERE customer_id = $1", customer_id)


# The customer's new contact data goes into the snapshot of each of its open invoices that is older
# (customer_as_of) than the change; each row comes back with its previous time zone, locked.
_REFRESH_CUSTOMER = f"""
WITH old AS (
    SELECT invoice_id, customer->>'timezone' AS previous_timezone,
           concat_ws('-', customer->>'country', customer->>'subdivision') AS previous_region FROM invoices
    WHERE tenant_id = $1 AND customer_id = $2 AND status = 'open' AND NOT settled
      AND (customer_as_of IS NULL OR customer_as_of < $3)
    ORDER BY invoice_id
    FOR UPDATE
)
UPDATE invoices AS i SET
    customer = {with_profile("i.customer", "$9::jsonb")}
               || jsonb_build_object('external_id', $4::text, 'name', $5::text, 'email', $6::text,
                                     'locale', $7::text, 'timezone', $8::text),
    customer_as_of = $3, updated_at = now()
FROM old WHERE i.invoice_id = old.invoice_id
RETURNING old.previous_timezone, old.previous_region,
          concat_ws('-', i.customer->>'country', i.customer->>'subdivision') AS region, i.planned_at, {REPLAN_COLUMNS}
"""


async def refresh_customer(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    customer_id: str,
    updated_at: datetime,
    external_id: str,
    name: str,
    email: str,
    locale: str,
    timezone: str,
    profile: dict,
) -> list[asyncpg.Record]:
    """Copy the customer's contact data and profile into its open invoices' snapshots; the invoices
    changed, each with `previous_timezone`, `previous_region`, `region` and the REPLAN_COLUMNS, their
    rows locked."""
    return await conn.fetch(
        _REFRESH_CUSTOMER, tenant_id, customer_id, updated_at, external_id, name, email, locale, timezone, profile
    )
