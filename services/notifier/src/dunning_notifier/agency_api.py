"""HTTP routes of the agency hand-off (agency.py).

PUT  /v1/agency                               the tenant's collection agency (webhook: the secret, once)
GET  /v1/agency                               as set (never the secret)
POST /v1/agency/secret/rotate                 a new webhook secret, returned once
GET  /v1/agency/cases                         the cases, newest first (state, invoice_id; cursor paging)
GET  /v1/agency/cases/{case_id}               one case with its case file (export mode: the agency downloads it here)
POST /v1/agency/cases/{case_id}/acknowledge   export mode: the agency has it; the hand-off completes
"""

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints, model_validator

from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page
from dunning.logging import get_logger
from dunning_notifier import agency, tasks
from dunning_notifier import agency_repository as repo
from dunning_notifier.tasks_api import IdempotencyKey

log = get_logger(__name__)
TAG = {"name": "agency", "description": "The hand-off of unpaid invoices to the tenant's collection agency."}
CASE_ID = r"^case_[0-9A-Za-z]{10,40}$"
_CASE_ID = re.compile(CASE_ID)
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
CaseState = Literal["sending", "awaiting_acknowledgement", "handed_over"]


class AgencyIn(BaseModel):
    model_config = {"extra": "forbid"}
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")] = Field(
        description="The agency's name, as the debtor's `handed_over` notice names it."
    )
    mode: Literal["webhook", "export"] = Field(
        description="webhook: each case is POSTed to `url`, signed (Standard Webhooks); export: the agency "
        "downloads cases (GET /v1/agency/cases) and acknowledges each."
    )
    url: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="webhook mode: the agency's http(s) endpoint; not allowed in export mode."
    )
    contact_email: Annotated[str, StringConstraints(max_length=320)] = Field(
        description="Where the debtor reaches the agency (quoted in the handed_over notice)."
    )

    @model_validator(mode="after")
    def _checked(self) -> "AgencyIn":
        if not _EMAIL.fullmatch(self.contact_email):
            raise Problem.invalid("contact_email", "must be an e-mail address", "invalid_email")
        if self.mode == "webhook":
            if self.url is None:
                raise Problem.invalid("url", "required in webhook mode", "missing")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise Problem.invalid("url", "must be an absolute http(s) URL", "invalid_url")
        elif self.url is not None:
            raise Problem.invalid("url", "only in webhook mode", "not_for_mode")
        return self


