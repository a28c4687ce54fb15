"""What an invoice reads back as, twice over: the response models (`InvoiceOut`, `InvoiceDetail`, ...,
which document the API in its OpenAPI, built from rows by their `from_row(s)`) and the JSON writer
that mirrors them (`invoice_out_json`, `invoice_detail_json`, ...), which the routes use: building
the models costs several times the writer (measured: `InvoiceOut.from_row` + dump ~20 us, the writer ~5 us
a row), and a list page writes up to hundreds. The parity test (tests/unit/test_invoice_output.py,
property-based) holds them equal: for any row, the writer's JSON is the model's.
"""

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from dunning.money import format_amount
from dunning_ingest.charges_output import CHARGES_EXAMPLE, ChargesOut, charges_json
from dunning_ingest.customer_rules import whole_address
from dunning_ingest.invoice_history import InvoiceEventOut, Stops, _ts, invoice_history_json
from dunning_ingest.money_output import MoneyOut, MoneyRows, money_json, money_out
from dunning_ingest.stop_output import DisputeOut, HoldOut, PromiseOut, dump

INVOICE_ID = re.compile(r"^inv_[0-9A-Za-z]{10,40}$")


class CustomerOut(BaseModel):
    id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str
    country: str | None = Field(description="ISO 3166-1 alpha-2 (its public holidays); null: not given.")
    subdivision: str | None = Field(description="ISO 3166-2 code without the country, e.g. BY; null: not given.")
    tags: list[str] = Field(description="What the tenant's segment rules match on, e.g. strategic.")
    attributes: dict[str, str] = Field(description="Text attributes the segment rules match exactly.")
    phone: str | None = Field(None, description="E.164 (+4930123456): SMS reminders and calls; null: none.")
    postal_address: dict[str, Any] | None = Field(
        None,
        description="Where letters go: name, lines (1-4), postal_code, city, region, country; null: none.",
    )


def customer_extras(r: Mapping[str, Any], prefix: str = "customer_") -> dict[str, Any]:
    """The customer's country, subdivision, tags and attributes as read back (none: null, [], {})."""
    return {
        "country": r[f"{prefix}country"],
        "subdivision": r[f"{prefix}subdivision"],
        "tags": list(r[f"{prefix}tags"] or ()),
        "attributes": dict(r[f"{prefix}attributes"] or {}),
        "phone": r.get(f"{prefix}phone"),
        "postal_address": whole_address(r.get(f"{prefix}postal_address")),
    }


class PaymentOut(BaseModel):
    """One allocation of a payment to this invoice (a payment split across invoices has one on each)."""

    payment_id: str
    allocation_id: str | None = Field(description="null: reported before allocations were recorded.")
    source: Literal["stripe", "api", "bank_statement", "gocardless", "standard_webhooks"]
    source_reference: str
    currency: str
    amount: str
    amount_applied: str
    balance_remaining: str
    settled: bool
    received_at: datetime
    acknowledged_at: datetime
    match_rule: str | None = Field(description="The rule that matched it to this invoice.")
    match_reason: str | None = Field(description="Why, in words.")
    balance_version: int | None = Field(description="Reconciliation's count of the invoice's balance changes.")

    @classmethod
    def from_row(cls, p: Mapping[str, Any]) -> "PaymentOut":
        money = {k: format_amount(p[k], p["currency"]) for k in ("amount", "amount_applied", "balance_remaining")}
        return cls.model_validate({**{k: p.get(k) for k in cls.model_fields if k not in money}, **money})


class CreditNoteOut(BaseModel):
    credit_note_id: str
    reference: str
    reason: str
    currency: str
    amount: str
    amount_applied: str
    balance_remaining: str
    settled: bool
    acknowledged_at: datetime

    @classmethod
    def from_row(cls, c: Mapping[str, Any]) -> "CreditNoteOut":
        money = {k: format_amount(c[k], c["currency"]) for k in ("amount", "amount_applied", "balance_remaining")}
        return cls.model_validate({**{k: c[k] for k in cls.model_fields if k not in money}, **money})


class StageHistoryOut(BaseModel):
    state: str
    at: datetime
    reason: str | None
    previous_scheduled_at: datetime | None = Field(description="A re-plan: the stage's time before (null: added).")
    scheduled_at: datetime | None = Field(description="A re-plan: the stage's new time (null: dropped).")


