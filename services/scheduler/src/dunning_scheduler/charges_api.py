"""Routes of late charges: an invoice's charges and their waiver, and the reference rates interest uses.

GET  /v1/invoices/{invoice_id}/charges         fees and interest claimed, interest accrued to today, the waiver
POST /v1/invoices/{invoice_id}/charges/waive   waive them (LateChargesWaived); idempotent
GET  /v1/reference-rates                       the reference rates known (shared and the tenant's own)
GET  /v1/reference-rates/{name}                one reference's periods
PUT  /v1/reference-rates/{name}                add or change the tenant's own periods
"""

from datetime import date
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import Body, FastAPI, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import LateChargesWaived
from dunning.http import Problem, TenantId
from dunning.money import format_amount
from dunning_scheduler.charges import round_half_up
from dunning_scheduler.charges_apply import accrual_of
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import charges as charges_sql
from dunning_scheduler.repository import contacts as contacts_sql
from dunning_scheduler.settings import Settings

InvoiceIdPath = Annotated[str, Path(pattern=r"^inv_[0-9A-Za-z]{10,40}$", description="The invoice's id.")]
RateName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="e.g. ecb_main_refinancing")]
RATE = r"^-?[0-9]{1,3}(\.[0-9]{1,4})?$"
MAX_PERIODS = 1000


class WaiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=500, description="Why, in words (kept, published).")]
    waived_by: Annotated[str, Field(min_length=1, max_length=200, description="Who waives (a person or system).")]


class RatePeriodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valid_from: date = Field(description="The first day the rate is in force (YYYY-MM-DD).")
    rate: Annotated[str, Field(pattern=RATE, description='Percent per year, a decimal string: "2.15".')]


class RatesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    periods: Annotated[list[RatePeriodIn], Field(min_length=1, max_length=MAX_PERIODS)]


WAIVE_EXAMPLE = {"reason": "Goodwill: long-standing customer", "waived_by": "jane@acme.example"}
RATES_EXAMPLE = {"periods": [{"valid_from": "2026-02-11", "rate": "2.00"}]}
CHARGES_EXAMPLE = {
    "invoice_id": "inv_01JB2F7H9K3M5N7P9Q1R3S5T7V",
    "currency": "EUR",
    "late_fees": "40.00",
    "interest": "8.34",
    "assessments": [
        {"stage": "soft", "stage_id": "stg_01JB...", "late_fee": "40.00", "interest": "8.34",
         "interest_to": "2026-03-02", "assessed_at": "2026-03-02T08:00:00Z"}
    ],
    "accrued_interest": "9.45",
    "accrued_to": "2026-03-06",
    "annual_rate": "10.15",
    "day_count": "ACT/365F",
    "waived": None,
}  # fmt: skip


def _waiver_json(row: asyncpg.Record) -> dict[str, Any]:
    c = row["currency"]
    return {
        "invoice_id": row["invoice_id"], "currency": c, "late_fees": format_amount(row["late_fees"], c),
        "interest": format_amount(row["interest"], c), "reason": row["reason"], "waived_by": row["waived_by"],
        "waived_at": row["waived_at"],
    }  # fmt: skip


def _zone_of(customer: dict | None) -> ZoneInfo:
    try:
        return ZoneInfo((customer or {}).get("timezone") or "UTC")
    except (ValueError, KeyError):  # validated at ingest; a zone this host lacks counts in UTC
        return ZoneInfo("UTC")


def _rate_text(rate: Decimal) -> str:
    return format(rate.quantize(Decimal("0.01")) if rate == rate.quantize(Decimal("0.01")) else rate.normalize(), "f")


