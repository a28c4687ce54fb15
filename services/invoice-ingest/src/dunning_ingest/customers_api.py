"""The customer routes of invoice-ingest (registered by api.create_app through `customer_routes`):

GET   /v1/customers                  the tenant's customers by external id; `external_id`, `email`, `limit`, `cursor`
GET   /v1/customers/{customer_id}    a customer with its contacts, open invoices and balance per currency; `ETag`
PATCH /v1/customers/{customer_id}    a JSON merge patch of name, email, cc, locale, timezone, ..., phone,
                                     postal_address; `If-Match` -> 412 if stale
"""

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query
from fastapi.responses import Response

from dunning.http import Cursor, Problem, TenantId, decode_cursor, limit_query, page
from dunning.http.preconditions import etag, if_match_header
from dunning_ingest.customer_output import CUSTOMER_ID, EXTERNAL_ID, CustomerDetail, CustomerList
from dunning_ingest.customers import CustomerPatch, CustomerService

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

TAG = {"name": "customers", "description": "The customers invoices name: contacts, locale, time zone, balances."}
IfMatch = Annotated[str | None, if_match_header("customer")]
# Ids are `cus_` and 26 characters; a longer one is refused naming it, before any body is read.
CustomerId = Annotated[str, Path(max_length=64, description="The customer's id (`cus_...`)")]
_PATCH_BODY = {"schema": {"$ref": "#/components/schemas/CustomerPatch"}}


def _json(body: Any, version: int | None = None) -> Response:
    headers = {"ETag": etag(version)} if version is not None else None
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _not_found(customer_id: str) -> Problem:
    return Problem.not_found("customer_id", f"No customer {customer_id!r}.")


def customer_routes(app: FastAPI, deps: "Deps") -> None:
    """Register the customer routes on the app, served by a CustomerService on the app's pool."""
    customers = CustomerService(deps.pool)
    app.openapi_tags = [*(app.openapi_tags or []), TAG]

    @app.get(
        "/v1/customers",
        response_class=Response,
        tags=["customers"],
        operation_id="listCustomers",
        summary="The tenant's customers, in the order of their external id",
        responses={200: {"model": CustomerList}},
    )
    async def list_customers(
        tenant_id: TenantId,
        external_id: Annotated[
            str | None, Query(max_length=200, description="The customer's id in the accounting system")
        ] = None,
        email: Annotated[str | None, Query(max_length=254, description="The primary address (case-blind)")] = None,
        limit: Annotated[int, limit_query(50, 200)] = 50,
        cursor: Cursor = None,
    ) -> Response:
        after = decode_cursor(cursor, EXTERNAL_ID)
        rows = await customers.list_customers(
            tenant_id, external_id=external_id, email=email, after=after, limit=limit + 1
        )
        return _json(page(rows, limit, key=lambda r: r["external_id"]))

    @app.get(
        "/v1/customers/{customer_id}",
        response_class=Response,
        tags=["customers"],
        operation_id="getCustomer",
        summary="A customer with its contacts, open invoices and balance per currency",
        responses={
            200: {
                "model": CustomerDetail,
                "headers": {"ETag": {"description": 'The customer\'s version, quoted: `"3"`'}},
            },
            404: {"description": "No such customer for this tenant"},
        },
    )
    async def get_customer(customer_id: CustomerId, tenant_id: TenantId) -> Response:
        body = await customers.read(tenant_id, customer_id) if CUSTOMER_ID.fullmatch(customer_id) else None
        if body is None:
            raise _not_found(customer_id)
        return _json(body, body["version"])

    @app.patch(
        "/v1/customers/{customer_id}",
        response_class=Response,
        tags=["customers"],
        operation_id="updateCustomer",
        summary="Change a customer's name, contacts, locale, time zone, country, tags or attributes (JSON merge patch)",
        description="The members given are set, the others kept; nothing to change answers the customer as "
        "it is, at the same version. A change makes version + 1 and publishes CustomerUpdated (with the "
        "customer's country, subdivision, tags and attributes, which the scheduler's working calendars and "
        "segment rules read). `country`, `subdivision`, `tags`, `attributes`: null clears them; a new country "
        "without a subdivision clears the subdivision. Example: "
        '`{"country": "DE", "subdivision": "BY", "tags": ["strategic"], "attributes": {"industry": "construction"}}`. '
        "`phone` (any valid number with its country code, stored in E.164: SMS and calls) and `postal_address` "
        '(`{"lines": ["Friedrichstraße 123"], "postal_code": "10117", "city": "Berlin", "country": "DE"}`: letters) '
        "are checked (422 naming e.g. `phone` or `postal_address.city`); null clears them.",
        responses={
            200: {
                "model": CustomerDetail,
                "headers": {"ETag": {"description": "The customer's version after the patch"}},
            },
            404: {"description": "No such customer for this tenant"},
            412: {"description": "If-Match names another version than the customer's: read it again"},
        },
        openapi_extra={"requestBody": {"content": {"application/merge-patch+json": _PATCH_BODY}}},
    )
    async def update_customer(
        customer_id: CustomerId,
        patch: CustomerPatch,
        tenant_id: TenantId,
        if_match: IfMatch = None,
    ) -> Response:
        if not CUSTOMER_ID.fullmatch(customer_id):
            raise _not_found(customer_id)
        body = await customers.patch(tenant_id, customer_id, patch, if_match)
        if body is None:
            raise _not_found(customer_id)
        return _json(body, body["version"])
