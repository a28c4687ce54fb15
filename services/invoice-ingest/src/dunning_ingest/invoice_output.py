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

from pydantic import BaseModel

from dunning.clock import isoformat
from dunning.money import format_amount

INVOICE_ID = re.compile(r"^inv_[0-9A-Za-z]{10,40}$")


class CustomerOut(BaseModel):
    id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str


class PaymentOut(BaseModel):
    payment_id: str
    source: Literal["stripe", "api"]
    source_reference: str
    currency: str
    amount: str
    amount_applied: str
    balance_remaining: str
    settled: bool
    received_at: datetime
    acknowledged_at: datetime

    @classmethod
    def from_row(cls, p: Mapping[str, Any]) -> "PaymentOut":
        money = {k: format_amount(p[k], p["currency"]) for k in ("amount", "amount_applied", "balance_remaining")}
        return cls.model_validate({**{k: p[k] for k in cls.model_fields if k not in money}, **money})


class StageHistoryOut(BaseModel):
    state: str
    at: datetime
    reason: str | None


class StageOut(BaseModel):
    stage_id: str
    stage: str
    sequence: int | None
    channel: str
    scheduled_at: datetime | None
    state: Literal["scheduled", "escalated", "sent", "failed", "cancelled", "skipped"]
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


class InvoiceOut(BaseModel):
    id: str
    external_id: str
    number: str
    status: Literal["open", "paid", "void"]
    currency: str
    amount_due: str
    balance: str
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    customer: CustomerOut
    created_at: datetime

    @classmethod
    def fields_of(cls, r: Mapping[str, Any]) -> dict[str, Any]:
        """The model's fields from an invoice row (repository.INVOICE_SELECT)."""
        customer = CustomerOut.model_validate(
            {k: r["customer_id" if k == "id" else f"customer_{k}"] for k in CustomerOut.model_fields}
        )
        money = {k: format_amount(r[k], r["currency"]) for k in ("amount_due", "balance")}
        plain = {k: r[k] for k in InvoiceOut.model_fields if k not in money and k != "customer"}
        return {**plain, **money, "customer": customer}

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "InvoiceOut":
        return cls(**cls.fields_of(r))


class InvoiceDetail(InvoiceOut):
    payments: list[PaymentOut]
    timeline: list[StageOut]

    @classmethod
    def from_rows(
        cls,
        r: Mapping[str, Any],
        payments: Sequence[Mapping[str, Any]] = (),
        stages: Sequence[Mapping[str, Any]] = (),
        history: Sequence[Mapping[str, Any]] = (),
    ) -> "InvoiceDetail":
        return cls(
            **cls.fields_of(r),
            payments=[PaymentOut.from_row(p) for p in payments],
            timeline=[StageOut.from_rows(s, history) for s in stages],
        )


# --- the JSON writer: mirrors the models above ------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def invoice_out_json(r: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of `InvoiceOut` for an invoice row (repository.INVOICE_SELECT)."""
    currency = r["currency"]
    return {
        "id": r["id"],
        "external_id": r["external_id"],
        "number": r["number"],
        "status": r["status"],
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
        },
        "created_at": _ts(r["created_at"]),
    }


def new_invoice_row(invoice_id: str, customer_id: str, inv: Any, created_at: datetime) -> dict[str, Any]:
    """The row an invoice that was just created would read back as (saves a round trip)."""
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
        "created_at": created_at,
    }


def payment_out_json(p: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of `PaymentOut` for a payment row."""
    cur = p["currency"]
    return {
        "payment_id": p["payment_id"],
        "source": p["source"],
        "source_reference": p["source_reference"],
        "currency": cur,
        "amount": format_amount(p["amount"], cur),
        "amount_applied": format_amount(p["amount_applied"], cur),
        "balance_remaining": format_amount(p["balance_remaining"], cur),
        "settled": p["settled"],
        "received_at": _ts(p["received_at"]),
        "acknowledged_at": _ts(p["acknowledged_at"]),
    }


def timeline_out_json(
    stages: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The JSON of a list of `StageOut` for stage rows and their history rows."""
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in history:
        by_stage[h["stage_id"]].append({"state": h["state"], "at": _ts(h["at"]), "reason": h["reason"]})
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


def invoice_detail_json(r: Mapping[str, Any], payments=(), stages=(), history=()) -> dict[str, Any]:
    """The JSON of `InvoiceDetail`."""
    body = invoice_out_json(r)
    body["payments"] = [payment_out_json(p) for p in payments]
    body["timeline"] = timeline_out_json(stages, history)
    return body
