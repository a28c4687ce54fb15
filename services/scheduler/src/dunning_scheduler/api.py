"""HTTP routes of the scheduler (all but health and metrics need `Authorization: Bearer <api key>`).

PUT  /v1/policy                        store the tenant's policy document as a new version
                                       (?apply_to=open_invoices: and re-plan the open invoices with it)
GET  /v1/policy                        the active policy (the built-in default if none stored)
GET  /v1/policy/replans/{replan_id}    progress of a policy applied to open invoices
GET  /v1/invoices/{invoice_id}/timers  the invoice's timers (ops / debugging)
GET  /healthz, /readyz, /metrics, /docs
"""

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Body, FastAPI, Path, Query

from dunning.http import Problem, TenantId, json_body, service_app
from dunning.money import format_amount
from dunning_scheduler import repository
from dunning_scheduler.policy import DEFAULT_DOCUMENT, PolicyError, parse_policy
from dunning_scheduler.policy_store import active_policy, put_policy
from dunning_scheduler.schemas import InvoiceTimersOut, PolicyOut, ReplanOut, TimerOut
from dunning_scheduler.settings import Settings

TAGS = [
    {"name": "policy", "description": "The tenant's dunning policy: which reminders, when, on which channel."},
    {"name": "timers", "description": "An invoice's planned reminders and their states (ops, debugging)."},
]
_EXAMPLE = {
    "anchor": "issued_at",
    "stages": [{"name": "soft", "offset": "PT5S"}, {"name": "firm", "offset": "PT10S", "channels": ["email", "sms"]}],
}


def create_app(pool: asyncpg.Pool, settings: Settings) -> FastAPI:
    app = service_app(
        distribution="dunning-scheduler",
        settings=settings,
        pool=pool,
        tags=TAGS,
        description="Plans each invoice's reminders from the tenant's policy and fires them when due.",
    )

    @app.put(
        "/v1/policy",
        response_model=PolicyOut,
        tags=["policy"],
        operation_id="putPolicy",
        openapi_extra=json_body("PolicyDocument"),  # PolicyOut brings it
        summary="Store the tenant's dunning policy (a new version; idempotent for an equal document)",
        description="New invoices are planned with the new version. With `apply_to=open_invoices` every "
        "open, unsettled invoice of the tenant is also re-planned with it, in the background, batch by batch: "
        "stages not yet sent move (StagesRescheduled), sent ones stay. The answer's `replan` is that job; "
        "`GET /v1/policy/replans/{replan_id}` shows its progress. An equal document with "
        "`apply_to=open_invoices` stores no new version but still re-plans the open invoices with the active one.",
        responses={422: {"description": "The document is not a valid policy, or apply_to is unknown"}},
    )
    async def put_policy_route(
        tenant_id: TenantId,
        document: Annotated[
            Any, Body(openapi_examples={"default": {"value": DEFAULT_DOCUMENT}, "demo": {"value": _EXAMPLE}})
        ],
        apply_to: Annotated[
            Literal["new_invoices", "open_invoices"],
            Query(description="new_invoices (default): from the next invoice on; open_invoices: open ones too."),
        ] = "new_invoices",
    ):
        try:
            policy = parse_policy(document)
        except PolicyError as exc:
            raise Problem(422, str(exc), title="Invalid policy", errors=exc.errors) from None
        async with pool.acquire() as conn:
            stored, created, job = await put_policy(conn, tenant_id, policy, apply_to=apply_to)
        return {**stored.as_json(), "created": created, "replan": None if job is None else dict(job)}

    @app.get(
        "/v1/policy",
        response_model=PolicyOut,
        tags=["policy"],
        operation_id="getPolicy",
        summary="The tenant's active policy",
    )
    async def get_policy(tenant_id: TenantId):
        async with pool.acquire() as conn:
            stored = await active_policy(conn, tenant_id)
        return stored.as_json()

    @app.get(
        "/v1/policy/replans/{replan_id}",
        response_model=ReplanOut,
        tags=["policy"],
        operation_id="getPolicyReplan",
        summary="Progress of a policy applied to the tenant's open invoices",
        responses={404: {"description": "No such replan job for this tenant"}},
    )
    async def policy_replan(tenant_id: TenantId, replan_id: Annotated[str, Path(pattern=r"^rpl_[0-9A-Za-z]{10,40}$")]):
        async with pool.acquire() as conn:
            job = await repository.replan_of(conn, tenant_id, replan_id)
        if job is None:
            raise Problem.not_found("replan_id", f"No replan {replan_id} for this tenant.")
        return dict(job)

    @app.get(
        "/v1/invoices/{invoice_id}/timers",
        response_model=InvoiceTimersOut,
        tags=["timers"],
        operation_id="getInvoiceTimers",
        summary="An invoice's dunning timers and their states",
        responses={404: {"description": "No such invoice known to the scheduler for this tenant"}},
    )
    async def invoice_timers(
        tenant_id: TenantId, invoice_id: Annotated[str, Path(pattern=r"^inv_[0-9A-Za-z]{10,40}$")]
    ):
        async with pool.acquire() as conn:
            invoice = await repository.invoice_of(conn, tenant_id, invoice_id)
            if invoice is None:
                raise Problem.not_found(
                    "invoice_id", f"No invoice {invoice_id} is known to the scheduler for this tenant."
                )
            timers = await repository.timers_of(conn, tenant_id, invoice_id)
        currency = invoice["currency"]

        def money(value):
            return None if value is None or currency is None else format_amount(value, currency)

        return InvoiceTimersOut(
            invoice_id=invoice_id,
            planned=invoice["planned_at"] is not None,
            number=invoice["number"],
            currency=currency,
            amount_due=money(invoice["amount_due"]),
            balance=money(invoice["balance"]),
            due_date=invoice["due_date"],
            settled=invoice["settled"],
            settled_at=invoice["settled_at"],
            policy_id=invoice["policy_id"],
            policy_version=invoice["policy_version"],
            version=invoice["version"],
            status=invoice["status"],
            timers=[TimerOut(**{k: t[k] for k in TimerOut.model_fields}) for t in timers],
        )

    return app