def add_routes(app: FastAPI, pool: asyncpg.Pool, settings: Settings, policies: ActivePolicies | None = None) -> None:
    policies = policies or ActivePolicies()

    async def invoice_or_404(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record:
        found = await charges_sql.invoice(conn, invoice_id, tenant_id)
        if found is None:
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id} is known to the scheduler for this tenant.")
        return found

    @app.get(
        "/v1/invoices/{invoice_id}/charges",
        tags=["charges"],
        operation_id="getInvoiceCharges",
        summary="An invoice's late fees and interest: claimed, accrued to today, waived",
        description="`late_fees` and `interest`: what the fired stages claimed (LateChargesAssessed). "
        "`accrued_interest`: the interest the policy's terms accrue up to today in the customer's zone, a "
        "projection, not assessed (null: the policy charges no interest). `waived`: the waiver, if any "
        "(then nothing more is charged).",
        responses={
            200: {"content": {"application/json": {"example": CHARGES_EXAMPLE}}},
            404: {"description": "No such invoice known to the scheduler for this tenant"},
        },
    )
    async def get_charges(tenant_id: TenantId, invoice_id: InvoiceIdPath):
        async with pool.acquire() as conn:
            invoice = await invoice_or_404(conn, tenant_id, invoice_id)
            c = invoice["currency"]
            history = await charges_sql.charged(conn, invoice_id)
            waiver = await charges_sql.waiver(conn, invoice_id)
            policy = await policies.version_of(
                conn, tenant_id, invoice["policy_version"] or 1, bool(invoice["policy_is_default"]),
                policy_key=invoice["policy_key"],
            )  # fmt: skip
            zone = _zone_of(invoice["customer"])
            today = utcnow().astimezone(zone).date()
            accrual, rate = (None, None)
            if waiver is None and invoice["due_date"] is not None:
                accrual, rate = await accrual_of(conn, policy, invoice, zone, today)
        fees = history[-1]["total_late_fees"] if history else Decimal(0)
        interest = history[-1]["total_interest"] if history else Decimal(0)
        return {
            "invoice_id": invoice_id,
            "currency": c,
            "late_fees": format_amount(fees, c),
            "interest": format_amount(interest, c),
            "assessments": [
                {
                    "stage": h["stage"],
                    "stage_id": h["stage_id"],
                    "late_fee": format_amount(h["late_fee"], c),
                    "interest": format_amount(h["interest"], c),
                    "interest_to": h["interest_to"],
                    "assessed_at": h["assessed_at"],
                }
                for h in history
            ],  # fmt: skip
            "accrued_interest": None if accrual is None else format_amount(round_half_up(accrual.total, c), c),
            "accrued_to": None if accrual is None else today,
            "annual_rate": None if rate is None else _rate_text(rate),
            "day_count": None if accrual is None or policy.interest is None else policy.interest.day_count,
            "waived": None if waiver is None else _waiver_json(waiver),
        }

    @app.post(
        "/v1/invoices/{invoice_id}/charges/waive",
        tags=["charges"],
        operation_id="waiveInvoiceCharges",
        status_code=201,
        summary="Waive an invoice's late fees and interest",
        description="Withdraws the fees and interest claimed so far (published as LateChargesWaived with those "
        "amounts) and charges none from now on; the reminders go on. Idempotent: waiving again answers 200 "
        "with the first waiver, unchanged.",
        responses={
            201: {"content": {"application/json": {"example": {
                "invoice_id": "inv_01JB2F7H9K3M5N7P9Q1R3S5T7V", "currency": "EUR", "late_fees": "40.00",
                "interest": "8.34", "reason": WAIVE_EXAMPLE["reason"], "waived_by": WAIVE_EXAMPLE["waived_by"],
                "waived_at": "2026-03-05T10:12:00Z"}}}},
            200: {"description": "Waived already: the first waiver"},
            404: {"description": "No such invoice known to the scheduler for this tenant"},
            422: {"description": "reason or waived_by missing or too long (`errors` name the field)"},
        },
    )  # fmt: skip
    async def waive(
        tenant_id: TenantId,
        invoice_id: InvoiceIdPath,
        body: Annotated[WaiveIn, Body(openapi_examples={"goodwill": {"value": WAIVE_EXAMPLE}})],
        response: Response,
    ):
        async with pool.acquire() as conn, conn.transaction():
            invoice = await invoice_or_404(conn, tenant_id, invoice_id)
            # the customer's firing lock: an assessment of this invoice and the waiver take turns
            await contacts_sql.lock_customer_contacts(conn, invoice["customer_id"] or "")
            history = await charges_sql.charged(conn, invoice_id)
            fees = history[-1]["total_late_fees"] if history else Decimal(0)
            interest = history[-1]["total_interest"] if history else Decimal(0)
            c = invoice["currency"]
            row = await charges_sql.add_waiver(
                conn, invoice_id, tenant_id, c, fees, interest, body.reason.strip(), body.waived_by.strip(), utcnow()
            )
            if row is None:
                response.status_code = 200
                return _waiver_json(await charges_sql.waiver(conn, invoice_id))
            await outbox.add(conn, LateChargesWaived(
                invoice_id, tenant_id, c, round_half_up(fees, c), round_half_up(interest, c), row["reason"],
                row["waived_by"], row["waived_at"],
            ))  # fmt: skip
        return _waiver_json(row)

    async def rates_answer(conn: asyncpg.Connection, tenant_id: str, name: str) -> dict[str, Any]:
        rows = await charges_sql.rates(conn, tenant_id, name)
        if not rows:
            raise Problem.not_found("name", f"No reference rate {name} (PUT /v1/reference-rates/{name} adds one).")
        return {
            "name": name,
            "periods": [
                {
                    "valid_from": r["valid_from"],
                    "rate": _rate_text(r["rate"]),
                    "source": "tenant" if r["own"] else "shared",
                }
                for r in rows
            ],
        }

    @app.get(
        "/v1/reference-rates",
        tags=["charges"],
        operation_id="listReferenceRates",
        summary="The reference rates interest may follow",
        description="Shared rates (the ECB main refinancing operations rate, `ecb_main_refinancing`, seeded "
        "with its history) and the tenant's own; a policy's `interest.reference` names one.",
        responses={200: {"content": {"application/json": {"example": {"reference_rates": [
            {"name": "ecb_main_refinancing", "periods": 61, "latest_from": "2025-06-11", "own": False}]}}}}},
    )  # fmt: skip
    async def list_rates(tenant_id: TenantId):
        async with pool.acquire() as conn:
            rows = await charges_sql.rate_names(conn, tenant_id)
        return {"reference_rates": [dict(r) for r in rows]}

    @app.get(
        "/v1/reference-rates/{name}",
        tags=["charges"],
        operation_id="getReferenceRate",
        summary="One reference rate's periods, oldest first",
        description="Each period is in force from `valid_from` until the next one's; the tenant's own period "
        "wins over a shared one on the same day.",
        responses={
            200: {"content": {"application/json": {"example": {"name": "ecb_main_refinancing", "periods": [
                {"valid_from": "2025-04-23", "rate": "2.40", "source": "shared"},
                {"valid_from": "2025-06-11", "rate": "2.15", "source": "shared"}]}}}},
            404: {"description": "No such reference rate"},
        },
    )  # fmt: skip
    async def get_rates(tenant_id: TenantId, name: RateName):
        async with pool.acquire() as conn:
            return await rates_answer(conn, tenant_id, name)

    @app.put(
        "/v1/reference-rates/{name}",
        tags=["charges"],
        operation_id="putReferenceRate",
        summary="Add or change the tenant's own periods of a reference rate",
        description="Adds each period (or changes the tenant's own on the same `valid_from`); periods not "
        "named stay. Use it for a new ECB decision or a rate of your own. Interest assessed from then on uses "
        "them; charges already assessed stay as they were.",
        responses={
            200: {"content": {"application/json": {"example": {"name": "ecb_main_refinancing", "periods": [
                {"valid_from": "2026-02-11", "rate": "2.00", "source": "tenant"}]}}}},
            422: {"description": "A period is not valid (`errors` name it, e.g. periods.0.rate)"},
        },
    )  # fmt: skip
    async def put_rates(
        tenant_id: TenantId,
        name: RateName,
        body: Annotated[RatesIn, Body(openapi_examples={"new decision": {"value": RATES_EXAMPLE}})],
    ):
        seen: set[date] = set()
        for n, p in enumerate(body.periods):
            if p.valid_from in seen:
                raise Problem.invalid(f"periods.{n}.valid_from", "named twice", "duplicate")
            seen.add(p.valid_from)
            if abs(Decimal(p.rate)) > 100:
                raise Problem.invalid(f"periods.{n}.rate", "must be a percentage from -100 to 100", "out_of_range")
        async with pool.acquire() as conn, conn.transaction():
            await charges_sql.put_rates(
                conn, tenant_id, name, [(p.valid_from, Decimal(p.rate)) for p in body.periods], "api"
            )
            return await rates_answer(conn, tenant_id, name)
