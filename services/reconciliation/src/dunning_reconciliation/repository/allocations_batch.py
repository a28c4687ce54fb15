"""SQL of allocations_batch's set-wise writes that repository.payments does not have: the unmatched
queue's payments of a batch, in one statement."""

from typing import Any

import asyncpg
import orjson

# What allocations.hold_unmatched leaves, for many payments: a new payment inserted unmatched, all of
# it unallocated, with its suggestions; a payment already stored only gets its suggestions replaced.
_HOLD_UNMATCHED = (
    "INSERT INTO payments (payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id,"
    " status, currency, amount, amount_applied, unapplied_amount, unallocated_amount, match_invoice_id,"
    " match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, customer_id, payer_name,"
    " payer_account, remittance, creditor_reference, statement_id, suggestions)"
    " SELECT r.payment_id, r.tenant_id, NULL, r.source, r.source_reference, r.stripe_object_id, 'unmatched',"
    " r.currency, r.amount, 0, r.amount, r.amount, r.match_invoice_id,"
    " r.match_external_ids, r.match_numbers, r.fingerprint, r.received_at,"
    " r.acknowledged_at, r.customer_id, r.payer_name, r.payer_account, r.remittance, r.creditor_reference,"
    " r.statement_id, r.suggestions"
    " FROM json_to_recordset($1::text::json) AS r(payment_id text, tenant_id text, source text,"
    " source_reference text, stripe_object_id text, currency text, amount numeric, match_invoice_id text,"
    " match_external_ids text[], match_numbers text[], fingerprint text, received_at timestamptz,"
    " acknowledged_at timestamptz, customer_id text, payer_name text, payer_account text, remittance text,"
    " creditor_reference text, statement_id text, suggestions jsonb)"
    " ON CONFLICT (payment_id) DO UPDATE SET suggestions = EXCLUDED.suggestions"
)


async def hold_unmatched_payments(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """Payments held in the queue (dicts of the columns above; JSON values; distinct payment ids;
    `suggestions` a list, or None for none)."""
    await conn.execute(_HOLD_UNMATCHED, orjson.dumps(rows).decode())
