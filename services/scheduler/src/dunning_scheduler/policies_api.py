"""Routes of the tenant's policies: the default one (`/v1/policy`, as before) and the named, versioned
ones segment rules choose (`/v1/policies`). Every change records who made it (`Dunning-Actor`)."""

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Body, FastAPI, Path, Query, Response

from dunning.http import Problem, TenantId, json_body
from dunning_scheduler import repository
from dunning_scheduler.policy import DEFAULT_DOCUMENT, Policy, PolicyError, parse_policy
from dunning_scheduler.policy_schemas import Actor, PoliciesOut, PolicyVersionsOut, actor_of
from dunning_scheduler.policy_store import (
    PolicyInUse,
    active_policy,
    delete_policy,
    named_policies,
    named_policy,
    policy_versions,
    put_policy,
)
from dunning_scheduler.schemas import PolicyOut, ReplanOut
from dunning_scheduler.settings import Settings

_EXAMPLE = {
    "anchor": "issued_at",
    "stages": [{"name": "soft", "offset": "PT5S"}, {"name": "firm", "offset": "PT10S", "channels": ["email", "sms"]}],
}
_NAMED_EXAMPLE = {
    "id": "pol_firm",
    "description": "Late payers: shorter gaps, the statutory fee and interest",
    "days": "business",
    "grace": "P2D",
    "interest": {"reference": "ecb_main_refinancing", "margin": "8.00", "fixing": "half_year", "day_count": "ACT/365F"},
    "stages": [
        {"name": "soft", "offset": "P1D"},
        {"name": "firm", "offset": "P5D", "late_fee": {"EUR": "40.00", "GBP": "40.00"}},
        {"name": "final", "offset": "P10D", "charge_interest": True},
    ],
}
PolicyIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$", description="The policy's id, e.g. pol_firm.")
]
ApplyTo = Annotated[
    Literal["new_invoices", "open_invoices"],
    Query(description="new_invoices (default): from the next invoice on; open_invoices: open ones too."),
]


def _parse(document: Any, *, policy_id: str | None = None) -> Policy:
    """The document compiled, or a 422 naming the fields; a named policy's `id` is its path's (the
    other fields are checked first: every error is named)."""
    errors: list[dict[str, str]] = []
    if policy_id is not None and isinstance(document, dict):
        if "id" in document and document["id"] != policy_id:
            errors.append(
                {"field": "id", "message": f"must equal the policy id in the path ({policy_id}) or be left out"}
            )
        document = {**document, "id": policy_id}
    try:
        policy = parse_policy(document)
    except PolicyError as exc:
        errors = exc.errors + errors
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise Problem(422, detail, title="Invalid policy", errors=errors)
    return policy


