"""Routes of the tenant's settings (calendar, send window, caps, consolidation), the segment rules
that choose a policy for each invoice, and the customers' own send windows. Versioned documents;
each change records who made it (`Dunning-Actor`); a change applies within `settings_store.TTL_SECONDS`."""

from typing import Annotated, Any

import asyncpg
from fastapi import Body, FastAPI, Path, Response

from dunning.http import Problem, TenantId, json_body
from dunning_scheduler.policy_schemas import Actor, CustomerWindowOut, RulesOut, SettingsOut, actor_of
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import policies as policies_sql
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.segments import EXAMPLE_RULES, SegmentRulesError, parse_rules
from dunning_scheduler.settings import Settings
from dunning_scheduler.settings_store import put_document, stored_rules, stored_settings
from dunning_scheduler.tenant_settings import (
    EXAMPLE_SETTINGS,
    SendWindowDocument,
    SettingsError,
    parse_settings,
    parse_window,
)

CustomerIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$", description="The customer's id (cus_...).")]


def _answer(tenant_id: str, stored, key: str, created: bool | None = None) -> dict:
    return {**stored.as_json(), "tenant_id": tenant_id, key: stored.document, "created": created}


def _window_answer(tenant_id: str, customer_id: str, row) -> dict:
    if row is None:
        return {"tenant_id": tenant_id, "customer_id": customer_id, "send_window": None, "changed_by": None,
                "updated_at": None}  # fmt: skip
    return {"tenant_id": tenant_id, **dict(row)}


