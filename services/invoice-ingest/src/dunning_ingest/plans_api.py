"""The payment plan routes of invoice-ingest (registered by api.create_app through `plan_routes`):

POST   /v1/invoices/{id}/payment-plans   a plan over one invoice's balance
POST   /v1/payment-plans                 a plan over several open invoices of one customer
GET    /v1/payment-plans                 the tenant's plans, newest first; `customer_id`, `status`, `limit` + `cursor`
GET    /v1/payment-plans/{plan_id}       a plan with its invoices and each instalment's state
DELETE /v1/payment-plans/{plan_id}       cancel it: dunning resumes on what is left
"""

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import Response

from dunning.http import Cursor, Problem, TenantId, decode_cursor, limit_query, page
from dunning_ingest.customer_output import CUSTOMER_ID
from dunning_ingest.idempotency import MAX_KEY_LENGTH, Reply, checked_key
from dunning_ingest.invoice_output import INVOICE_ID
from dunning_ingest.plans import PLAN_ID, CustomerPlanIn, InvoicePlanIn, PlanList, PlanOut, PlanStatus
from dunning_ingest.plans_service import PlanService
from dunning_ingest.schemas import canonical_fingerprint

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

TAG = {
    "name": "payment plans",
    "description": "A customer's open invoices paid in instalments: the original reminders pause while the plan "
    "is honoured; each instalment has its own reminders; a missed one breaks the plan and dunning resumes.",
}
PlanId = Annotated[str, Path(max_length=64, description="The plan's id (`pln_...`)")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Optional. Replays the first response (with `Idempotent-Replayed: true`) for 24 h.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH},
    ),
]
_AGREE_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": PlanOut, "description": "Agreed: `acknowledged_at` is the instant the invoices' dunning paused"},
    404: {"description": "No such invoice (or customer) for this tenant"},
    409: {
        "description": "An invoice is not open (`invoice_closed`: paid, void, written off) or already in an active "
        "plan (`payment_plan_active`, with its `plan_id`) or under a pending promise to pay (`promise_pending`)"
    },
    422: {"description": "The instalments cannot be agreed: the problem names the field"},
}
_AGREE_DESCRIPTION = (
    "Give the instalments one by one (`instalments`: due dates strictly increasing, the first today or later "
    "in the customer's time zone, amounts adding up to the balance exactly) or as `count` + `first_due_date` + "
    "`interval` (the balance split evenly, the remainder on the last). At most 36. The invoices' pending "
    "reminders pause from `acknowledged_at` (PaymentPlanAgreed); each instalment gets the policy's "
    "`payment_plans.reminders`; payments cover instalments in order; one unpaid past its due date and the "
    "policy's grace breaks the plan and dunning resumes on the whole remaining balance."
)


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _plan_id(plan_id: str) -> str:
    if not PLAN_ID.fullmatch(plan_id):
        raise Problem.not_found("plan_id", f"No payment plan {plan_id!r}.")
    return plan_id


