"""Disputes: the customer contests an invoice (or part of it), which pauses its dunning until the
dispute is resolved. Opening one is an acknowledgement under the fence (DisputeOpened); resolving it
publishes DisputeResolved: `rejected` resumes dunning, `upheld` credits `credit_amount` (the disputed
amount unless said; reconciliation issues the credit note, referencing the dispute) and dunning
resumes on what is left once the credit is applied. One open dispute per invoice.
"""

from typing import Any, Literal

import asyncpg
from pydantic import Field

from dunning import outbox
from dunning.clock import utcnow
from dunning.events import envelope
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_ingest import repository
from dunning_ingest.idempotency import Reply
from dunning_ingest.messages import dispute_opened, dispute_resolved
from dunning_ingest.repository import disputes as repo
from dunning_ingest.stop_output import DisputeOut, dump
from dunning_ingest.stops import (
    DEFAULT_BY,
    AmountText,
    By,
    Note,
    Reason,
    StrictBody,
    acknowledged_open_invoice,
    amount_of,
    conflict,
    locked_invoice,
    not_open,
    reply,
)

log = get_logger(__name__)


class DisputeIn(StrictBody):
    reason: Reason
    amount: AmountText | None = Field(
        None, description="The amount disputed (at most the invoice's amount due); absent: the whole invoice."
    )
    opened_by: By = DEFAULT_BY


class ResolveIn(StrictBody):
    outcome: Literal["upheld", "rejected"] = Field(description="`upheld`: the customer is right (a credit follows).")
    credit_amount: AmountText | None = Field(
        None,
        description="Upheld only: the amount to credit, at most the balance; default the disputed amount (the "
        "balance if the whole invoice was disputed).",
    )
    note: Note | None = None
    resolved_by: By = DEFAULT_BY


class DisputeService:
    def __init__(self, pool: asyncpg.Pool, run: Any):
        self.pool = pool
        self.run = run  # InvoiceService.run: one transaction under the Idempotency-Key if one was sent

    async def open(
        self, tenant_id: str, invoice_id: str, body: DisputeIn, *, key: str | None, fingerprint: bytes | None
    ) -> Reply:
        """201 with the dispute: acknowledged under the fence, DisputeOpened in the outbox."""

        async def work(conn: asyncpg.Connection) -> Reply:
            acknowledged_at, invoice = await acknowledged_open_invoice(conn, tenant_id, invoice_id, "be disputed")
            if (current := await repo.open_dispute_of(conn, invoice_id)) is not None:
                message = f"invoice {invoice_id} has an open dispute ({current['dispute_id']}): resolve it first"
                raise conflict("invoice_id", message, "dispute_open", dispute_id=current["dispute_id"])
            currency = invoice["currency"]
            amount = None
            if body.amount is not None:
                amount = amount_of(
                    "amount", body.amount, currency, at_most=invoice["amount_due"], what="the invoice's amount due"
                )
            dispute = {
                "dispute_id": new_id("dsp"),
                "invoice_id": invoice_id,
                "tenant_id": tenant_id,
                "reason": body.reason,
                "currency": currency,
                "disputed_amount": amount,
                "opened_by": body.opened_by,
                "acknowledged_at": acknowledged_at,
            }
            env = envelope(dispute_opened(dispute))
            await repo.insert_dispute(conn, {**dispute, "event_id": env["id"]})
            await outbox.add_many(conn, [env])
            log.info("ingest.dispute.opened", invoice_id=invoice_id, dispute_id=dispute["dispute_id"])
            row = await repo.get_dispute(conn, tenant_id, invoice_id, dispute["dispute_id"])
            assert row is not None, "inserted in this transaction"
            location = f"/v1/invoices/{invoice_id}/disputes/{dispute['dispute_id']}"
            return reply(201, dump(DisputeOut.from_row(row)), {"location": location})

        return await self.run(tenant_id, key, fingerprint, work)

    async def resolve(self, tenant_id: str, invoice_id: str, dispute_id: str, body: ResolveIn) -> dict[str, Any]:
        """The dispute resolved (DisputeResolved in the outbox). The same outcome again answers it as it
        is; another outcome for a resolved dispute is a 409."""
        async with self.pool.acquire() as conn, conn.transaction():
            invoice = await locked_invoice(conn, tenant_id, invoice_id)
            dispute = await repo.get_dispute(conn, tenant_id, invoice_id, dispute_id, lock=True)
            if dispute is None:
                raise Problem.not_found("dispute_id", f"No dispute {dispute_id} on invoice {invoice_id}.")
            if dispute["status"] != "open":
                if dispute["status"] == body.outcome:
                    return dump(DisputeOut.from_row(dispute))  # a repeat: done already
                message = f"dispute {dispute_id} was resolved already ({dispute['status']})"
                raise conflict("outcome", message, "dispute_resolved", dispute_id=dispute_id)
            credit = _credit(invoice, dispute, body)
            resolution = {
                "outcome": body.outcome,
                "resolved_at": utcnow(),
                "credit_amount": credit,
                "note": body.note,
                "resolved_by": body.resolved_by,
            }
            resolved = await repo.resolve_dispute(conn, dispute_id, resolution)
            assert resolved is not None, "the dispute is locked and open"
            await outbox.add_many(conn, [envelope(dispute_resolved(resolved))])
            log.info("ingest.dispute.resolved", invoice_id=invoice_id, dispute_id=dispute_id, outcome=body.outcome)
            return dump(DisputeOut.from_row(resolved))

    async def list_disputes(self, tenant_id: str, invoice_id: str) -> list[dict[str, Any]] | None:
        """The invoice's disputes, oldest first; None if it is not the tenant's invoice."""
        async with self.pool.acquire() as conn:
            if await repository.get_invoice(conn, tenant_id, invoice_id) is None:
                return None
            return [dump(DisputeOut.from_row(r)) for r in await repo.disputes_of(conn, invoice_id)]


def _credit(invoice: Any, dispute: Any, body: ResolveIn) -> Any:
    """The amount an upheld dispute credits (None: rejected, or nothing left to credit)."""
    currency = invoice["currency"]
    if body.outcome == "rejected":
        if body.credit_amount is not None:
            raise Problem.invalid("credit_amount", "only an upheld dispute credits an amount", "not_upheld")
        return None
    if invoice["status"] != "open":
        if body.credit_amount is not None:
            raise not_open(invoice, "be credited")
        return None  # paid, void or written off meanwhile: nothing to credit
    if body.credit_amount is not None:
        return amount_of(
            "credit_amount", body.credit_amount, currency, at_most=invoice["balance"], what="the invoice's balance"
        )
    disputed = dispute["disputed_amount"]
    return invoice["balance"] if disputed is None else min(disputed, invoice["balance"])
