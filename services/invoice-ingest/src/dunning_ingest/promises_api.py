"""The promise routes of invoice-ingest (registered by api.create_app through `promise_routes`):

POST /v1/invoices/{invoice_id}/promises    a promise to pay: dunning pauses until its deadline (201; Idempotency-Key)
GET  /v1/invoices/{invoice_id}/promises    the invoice's promises, oldest first, with the scheduler's verdicts
"""

from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import Body, FastAPI, Path, Request
from fastapi.responses import Response

from dunning.http import Problem, TenantId
from dunning_ingest.invoice_output import INVOICE_ID
from dunning_ingest.promises import PromiseIn, PromiseService
from dunning_ingest.stop_output import PromiseList, PromiseOut
from dunning_ingest.stops_api import IdempotencyKey, answer, created, keyed

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

TAG = {"name": "promises", "description": "Promises to pay: dunning pauses until the promised day plus a grace."}
InvoiceId = Annotated[str, Path(max_length=64, description="The invoice's id (`inv_...`)")]
_EXAMPLES = {
    "promise": {
        "summary": "Half the balance by 10 December",
        "value": {
            "amount": "625.00",
            "date": "2026-12-10",
            "note": "Promised on the phone",
            "made_by": "ar@acme.example",
        },
    },
    "promise_by": {
        "summary": "The whole balance by 17:00 on Friday",
        "description": "`by` instead of `date`: the deadline is that instant plus the grace, not the day's end.",
        "value": {
            "amount": "1250.00",
            "by": "2026-12-11T17:00:00+01:00",
            "note": "Treasury releases payments at 17:00 on Friday",
            "made_by": "ar@acme.example",
        },
    },
}


def _invoice_id(invoice_id: str) -> str:
    if not INVOICE_ID.fullmatch(invoice_id):
        raise Problem.not_found("invoice_id", f"No invoice {invoice_id!r}.")
    return invoice_id


def promise_routes(app: FastAPI, deps: "Deps") -> None:
    """Register the promise routes on the app, served by a PromiseService on the app's pool."""
    promises = PromiseService(deps.pool, deps.invoices.run)
    app.openapi_tags = [*(app.openapi_tags or []), TAG]

    @app.post(
        "/v1/invoices/{invoice_id}/promises",
        status_code=201,
        response_class=Response,
        tags=["promises"],
        operation_id="makePromise",
        summary="Record a promise to pay: the invoice's dunning pauses",
        description="The customer promises `amount` (at most the balance) by `date` (a day in its time zone: "
        'today or later, within a year) or `by` an instant (RFC 3339, in the future, within a year: "by 17:00 on '
        "Friday\"); exactly one of the two (422 naming the field otherwise). Dunning pauses from the answer's "
        "`acknowledged_at` until the end of that day (or the instant `by`, shown as `due_by`; `promised_date` is "
        "then its day in the customer's zone) plus the policy's `pauses.promise_grace`: paid by then, the promise "
        "is `kept`; otherwise `broken`, "
        "and dunning resumes with a `promise_broken` reminder quoting it, then the stages owed. One pending "
        "promise per invoice (409 `promise_pending`), none under an active payment plan (409 "
        "`payment_plan_active`). Publishes PromiseMade.",
        responses=created("The promise, pending", PromiseOut),
    )
    async def make_promise(
        invoice_id: InvoiceId,
        request: Request,
        tenant_id: TenantId,
        promise: Annotated[PromiseIn, Body(openapi_examples=_EXAMPLES)],
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        invoice_id = _invoice_id(invoice_id)
        key, fingerprint = keyed(idempotency_key, "POST", request.scope["path"], promise)
        return answer(await promises.make(tenant_id, invoice_id, promise, key=key, fingerprint=fingerprint))

    @app.get(
        "/v1/invoices/{invoice_id}/promises",
        response_class=Response,
        tags=["promises"],
        operation_id="listPromises",
        summary="The invoice's promises, oldest first",
        responses={200: {"model": PromiseList}, 404: {"description": "No such invoice for this tenant"}},
    )
    async def list_promises(invoice_id: InvoiceId, tenant_id: TenantId) -> Response:
        rows = await promises.list_promises(tenant_id, _invoice_id(invoice_id))
        if rows is None:
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id}.")
        return Response(orjson.dumps({"data": rows}), media_type="application/json")