class AgencyOut(BaseModel):
    name: str
    mode: str
    url: str | None
    contact_email: str
    secret_set: bool = Field(description="webhook mode: a signing secret exists (shown once, when made)")
    secret: str | None = Field(None, description="Only in the answer that made it: the `whsec_` signing secret")
    secret_rotated_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _agency_out(row: Any, secret: str | None = None) -> dict[str, Any]:
    out = AgencyOut(
        name=row["name"],
        mode=row["mode"],
        url=row["url"],
        contact_email=row["contact_email"],
        secret_set=row["secret"] is not None,
        secret=secret,
        secret_rotated_at=row["secret_rotated_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
    return out.model_dump(mode="json")


class CaseOut(BaseModel):
    case_id: str
    invoice_id: str
    customer_id: str | None
    delivery_id: str
    agency_name: str
    mode: str
    state: CaseState
    balance: Decimal
    currency: str
    attempts: int
    last_error: str | None
    acknowledged_by: str | None
    handed_over_at: datetime | None
    created_at: datetime
    case_file: dict[str, Any] | None = Field(
        None, description="The case file (one case's GET only): customer, invoices, totals, timeline, tasks"
    )


def _case_out(row: Any, with_file: bool = False) -> dict[str, Any]:
    data = {k: row[k] for k in CaseOut.model_fields if k != "case_file"}
    if with_file:
        data["case_file"] = {k: v for k, v in row["case_file"].items() if k != "payload"}
    return CaseOut(**data).model_dump(mode="json")


class AcknowledgeIn(BaseModel):
    model_config = {"extra": "forbid"}
    acknowledged_by: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")] = Field(
        "agency", description="Who acknowledges (the agency, or an operator)."
    )


def _case_id(case_id: str) -> str:
    if not _CASE_ID.fullmatch(case_id):
        raise Problem.not_found("case_id", f"No case {case_id!r}.")
    return case_id


CaseIdPath = Annotated[str, Path(max_length=64, description="The case's id (`case_...`)")]
_NO_AGENCY: dict[int | str, dict[str, Any]] = {404: {"description": "The tenant has set no agency"}}


def agency_router(deps: Any) -> APIRouter:
    """The routes above; `deps`: api.ApiDeps (pool, settings)."""
    router = APIRouter(tags=["agency"])

    @router.put(
        "/v1/agency",
        response_model=AgencyOut,
        operation_id="putAgency",
        summary="Set the tenant's collection agency",
        description=(
            "webhook mode: a Standard Webhooks secret (`whsec_...`) is made the first time and returned in this"
            " answer only (`secret`); later PUTs keep it (rotate it with POST /v1/agency/secret/rotate). export"
            " mode: no url, no secret. Applies to cases made from now on."
        ),
    )
    async def put_agency(body: AgencyIn, tenant_id: TenantId) -> JSONResponse:
        async with deps.pool.acquire() as conn, conn.transaction():
            before = await repo.get_agency(conn, tenant_id, lock=True)
            fresh = agency.new_secret() if body.mode == "webhook" and (before is None or not before["secret"]) else None
            row = await repo.upsert_agency(
                conn,
                tenant_id,
                name=body.name,
                mode=body.mode,
                url=body.url,
                contact_email=body.contact_email,
                secret=fresh,
            )
        log.info("notifier.agency.set", mode=body.mode, secret_made=fresh is not None)
        return JSONResponse(_agency_out(row, fresh), status_code=200)

    @router.get(
        "/v1/agency",
        response_model=AgencyOut,
        operation_id="getAgency",
        summary="The tenant's collection agency",
        responses=_NO_AGENCY,
    )
    async def get_agency(tenant_id: TenantId) -> dict[str, Any]:
        row = await repo.get_agency(deps.pool, tenant_id)
        if row is None:
            raise Problem.not_found("agency", "This tenant has set no collection agency (PUT /v1/agency).")
        return _agency_out(row)

    @router.post(
        "/v1/agency/secret/rotate",
        response_model=AgencyOut,
        operation_id="rotateAgencySecret",
        summary="A new webhook signing secret (returned once)",
        description="The old secret stops signing at once: give the agency the new one.",
        responses={**_NO_AGENCY, 409: {"description": "The agency is in export mode (no secret)"}},
    )
    async def rotate_secret(tenant_id: TenantId) -> dict[str, Any]:
        async with deps.pool.acquire() as conn, conn.transaction():
            current = await repo.get_agency(conn, tenant_id, lock=True)
            if current is None:
                raise Problem.not_found("agency", "This tenant has set no collection agency (PUT /v1/agency).")
            if current["mode"] != "webhook":
                raise Problem.invalid("mode", "export mode has no webhook secret", "not_webhook_mode", status=409)
            secret = agency.new_secret()
            row = await repo.rotate_secret(conn, tenant_id, secret)
        log.info("notifier.agency.secret_rotated")
        return _agency_out(row, secret)

    @router.get(
        "/v1/agency/cases",
        response_model=Page[CaseOut],
        operation_id="listAgencyCases",
        summary="The agency cases, newest first",
        description="Export mode: `state=awaiting_acknowledgement` lists the cases the agency has to collect.",
    )
    async def list_cases(
        tenant_id: TenantId,
        state: Annotated[CaseState | None, Query(description="only cases in this state")] = None,
        invoice_id: Annotated[str | None, Query(max_length=64, description="only this invoice's")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        before = decode_cursor(cursor, _CASE_ID)
        rows = await repo.list_cases(
            deps.pool, tenant_id, state=state, invoice_id=invoice_id, before=before, limit=limit + 1
        )
        return page(rows, limit, key=lambda r: r["case_id"], view=_case_out)

    @router.get(
        "/v1/agency/cases/{case_id}",
        response_model=CaseOut,
        operation_id="getAgencyCase",
        summary="One case with its case file",
        description="The case file: the customer's contacts, the invoice(s) with balance and currency, every"
        " reminder the notifier sent, failed or dropped for the invoice (dates, channels), its call tasks.",
        responses={404: {"description": "No such case for this tenant"}},
    )
    async def get_case(case_id: CaseIdPath, tenant_id: TenantId) -> dict[str, Any]:
        row = await repo.get_case(deps.pool, tenant_id, _case_id(case_id))
        if row is None:
            raise Problem.not_found("case_id", f"No case {case_id!r} for this tenant.")
        return _case_out(row, with_file=True)

    @router.post(
        "/v1/agency/cases/{case_id}/acknowledge",
        response_model=CaseOut,
        operation_id="acknowledgeAgencyCase",
        summary="The agency has the case: the hand-off completes",
        description=(
            "Export mode. The case becomes `handed_over`: InvoiceHandedToAgency is published (the invoice's"
            " dunning stops, `with_agency`) and the debtor's `handed_over` notice is sent. Acknowledging a case"
            " handed over already answers it unchanged. 409 for a webhook-mode case (its 2xx hands it over)."
        ),
        responses={404: {"description": "No such case for this tenant"}, 409: {"description": "A webhook case"}},
    )
    async def acknowledge_case(
        case_id: CaseIdPath,
        request: Request,
        tenant_id: TenantId,
        body: AcknowledgeIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        case_id = _case_id(case_id)
        by = (body or AcknowledgeIn()).acknowledged_by

        async def work(conn: Any) -> tuple[int, Any]:
            case = await repo.get_case(conn, tenant_id, case_id, lock=True)
            if case is None:
                raise Problem.not_found("case_id", f"No case {case_id!r} for this tenant.")
            if case["mode"] != "export":
                raise Problem.invalid(
                    "case_id", "a webhook case is handed over by the agency's 2xx", "webhook_case", 409
                )
            await agency.complete_hand_over(conn, case, acknowledged_by=by, payload=None)
            return 200, _case_out(await repo.get_case(conn, tenant_id, case_id))

        status, answer = await tasks.once(
            deps.pool, tenant_id, idempotency_key, tasks.fingerprint("POST", request.url.path, body), work
        )
        return JSONResponse(answer, status_code=status)

    return router