def add_routes(app: FastAPI, pool: asyncpg.Pool, settings: Settings, policies: ActivePolicies | None = None) -> None:
    def forget(tenant_id: str) -> None:
        if policies is not None:  # this process sees its own change at once; others within the TTL
            policies.config.forget(tenant_id)

    @app.get(
        "/v1/settings",
        response_model=SettingsOut,
        tags=["settings"],
        operation_id="getSettings",
        summary="The tenant's settings: working calendar, send window, contact caps, consolidation",
        description="Version 0: nothing stored, every setting off (reminders at their policy times, any day).",
    )
    async def get_settings(tenant_id: TenantId):
        async with pool.acquire() as conn:
            stored = await stored_settings(conn, tenant_id)
        return _answer(tenant_id, stored, "settings")

    @app.put(
        "/v1/settings",
        response_model=SettingsOut,
        tags=["settings"],
        operation_id="putSettings",
        openapi_extra=json_body("TenantSettingsDocument"),
        summary="Store the tenant's settings (a new version; idempotent for an equal document)",
        description="Applies within seconds to planning (new invoices) and firing (every due reminder: the "
        "window is checked again when it is due, caps and consolidation apply). Invoices already planned keep "
        "their planned times until they fall due. Keys left out take their defaults (off).",
        responses={422: {"description": "Not valid settings (`errors` name the fields, e.g. send_window.end)"}},
    )
    async def put_settings(
        tenant_id: TenantId,
        document: Annotated[Any, Body(openapi_examples={"business": {"value": EXAMPLE_SETTINGS}})],
        actor: Actor = None,
    ):
        try:
            parsed = parse_settings(document)
        except SettingsError as exc:
            raise Problem(422, str(exc), title="Invalid settings", errors=exc.errors) from None
        async with pool.acquire() as conn:
            stored, created = await put_document(
                conn, settings_sql.SETTINGS, tenant_id, parsed.document, actor_of(actor)
            )
        forget(tenant_id)
        return _answer(tenant_id, stored, "settings", created)

    @app.get(
        "/v1/policy-rules",
        response_model=RulesOut,
        tags=["settings"],
        operation_id="getPolicyRules",
        summary="The segment rules that choose a named policy for each invoice",
        description="Version 0: no rules; every invoice is planned with the tenant's default policy (/v1/policy).",
    )
    async def get_rules(tenant_id: TenantId):
        async with pool.acquire() as conn:
            stored = await stored_rules(conn, tenant_id)
        return _answer(tenant_id, stored, "rules")

    @app.put(
        "/v1/policy-rules",
        response_model=RulesOut,
        tags=["settings"],
        operation_id="putPolicyRules",
        openapi_extra=json_body("SegmentRulesDocument"),
        summary="Store the segment rules (a new version; idempotent for an equal document)",
        description="Rules in priority order, the first whose conditions all hold chooses the invoice's policy; "
        "none: `default_policy_id`, else the tenant's default policy. Every policy named must exist "
        "(`PUT /v1/policies/{policy_id}`). Applies to invoices planned from a few seconds on; each planned "
        "invoice records the rule and why (DunningPlanned.segment, the invoice's timeline).",
        responses={422: {"description": "Not valid rules, or a policy id unknown (`rules.N.policy_id`)"}},
    )
    async def put_rules(
        tenant_id: TenantId,
        document: Annotated[Any, Body(openapi_examples={"segments": {"value": EXAMPLE_RULES}})],
        actor: Actor = None,
    ):
        try:
            rules = parse_rules(document)
        except SegmentRulesError as exc:
            raise Problem(422, str(exc), title="Invalid policy rules", errors=exc.errors) from None
        named = {f"rules.{n}.policy_id": r.policy_id for n, r in enumerate(rules.rules)}
        if rules.default_policy_id is not None:
            named["default_policy_id"] = rules.default_policy_id

        async def check(conn: asyncpg.Connection) -> None:
            known = await policies_sql.existing_policies(conn, tenant_id, sorted(set(named.values())))
            errors = [
                {"field": f, "message": f"no policy {p} (PUT /v1/policies/{p} first)", "code": "unknown_policy"}
                for f, p in named.items()
                if p not in known
            ]
            if errors:
                detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
                raise Problem(422, detail, title="Invalid policy rules", errors=errors)

        async with pool.acquire() as conn:
            stored, created = await put_document(
                conn, settings_sql.RULES, tenant_id, rules.document, actor_of(actor), check=check
            )
        forget(tenant_id)
        return _answer(tenant_id, stored, "rules", created)

    @app.get(
        "/v1/settings/customers/{customer_id}",
        response_model=CustomerWindowOut,
        tags=["settings"],
        operation_id="getCustomerSettings",
        summary="A customer's own send window (null: the tenant's applies)",
    )
    async def get_customer(tenant_id: TenantId, customer_id: CustomerIdPath):
        async with pool.acquire() as conn:
            row = await settings_sql.customer_window(conn, tenant_id, customer_id)
        return _window_answer(tenant_id, customer_id, row)

    @app.put(
        "/v1/settings/customers/{customer_id}",
        response_model=CustomerWindowOut,
        tags=["settings"],
        operation_id="putCustomerSettings",
        openapi_extra=json_body(
            {
                "type": "object",
                "required": ["send_window"],
                "properties": {
                    "send_window": {"anyOf": [{"$ref": "#/components/schemas/SendWindowDocument"}, {"type": "null"}]}
                },
                "additionalProperties": False,
            }
        ),
        summary="Set (or with null remove) a customer's own send window",
        description="`{\"send_window\": {...}}` replaces the tenant's window for this customer's reminders; "
        '`{"send_window": null}` removes it (the tenant\'s applies again), as DELETE does.',
        responses={422: {"description": "Not a valid window (`errors` name the fields, e.g. send_window.start)"}},
    )
    async def put_customer(
        tenant_id: TenantId,
        customer_id: CustomerIdPath,
        document: Annotated[
            Any,
            Body(
                openapi_examples={
                    "mornings": {"value": {"send_window": {"days": ["mon", "wed"], "start": "09:00", "end": "12:00"}}},
                    "remove": {"value": {"send_window": None}},
                }
            ),
        ],
        actor: Actor = None,
    ):
        if not isinstance(document, dict):
            raise Problem.invalid("(body)", "must be a JSON object", "invalid")
        unknown = sorted(set(document) - {"send_window"})
        if unknown:
            raise Problem.invalid(unknown[0], "unknown key", "invalid")
        if "send_window" not in document:
            raise Problem.invalid("send_window", "is required (null removes the customer's window)", "invalid")
        window = document["send_window"]
        async with pool.acquire() as conn:
            if window is None:
                await settings_sql.delete_customer_window(conn, tenant_id, customer_id)
                row = None
            else:
                try:
                    parse_window(window)
                except SettingsError as exc:
                    raise Problem(422, str(exc), title="Invalid send window", errors=exc.errors) from None
                normalised = SendWindowDocument.model_validate(window).model_dump(mode="json")
                row = await settings_sql.put_customer_window(conn, tenant_id, customer_id, normalised, actor_of(actor))
        forget(tenant_id)
        return _window_answer(tenant_id, customer_id, row)

    @app.delete(
        "/v1/settings/customers/{customer_id}",
        status_code=204,
        tags=["settings"],
        operation_id="deleteCustomerSettings",
        summary="Remove a customer's own send window (the tenant's applies again)",
        responses={404: {"description": "The customer has no window of its own"}},
    )
    async def delete_customer(tenant_id: TenantId, customer_id: CustomerIdPath):
        async with pool.acquire() as conn:
            deleted = await settings_sql.delete_customer_window(conn, tenant_id, customer_id)
        if not deleted:
            raise Problem.not_found("customer_id", f"Customer {customer_id} has no send window of its own.")
        forget(tenant_id)
        return Response(status_code=204)