class StageOut(BaseModel):
    stage_id: str
    stage: str
    sequence: int | None
    channel: str
    scheduled_at: datetime | None
    state: Literal["scheduled", "paused", "escalated", "sent", "failed", "cancelled", "skipped"]
    changed_at: datetime
    reason: str | None
    history: list[StageHistoryOut]

    @classmethod
    def from_rows(cls, s: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> "StageOut":
        """The stage row with its history rows (every history row of any stage: this one's are picked)."""
        own = [
            StageHistoryOut.model_validate({k: h[k] for k in StageHistoryOut.model_fields})
            for h in history
            if h["stage_id"] == s["stage_id"]
        ]
        return cls.model_validate({**{k: s[k] for k in cls.model_fields if k != "history"}, "history": own})


InvoiceStatus = Literal["open", "paid", "void", "written_off", "with_agency"]


def status_of(r: Mapping[str, Any]) -> str:
    """`with_agency` for an open invoice handed to a collection agency (collections_handlers.py)."""
    return "with_agency" if r["status"] == "open" and r.get("with_agency_at") is not None else r["status"]


class InvoiceOut(BaseModel):
    id: str
    external_id: str
    version: int = Field(description="1 at creation, +1 per change; the ETag of the invoice is this number.")
    number: str
    status: InvoiceStatus
    currency: str
    amount_due: str
    balance: str
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    customer: CustomerOut
    created_at: datetime
    updated_at: datetime | None
    closed_reason: str | None = Field(description="The reason given when it was voided or written off.")
    voided_at: datetime | None
    written_off_at: datetime | None
    written_off_amount: str | None = Field(description="The balance written off.")

    @classmethod
    def fields_of(cls, r: Mapping[str, Any]) -> dict[str, Any]:
        """The model's fields from an invoice row (repository.INVOICE_SELECT)."""
        base = ("id", "external_id", "name", "email", "locale", "timezone")
        customer = CustomerOut.model_validate(
            {k: r["customer_id" if k == "id" else f"customer_{k}"] for k in base} | customer_extras(r)
        )
        money: dict[str, str | None] = {k: format_amount(r[k], r["currency"]) for k in ("amount_due", "balance")}
        written_off = r["written_off_amount"]
        money["written_off_amount"] = None if written_off is None else format_amount(written_off, r["currency"])
        plain = {k: r[k] for k in InvoiceOut.model_fields if k not in money and k != "customer" and k != "charges"}
        return {**plain, **money, "customer": customer, "status": status_of(r)}

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "InvoiceOut":
        return cls(**cls.fields_of(r))


class InvoiceDetail(InvoiceOut):
    payments: list[PaymentOut]
    credit_notes: list[CreditNoteOut]
    money: MoneyOut = Field(
        description="Every change of the balance (allocations, credit notes, customer credit, unallocations, "
        "reversals) with the balance after each, and the money pending (processing, chargebacks)."
    )
    timeline: list[StageOut]
    holds: list[HoldOut] = Field(description="Every hold on the invoice or on its customer, oldest first.")
    disputes: list[DisputeOut] = Field(description="Oldest first.")
    promises: list[PromiseOut] = Field(description="Oldest first.")
    charges: ChargesOut | None = Field(
        description="Late fees and interest claimed on top of the amount (null: never charged); `amount_due` "
        "and `balance` never include them.",
        json_schema_extra={"examples": [CHARGES_EXAMPLE]},
    )
    history: list[InvoiceEventOut] = Field(
        description="Creation, changes, payments, credit notes, every stop and the policies at work (the "
        "segment rule, deferrals, notices, charges), in the order they happened."
    )

    @classmethod
    def from_rows(
        cls,
        r: Mapping[str, Any],
        payments: Sequence[Mapping[str, Any]] = (),
        stages: Sequence[Mapping[str, Any]] = (),
        history: Sequence[Mapping[str, Any]] = (),
        *,
        credit_notes: Sequence[Mapping[str, Any]] = (),
        changes: Sequence[Mapping[str, Any]] = (),
        stops: "Stops | None" = None,
        money: MoneyRows | None = None,
    ) -> "InvoiceDetail":
        stops = stops or Stops()
        return cls(
            **cls.fields_of(r),
            payments=[PaymentOut.from_row(p) for p in payments],
            credit_notes=[CreditNoteOut.from_row(c) for c in credit_notes],
            money=money_out(r["currency"], payments, credit_notes, money),
            timeline=[StageOut.from_rows(s, history) for s in stages],
            holds=[HoldOut.from_row(h) for h in stops.holds],
            disputes=[DisputeOut.from_row(d) for d in stops.disputes],
            promises=[PromiseOut.from_row(p) for p in stops.promises],
            charges=charges_json(r),
            # The history is merged from its sources by one function (invoice_history_json), not twice.
            history=[
                InvoiceEventOut.model_validate(e)
                for e in invoice_history_json(r, payments, credit_notes, changes, stops=stops, money=money)
            ],
        )


# --- the JSON writer: mirrors the models above ------------------------------------------------------


def invoice_out_json(r: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of `InvoiceOut` for an invoice row (repository.INVOICE_SELECT)."""
    currency = r["currency"]
    written_off = r["written_off_amount"]
    return {
        "id": r["id"],
        "external_id": r["external_id"],
        "version": r["version"],
        "number": r["number"],
        "status": status_of(r),
        "currency": currency,
        "amount_due": format_amount(r["amount_due"], currency),
        "balance": format_amount(r["balance"], currency),
        "issue_date": r["issue_date"].isoformat(),
        "due_date": r["due_date"].isoformat(),
        "payment_url": r["payment_url"],
        "metadata": r["metadata"],
        "customer": {
            "id": r["customer_id"],
            "external_id": r["customer_external_id"],
            "name": r["customer_name"],
            "email": r["customer_email"],
            "locale": r["customer_locale"],
            "timezone": r["customer_timezone"],
            **customer_extras(r),
        },
        "created_at": _ts(r["created_at"]),
        "updated_at": _ts(r["updated_at"]),
        "closed_reason": r["closed_reason"],
        "voided_at": _ts(r["voided_at"]),
        "written_off_at": _ts(r["written_off_at"]),
        "written_off_amount": None if written_off is None else format_amount(written_off, currency),
    }


def new_invoice_row(
    invoice_id: str, customer_id: str, inv: Any, created_at: datetime, stored: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The row an invoice that was just created would read back as (saves a round trip); `stored`: the
    customer's country, subdivision, tags and attributes after the write (None: none)."""
    c = inv.customer
    return {
        "id": invoice_id,
        "external_id": inv.external_id,
        "number": inv.number,
        "status": "open",
        "currency": inv.currency,
        "amount_due": inv.amount_due,
        "balance": inv.amount_due,
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "payment_url": inv.payment_url,
        "metadata": inv.metadata,
        "customer_id": customer_id,
        "customer_external_id": c.external_id,
        "customer_name": c.name,
        "customer_email": c.email,
        "customer_locale": c.locale,
        "customer_timezone": c.timezone,
        # the customer's stored values (an invoice may leave them out: they stay as they are)
        "customer_country": (stored or {}).get("country"),
        "customer_subdivision": (stored or {}).get("subdivision"),
        "customer_tags": (stored or {}).get("tags"),
        "customer_attributes": (stored or {}).get("attributes"),
        "customer_phone": (stored or {}).get("phone"),
        "customer_postal_address": (stored or {}).get("postal_address"),
        "created_at": created_at,
        "version": 1,
        "updated_at": None,
        "closed_reason": None,
        "voided_at": None,
        "written_off_at": None,
        "written_off_amount": None,
    }


def payment_out_json(p: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of `PaymentOut` for a payment row."""
    cur = p["currency"]
    return {
        "payment_id": p["payment_id"],
        "allocation_id": p.get("allocation_id"),
        "source": p["source"],
        "source_reference": p["source_reference"],
        "currency": cur,
        "amount": format_amount(p["amount"], cur),
        "amount_applied": format_amount(p["amount_applied"], cur),
        "balance_remaining": format_amount(p["balance_remaining"], cur),
        "settled": p["settled"],
        "received_at": _ts(p["received_at"]),
        "acknowledged_at": _ts(p["acknowledged_at"]),
        "match_rule": p.get("match_rule"),
        "match_reason": p.get("match_reason"),
        "balance_version": p.get("balance_version"),
    }


def timeline_out_json(
    stages: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The JSON of a list of `StageOut` for stage rows and their history rows."""
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in history:
        by_stage[h["stage_id"]].append(
            {
                "state": h["state"],
                "at": _ts(h["at"]),
                "reason": h["reason"],
                "previous_scheduled_at": _ts(h["previous_scheduled_at"]),
                "scheduled_at": _ts(h["scheduled_at"]),
            }
        )
    return [
        {
            "stage_id": s["stage_id"],
            "stage": s["stage"],
            "sequence": s["sequence"],
            "channel": s["channel"],
            "scheduled_at": _ts(s["scheduled_at"]),
            "state": s["state"],
            "changed_at": _ts(s["changed_at"]),
            "reason": s["reason"],
            "history": by_stage.get(s["stage_id"], []),
        }
        for s in stages
    ]


def credit_note_out_json(c: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of `CreditNoteOut` for a credit note row."""
    cur = c["currency"]
    return {
        "credit_note_id": c["credit_note_id"],
        "reference": c["reference"],
        "reason": c["reason"],
        "currency": cur,
        "amount": format_amount(c["amount"], cur),
        "amount_applied": format_amount(c["amount_applied"], cur),
        "balance_remaining": format_amount(c["balance_remaining"], cur),
        "settled": c["settled"],
        "acknowledged_at": _ts(c["acknowledged_at"]),
    }


def invoice_detail_json(
    r: Mapping[str, Any], payments=(), stages=(), history=(), *, credit_notes=(), changes=(), stops=None, money=None
) -> dict[str, Any]:
    """The JSON of `InvoiceDetail` (`history`: the stages' history rows; `changes`: the invoice's;
    `stops`: its Stops, `money`: its MoneyRows, whose few rows are dumped through their models: not a
    hot path)."""
    stops = stops or Stops()
    body = invoice_out_json(r)
    body["payments"] = [payment_out_json(p) for p in payments]
    body["credit_notes"] = [credit_note_out_json(c) for c in credit_notes]
    body["money"] = money_json(r["currency"], payments, credit_notes, money)
    body["timeline"] = timeline_out_json(stages, history)
    body["holds"] = [dump(HoldOut.from_row(h)) for h in stops.holds]
    body["disputes"] = [dump(DisputeOut.from_row(d)) for d in stops.disputes]
    body["promises"] = [dump(PromiseOut.from_row(p)) for p in stops.promises]
    body["charges"] = charges_json(r)
    body["history"] = invoice_history_json(r, payments, credit_notes, changes, stops=stops, money=money)
    return body