def plan_routes(app: FastAPI, deps: "Deps") -> None:
    """Register the payment plan routes on the app, served by a PlanService on the app's pool."""
    service = PlanService(deps.pool, deps.invoices.run)
    app.openapi_tags = [*(app.openapi_tags or []), TAG]

    def fingerprint(request: Request, body: Any, key: str | None) -> bytes | None:
        if key is None:
            return None
        return canonical_fingerprint("POST", request.scope["path"], body.model_dump(mode="json", exclude_unset=True))

    @app.post(
        "/v1/invoices/{invoice_id}/payment-plans",
        status_code=201,
        response_class=Response,
        tags=["payment plans"],
        operation_id="createInvoicePaymentPlan",
        summary="Agree a payment plan over an invoice's balance",
        description=_AGREE_DESCRIPTION,
        responses=_AGREE_RESPONSES,
    )
    async def agree_for_invoice(
        invoice_id: Annotated[str, Path(max_length=64, description="The invoice's id (`inv_...`)")],
        terms: InvoicePlanIn,
        request: Request,
        tenant_id: TenantId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        if not INVOICE_ID.fullmatch(invoice_id):
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id!r}.")
        key = checked_key(idempotency_key)
        reply = await service.agree(
            tenant_id,
            terms,
            invoice_ids=[invoice_id],
            fields=["invoice_id"],
            key=key,
            fingerprint=fingerprint(request, terms, key),
        )
        return _response(reply)

    @app.post(
        "/v1/payment-plans",
        status_code=201,
        response_class=Response,
        tags=["payment plans"],
        operation_id="createPaymentPlan",
        summary="Agree a payment plan over several open invoices of one customer",
        description="`customer_id` and `invoice_ids` (up to 50 open invoices of that customer, in one currency); "
        + _AGREE_DESCRIPTION,
        responses=_AGREE_RESPONSES,
    )
    async def agree_for_customer(
        terms: CustomerPlanIn, request: Request, tenant_id: TenantId, idempotency_key: IdempotencyKey = None
    ) -> Response:
        if not CUSTOMER_ID.fullmatch(terms.customer_id):
            raise Problem.not_found("customer_id", f"No customer {terms.customer_id!r}.")
        fields = [f"invoice_ids.{i}" for i in range(len(terms.invoice_ids))]
        for i, invoice_id in enumerate(terms.invoice_ids):
            if not INVOICE_ID.fullmatch(invoice_id):
                raise Problem.not_found(fields[i], f"No invoice {invoice_id!r}.")
            if invoice_id in terms.invoice_ids[:i]:
                raise Problem.invalid(fields[i], f"{invoice_id} is named twice", "duplicate")
        key = checked_key(idempotency_key)
        reply = await service.agree(
            tenant_id,
            terms,
            invoice_ids=terms.invoice_ids,
            fields=fields,
            customer_id=terms.customer_id,
            key=key,
            fingerprint=fingerprint(request, terms, key),
        )
        return _response(reply)

    @app.get(
        "/v1/payment-plans",
        response_class=Response,
        tags=["payment plans"],
        operation_id="listPaymentPlans",
        summary="The tenant's payment plans, newest first",
        responses={200: {"model": PlanList}},
    )
    async def list_plans(
        tenant_id: TenantId,
        customer_id: Annotated[str | None, Query(max_length=64, description="Only this customer's (`cus_...`)")] = None,
        status: Annotated[PlanStatus | None, Query(description="Only plans in this status")] = None,
        limit: Annotated[int, limit_query(50, 200)] = 50,
        cursor: Cursor = None,
    ) -> Response:
        after = decode_cursor(cursor, PLAN_ID)
        views = await service.list(tenant_id, customer_id=customer_id, status=status, after_id=after, limit=limit + 1)
        return _json(page(views, limit, key=lambda v: v["plan_id"]))

    @app.get(
        "/v1/payment-plans/{plan_id}",
        response_class=Response,
        tags=["payment plans"],
        operation_id="getPaymentPlan",
        summary="A payment plan with its invoices and each instalment's state",
        responses={200: {"model": PlanOut}, 404: {"description": "No such plan for this tenant"}},
    )
    async def get_plan(plan_id: PlanId, tenant_id: TenantId) -> Response:
        return _json(await service.read(tenant_id, _plan_id(plan_id)))

    @app.delete(
        "/v1/payment-plans/{plan_id}",
        response_class=Response,
        tags=["payment plans"],
        operation_id="cancelPaymentPlan",
        summary="Cancel a payment plan: dunning resumes on what is left",
        description="An active plan becomes `cancelled` (PaymentPlanCancelled): its instalment reminders are "
        "cancelled and the invoices' own dunning resumes (with the policy's `pauses.resume`). Cancelling a "
        "cancelled plan answers it as it is; a completed or broken plan is a 409.",
        responses={
            200: {"model": PlanOut, "description": "The cancelled plan"},
            404: {"description": "No such plan for this tenant"},
            409: {"description": "The plan is completed or broken (`plan_ended`)"},
        },
    )
    async def cancel_plan(
        plan_id: PlanId,
        tenant_id: TenantId,
        cancelled_by: Annotated[str, Query(min_length=1, max_length=200, description="Who cancelled it")] = "api",
        reason: Annotated[str, Query(min_length=1, max_length=500, description="Why")] = "cancelled",
    ) -> Response:
        reply = await service.cancel(tenant_id, _plan_id(plan_id), cancelled_by=cancelled_by, reason=reason)
        return _response(reply)