def add_routes(app: FastAPI, pool: asyncpg.Pool, settings: Settings) -> None:
    @app.put(
        "/v1/policy",
        response_model=PolicyOut,
        response_model_exclude_unset=True,  # the document as stored: optional keys only where given
        tags=["policy"],
        operation_id="putPolicy",
        openapi_extra=json_body("PolicyDocument"),  # PolicyOut brings it
        summary="Store the tenant's default dunning policy (a new version; idempotent for an equal document)",
        description="New invoices no segment rule sends elsewhere are planned with the new version. With "
        "`apply_to=open_invoices` every open, unsettled invoice of the tenant planned with the default policy is "
        "also re-planned with it, in the background, batch by batch: stages not yet sent move (StagesRescheduled), "
        "sent ones stay. The answer's `replan` is that job; `GET /v1/policy/replans/{replan_id}` shows its "
        "progress. An equal document with `apply_to=open_invoices` stores no new version but still re-plans the "
        "open invoices with the active one.",
        responses={422: {"description": "The document is not a valid policy (`errors` name the fields)"}},
    )
    async def put_policy_route(
        tenant_id: TenantId,
        document: Annotated[
            Any, Body(openapi_examples={"default": {"value": DEFAULT_DOCUMENT}, "demo": {"value": _EXAMPLE}})
        ],
        actor: Actor = None,
        apply_to: ApplyTo = "new_invoices",
    ):
        policy = _parse(document)
        async with pool.acquire() as conn:
            stored, created, job = await put_policy(
                conn, tenant_id, policy, apply_to=apply_to, changed_by=actor_of(actor)
            )
        return {**stored.as_json(), "created": created, "replan": None if job is None else dict(job)}

    @app.get(
        "/v1/policy",
        response_model=PolicyOut,
        response_model_exclude_unset=True,  # the document as stored: optional keys only where given
        tags=["policy"],
        operation_id="getPolicy",
        summary="The tenant's default policy",
        description="The policy invoices are planned with when no segment rule names another "
        "(the built-in default if none is stored).",
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
        "/v1/policies",
        response_model=PoliciesOut,
        response_model_exclude_unset=True,
        tags=["policies"],
        operation_id="listPolicies",
        summary="The tenant's named policies (each one's latest version)",
        description="Named policies are what segment rules (`/v1/policy-rules`) choose. Deleted ones are not listed.",
    )
    async def list_policies(tenant_id: TenantId):
        async with pool.acquire() as conn:
            found = await named_policies(conn, tenant_id)
        return {"policies": [p.as_json() for p in found]}

    @app.put(
        "/v1/policies/{policy_id}",
        response_model=PolicyOut,
        response_model_exclude_unset=True,  # the document as stored: optional keys only where given
        tags=["policies"],
        operation_id="putNamedPolicy",
        openapi_extra=json_body("PolicyDocument"),
        summary="Store a named policy (a new version; idempotent for an equal document)",
        description="The body is a policy document (as for `PUT /v1/policy`); its `id` may be left out and "
        "otherwise must equal the path's. Invoices the segment rules send to this policy are planned with the new "
        "version from now on; with `apply_to=open_invoices` the open invoices planned with this policy are "
        "re-planned with it too (as for `PUT /v1/policy`). A deleted policy stored again continues its versions.",
        responses={
            422: {"description": "Not a valid policy, or `id` differs from the path (`errors` name the fields)"}
        },
    )
    async def put_named_policy(
        tenant_id: TenantId,
        policy_id: PolicyIdPath,
        document: Annotated[Any, Body(openapi_examples={"firm": {"value": _NAMED_EXAMPLE}})],
        actor: Actor = None,
        apply_to: ApplyTo = "new_invoices",
    ):
        policy = _parse(document, policy_id=policy_id)
        async with pool.acquire() as conn:
            stored, created, job = await put_policy(
                conn, tenant_id, policy, apply_to=apply_to, policy_key=policy_id, changed_by=actor_of(actor)
            )
        return {**stored.as_json(), "created": created, "replan": None if job is None else dict(job)}

    @app.get(
        "/v1/policies/{policy_id}",
        response_model=PolicyOut,
        response_model_exclude_unset=True,  # the document as stored: optional keys only where given
        tags=["policies"],
        operation_id="getNamedPolicy",
        summary="A named policy's latest version",
        responses={404: {"description": "No such policy (or it was deleted)"}},
    )
    async def get_named_policy(tenant_id: TenantId, policy_id: PolicyIdPath):
        async with pool.acquire() as conn:
            stored = await named_policy(conn, tenant_id, policy_id)
        if stored is None:
            raise Problem.not_found("policy_id", f"No policy {policy_id} for this tenant.")
        return stored.as_json()

    @app.get(
        "/v1/policies/{policy_id}/versions",
        response_model=PolicyVersionsOut,
        response_model_exclude_unset=True,
        tags=["policies"],
        operation_id="listNamedPolicyVersions",
        summary="Every version of a named policy, newest first, with who stored it",
        responses={404: {"description": "No such policy"}},
    )
    async def named_policy_versions(tenant_id: TenantId, policy_id: PolicyIdPath):
        async with pool.acquire() as conn:
            versions = await policy_versions(conn, tenant_id, policy_id)
        if not versions:
            raise Problem.not_found("policy_id", f"No policy {policy_id} for this tenant.")
        return {"policy_id": policy_id, "versions": [v.as_json() for v in versions]}

    @app.get(
        "/v1/policies/{policy_id}/versions/{version}",
        response_model=PolicyOut,
        response_model_exclude_unset=True,  # the document as stored: optional keys only where given
        tags=["policies"],
        operation_id="getNamedPolicyVersion",
        summary="One version of a named policy",
        responses={404: {"description": "No such policy or version"}},
    )
    async def named_policy_version(
        tenant_id: TenantId, policy_id: PolicyIdPath, version: Annotated[int, Path(ge=1, le=1_000_000)]
    ):
        async with pool.acquire() as conn:
            versions = await policy_versions(conn, tenant_id, policy_id)
        for stored in versions:
            if stored.policy.version == version:
                return stored.as_json()
        raise Problem.not_found("version", f"No version {version} of policy {policy_id} for this tenant.")

    @app.delete(
        "/v1/policies/{policy_id}",
        status_code=204,
        tags=["policies"],
        operation_id="deleteNamedPolicy",
        summary="Delete a named policy",
        description="Invoices planned with it keep it (they are re-planned with its version). Refused while the "
        "segment rules in force name it: change the rules first.",
        responses={
            404: {"description": "No such policy"},
            409: {"description": "The segment rules in force name this policy"},
        },
    )
    async def delete_named_policy(tenant_id: TenantId, policy_id: PolicyIdPath):
        async with pool.acquire() as conn:
            try:
                deleted = await delete_policy(conn, tenant_id, policy_id)
            except PolicyInUse:
                raise Problem(
                    409,
                    f"The segment rules in force name policy {policy_id}: change them (PUT /v1/policy-rules) first.",
                    errors=[{"field": "policy_id", "message": "used by the segment rules", "code": "in_use"}],
                ) from None
        if not deleted:
            raise Problem.not_found("policy_id", f"No policy {policy_id} for this tenant.")
        return Response(status_code=204)
