"""HTTP routes of the scheduler (all but health and metrics need `Authorization: Bearer <api key>`).

PUT  /v1/policy                        store the tenant's default policy as a new version
                                       (?apply_to=open_invoices: and re-plan the open invoices with it)
GET  /v1/policy                        the default policy (the built-in default if none stored)
GET  /v1/policy/replans/{replan_id}    progress of a policy applied to open invoices
GET  /v1/policies                      named policies (each one's latest version)
PUT  /v1/policies/{policy_id}          store a named policy (a new version; ?apply_to=open_invoices)
GET  /v1/policies/{policy_id}          a named policy; .../versions, .../versions/{version}
DELETE /v1/policies/{policy_id}        delete a named policy (409 while the segment rules name it)
GET/PUT /v1/policy-rules               the segment rules that choose a named policy per invoice
GET/PUT /v1/settings                   calendar, send window, contact caps, consolidation
GET/PUT/DELETE /v1/settings/customers/{customer_id}   a customer's own send window
POST /v1/policy/preview                what a policy and settings would send, changing nothing
/v1/invoices/{invoice_id}/charges..., /v1/reference-rates...   fees, interest, waivers, reference rates (charges_api)
GET  /v1/invoices/{invoice_id}/timers  the invoice's timers (ops / debugging)
GET  /healthz, /readyz, /metrics, /docs

Routes live by subject in `policies_api`, `settings_api`, `preview_api`, `charges_api`; this module
builds the app.
"""

from typing import Annotated

import asyncpg
from fastapi import FastAPI, Path

from dunning.http import Problem, TenantId, service_app
from dunning.money import format_amount
from dunning_scheduler import charges_api, policies_api, preview_api, repository, settings_api
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.schemas import InvoiceTimersOut, TimerOut
from dunning_scheduler.settings import Settings

TAGS = [
    {"name": "policy", "description": "The tenant's default dunning policy: which reminders, when, on which channel."},
    {"name": "policies", "description": "Named, versioned policies the segment rules choose."},
    {"name": "settings", "description": "Working calendar, send windows, caps, consolidation; segment rules."},
    {"name": "preview", "description": "What a policy and settings would send, without changing anything."},
    {"name": "charges", "description": "Late fees and interest of an invoice, waivers, reference rates."},
    {"name": "timers", "description": "An invoice's planned reminders and their states (ops, debugging)."},
]


def create_app(pool: asyncpg.Pool, settings: Settings, policies: ActivePolicies | None = None) -> FastAPI:
    """The app; `policies`: the process's policy memory (its TenantConfig forgets what this process
    changes; the preview reads through it). Tests may leave it out."""
    policies = policies or ActivePolicies()
    app = service_app(
        distribution="dunning-scheduler",
        settings=settings,
        pool=pool,
        tags=TAGS,
        description="Plans each invoice's reminders from the tenant's policies and fires them when due.",
    )
    policies_api.add_routes(app, pool, settings)
    settings_api.add_routes(app, pool, settings, policies)
    preview_api.add_routes(app, pool, settings, policies)
    charges_api.add_routes(app, pool, settings, policies)

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
            segment=None
            if invoice["segment_rule"] is None
            else {"rule": invoice["segment_rule"], "reason": invoice["segment_reason"] or ""},
            version=invoice["version"],
            status=invoice["status"],
            timers=[TimerOut(**{k: t[k] for k in TimerOut.model_fields}) for t in timers],
        )

    return app
