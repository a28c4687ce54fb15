"""An upheld dispute's credit note (the handler of DisputeResolved, in the consumer runner's transaction).

When invoice-ingest resolves a dispute `upheld` with a credit amount, reconciliation issues the
credit note for it through the same code path as `POST /v1/credit-notes` (`credit_notes.issue`: the
payments watermark's acknowledgement fence, the balance, CreditNoteIssued to the outbox), with the
dispute id as its `reference` and the reason "dispute upheld". The reference makes it idempotent:
a redelivered or republished DisputeResolved answers the first credit note and changes nothing.
The scheduler keeps the invoice paused until that CreditNoteIssued arrives (then resumes or settles).

What the credit note route would refuse is not an error of the event: an invoice already settled,
void or written off has nothing left to credit (the scheduler stopped it anyway), so it is logged and
skipped; an event whose amount the invoice's currency cannot hold is dead-lettered.
"""

import asyncpg
from pydantic import ValidationError

from dunning.contracts import DisputeResolved
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.http import Problem
from dunning.logging import get_logger
from dunning_reconciliation.credit_notes import credit_note_request, issue
from dunning_reconciliation.schemas import CreditNoteIn

log = get_logger(__name__)
REASON = "dispute upheld"


async def on_dispute_resolved(conn: asyncpg.Connection, event: Event[DisputeResolved]) -> None:
    d = event.data
    check_envelope(event)
    if d.outcome != "upheld" or d.credit_amount is None or d.credit_amount <= 0:
        log.info("reconciliation.dispute.no_credit", dispute_id=d.dispute_id, outcome=d.outcome)
        return
    try:
        body = CreditNoteIn(
            invoice_id=d.invoice_id,
            reference=d.dispute_id,
            amount=str(d.credit_amount),
            currency=d.currency,
            reason=REASON,
        )
        status, view = await issue(conn, credit_note_request(event.tenant_id, body))
    except ValidationError as exc:
        raise Rejected(f"the dispute's credit note cannot be issued: {exc.errors()[0]['msg']}") from None
    except Problem as problem:
        if problem.status == 422:
            raise Rejected(f"the dispute's credit note cannot be issued: {problem.detail}") from None
        log.warning(
            "reconciliation.dispute.credit_refused",
            dispute_id=d.dispute_id,
            status=problem.status,
            detail=problem.detail,
        )
        return
    log.info(
        "reconciliation.dispute.credited",
        dispute_id=d.dispute_id,
        credit_note_id=view["credit_note_id"],
        amount_applied=view["amount_applied"],
        repeated=status == 200,
    )
