"""The hold routes of invoice-ingest (registered by api.create_app through `hold_routes`):

POST   /v1/holds              place a hold on an invoice or on a whole customer (201; Idempotency-Key)
GET    /v1/holds              the tenant's holds, newest first; `status`, `invoice_id`, `customer_id`; `limit`, `cursor`
GET    /v1/holds/{hold_id}    one hold
DELETE /v1/holds/{hold_id}    release it (200 with the released hold; again: 200, unchanged)
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.responses import Response

from dunning.http import Cursor, Problem, TenantId, decode_cursor, limit_query, page
from dunning_ingest.holds import HoldIn, HoldService
from dunning_ingest.stop_output import HOLD_ID, HoldList, HoldOut
from dunning_ingest.stops import DEFAULT_BY
from dunning_ingest.stops_api import IdempotencyKey, answer, created, keyed

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

TAG = {"name": "holds", "description": "Dunning blocks on an invoice or a whole customer."}
HoldId = Annotated[str, Path(max_length=64, description="The hold's id (`hld_...`)")]
_EXAMPLES = {
    "invoice": {
        "summary": "Hold one invoice until a date",
        "value": {
            "invoice_id": "inv_01JD7Y0Q9R3M4N5P6Q7R8S9T0V",
            "reason": "Key account: the account manager is talking to them",
            "placed_by": "maria@acme.example",
            "ends_at": "2026-12-15T09:00:00Z",
        },
    },
    "customer": {
        "summary": "Hold every invoice of a customer, until released",
        "value": {"customer_external_id": "CUST-0042", "reason": "Insolvency proceedings", "placed_by": "legal"},
    },
}


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _not_found(hold_id: str) -> Problem:
    return Problem.not_found("hold_id", f"No hold {hold_id!r}.")


def hold_routes(app: FastAPI, deps: "Deps") -> None:
    """Register the hold routes on the app, served by a HoldService on the app's pool."""
    holds = HoldService(deps.pool, deps.invoices.run)
    app.openapi_tags = [*(app.openapi_tags or []), TAG]

    @app.post(
        "/v1/holds",
        status_code=201,
        response_class=Response,
        tags=["holds"],
        operation_id="createHold",
        summary="Place a hold on an invoice or on a whole customer",
        description="Exactly one of `invoice_id`, `invoice_external_id` (one open invoice), `customer_id`, "
        "`customer_external_id` (every invoice of the customer, present and future). The answer's "
        "`acknowledged_at` is the promise's instant: no reminder of a held invoice scheduled at or after it is "
        "sent, on any channel. Dunning resumes when the hold is released (DELETE) or at `ends_at`, without a "
        "burst (the policy's `pauses.resume`). Publishes HoldPlaced.",
        responses=created("The hold, active", HoldOut),
    )
    async def create_hold(
        request: Request,
        tenant_id: TenantId,
        hold: Annotated[HoldIn, Body(openapi_examples=_EXAMPLES)],
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        key, fingerprint = keyed(idempotency_key, "POST", request.scope["path"], hold)
        return answer(await holds.place(tenant_id, hold, key=key, fingerprint=fingerprint))

    @app.get(
        "/v1/holds",
        response_class=Response,
        tags=["holds"],
        operation_id="listHolds",
        summary="The tenant's holds, newest first",
        responses={200: {"model": HoldList}},
    )
    async def list_holds(
        tenant_id: TenantId,
        status: Literal["active", "released", "expired"] | None = None,
        invoice_id: Annotated[
            str | None, Query(max_length=64, description="The holds covering this invoice (its own and its customer's)")
        ] = None,
        customer_id: Annotated[str | None, Query(max_length=64, description="The holds of this customer")] = None,
        limit: Annotated[int, limit_query(50, 200)] = 50,
        cursor: Cursor = None,
    ) -> Response:
        after = decode_cursor(cursor, HOLD_ID)
        rows = await holds.list_holds(
            tenant_id, status=status, invoice_id=invoice_id, customer_id=customer_id, after=after, limit=limit + 1
        )
        return _json(page(rows, limit, key=lambda r: r["hold_id"]))

    @app.get(
        "/v1/holds/{hold_id}",
        response_class=Response,
        tags=["holds"],
        operation_id="getHold",
        summary="One hold",
        responses={200: {"model": HoldOut}, 404: {"description": "No such hold for this tenant"}},
    )
    async def get_hold(hold_id: HoldId, tenant_id: TenantId) -> Response:
        body = await holds.read(tenant_id, hold_id) if HOLD_ID.fullmatch(hold_id) else None
        if body is None:
            raise _not_found(hold_id)
        return _json(body)

    @app.delete(
        "/v1/holds/{hold_id}",
        response_class=Response,
        tags=["holds"],
        operation_id="releaseHold",
        summary="Release a hold",
        description="An active hold is released (HoldReleased): dunning resumes once no other hold, dispute, "
        "promise or plan pauses the invoice, the owed stages spaced as the policy says. A hold released or "
        "expired already is answered as it is (200, unchanged).",
        responses={200: {"model": HoldOut}, 404: {"description": "No such hold for this tenant"}},
    )
    async def release_hold(
        hold_id: HoldId,
        tenant_id: TenantId,
        released_by: Annotated[
            str, Query(min_length=1, max_length=200, pattern=r"\S", description=f'Who (default "{DEFAULT_BY}")')
        ] = DEFAULT_BY,
    ) -> Response:
        body = await holds.release(tenant_id, hold_id, released_by) if HOLD_ID.fullmatch(hold_id) else None
        if body is None:
            raise _not_found(hold_id)
        return _json(body)
