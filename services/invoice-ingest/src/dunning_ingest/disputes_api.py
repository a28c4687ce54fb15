"""The dispute routes of invoice-ingest (registered by api.create_app through `dispute_routes`):

POST /v1/invoices/{invoice_id}/disputes                         open a dispute: dunning pauses (201; Idempotency-Key)
GET  /v1/invoices/{invoice_id}/disputes                         the invoice's disputes, oldest first
POST /v1/invoices/{invoice_id}/disputes/{dispute_id}/resolve    upheld (a credit follows) or rejected: dunning resumes
"""

from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import Body, FastAPI, Path, Request
from fastapi.responses import Response

from dunning.http import Problem, TenantId
from dunning_ingest.disputes import DisputeIn, DisputeService, ResolveIn
from dunning_ingest.invoice_output import INVOICE_ID
from dunning_ingest.stop_output import DISPUTE_ID, DisputeList, DisputeOut
from dunning_ingest.stops_api import IdempotencyKey, answer, created, keyed

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

TAG = {"name": "disputes", "description": "A customer contests an invoice: its dunning pauses until resolved."}
InvoiceId = Annotated[str, Path(max_length=64, description="The invoice's id (`inv_...`)")]
DisputeId = Annotated[str, Path(max_length=64, description="The dispute's id (`dsp_...`)")]
_OPEN_EXAMPLES = {
    "part": {
        "summary": "Part of the invoice disputed",
        "value": {
            "reason": "Two of the five licences were never delivered",
            "amount": "500.00",
            "opened_by": "ar@acme.example",
        },
    },
    "whole": {"summary": "The whole invoice disputed", "value": {"reason": "Never ordered"}},
}
_RESOLVE_EXAMPLES = {
    "upheld": {
        "summary": "Upheld: credit the disputed amount",
        "value": {"outcome": "upheld", "note": "Licences not delivered: credited", "resolved_by": "ar@acme.example"},
    },
    "rejected": {
        "summary": "Rejected: dunning resumes",
        "value": {"outcome": "rejected", "note": "Delivery signed for"},
    },
}


def _invoice_id(invoice_id: str) -> str:
    if not INVOICE_ID.fullmatch(invoice_id):
        raise Problem.not_found("invoice_id", f"No invoice {invoice_id!r}.")
    return invoice_id


def dispute_routes(app: FastAPI, deps: "Deps") -> None:
    """Register the dispute routes on the app, served by a DisputeService on the app's pool."""
    disputes = DisputeService(deps.pool, deps.invoices.run)
    app.openapi_tags = [*(app.openapi_tags or []), TAG]

    @app.post(
        "/v1/invoices/{invoice_id}/disputes",
        status_code=201,
        response_class=Response,
        tags=["disputes"],
        operation_id="openDispute",
        summary="Open a dispute: the invoice's dunning pauses",
        description="The open invoice's dunning pauses from the answer's `acknowledged_at` (no reminder scheduled "
        "at or after it is sent) until the dispute is resolved. `amount`: the part disputed (at most the amount "
        "due); absent, the whole invoice. One open dispute per invoice (409 `dispute_open`). Publishes "
        "DisputeOpened.",
        responses=created("The dispute, open", DisputeOut),
    )
    async def open_dispute(
        invoice_id: InvoiceId,
        request: Request,
        tenant_id: TenantId,
        dispute: Annotated[DisputeIn, Body(openapi_examples=_OPEN_EXAMPLES)],
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        invoice_id = _invoice_id(invoice_id)
        key, fingerprint = keyed(idempotency_key, "POST", request.scope["path"], dispute)
        return answer(await disputes.open(tenant_id, invoice_id, dispute, key=key, fingerprint=fingerprint))

    @app.get(
        "/v1/invoices/{invoice_id}/disputes",
        response_class=Response,
        tags=["disputes"],
        operation_id="listDisputes",
        summary="The invoice's disputes, oldest first",
        responses={200: {"model": DisputeList}, 404: {"description": "No such invoice for this tenant"}},
    )
    async def list_disputes(invoice_id: InvoiceId, tenant_id: TenantId) -> Response:
        rows = await disputes.list_disputes(tenant_id, _invoice_id(invoice_id))
        if rows is None:
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id}.")
        return Response(orjson.dumps({"data": rows}), media_type="application/json")

    @app.post(
        "/v1/invoices/{invoice_id}/disputes/{dispute_id}/resolve",
        response_class=Response,
        tags=["disputes"],
        operation_id="resolveDispute",
        summary="Resolve a dispute: upheld (credited) or rejected",
        description="`rejected`: dunning resumes (without a burst: the policy's `pauses.resume`). `upheld`: "
        "reconciliation issues a credit note of `credit_amount` (default: the disputed amount, at most the "
        "balance; the whole balance if the whole invoice was disputed) referencing the dispute, and dunning "
        "resumes on what is left once it is applied (or the invoice is settled). Publishes DisputeResolved. "
        "The same outcome again answers the dispute as it is; another one is a 409 `dispute_resolved`.",
        responses={
            200: {"model": DisputeOut, "description": "The dispute, resolved"},
            404: {"description": "No such invoice or dispute for this tenant"},
            409: {"description": "Resolved already with the other outcome, or credited on a closed invoice"},
        },
    )
    async def resolve_dispute(
        invoice_id: InvoiceId,
        dispute_id: DisputeId,
        tenant_id: TenantId,
        resolution: Annotated[ResolveIn, Body(openapi_examples=_RESOLVE_EXAMPLES)],
    ) -> Response:
        invoice_id = _invoice_id(invoice_id)
        if not DISPUTE_ID.fullmatch(dispute_id):
            raise Problem.not_found("dispute_id", f"No dispute {dispute_id!r}.")
        body = await disputes.resolve(tenant_id, invoice_id, dispute_id, resolution)
        return Response(orjson.dumps(body), media_type="application/json")
