"""What the stops read back as: holds, disputes and promises (the response models, built from rows by
their `from_row`; not a hot path, so the routes dump the models), and the entries each stop adds to
an invoice's history (`stop_history`), merged with its creation, changes and payments by
invoice_history.invoice_history_json."""

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from dunning.clock import isoformat
from dunning.http import Page
from dunning.money import format_amount

HOLD_ID = re.compile(r"^hld_[0-9A-Za-z]{10,40}$")
DISPUTE_ID = re.compile(r"^dsp_[0-9A-Za-z]{10,40}$")


def _money(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


class HoldOut(BaseModel):
    hold_id: str
    scope: Literal["invoice", "customer"] = Field(description="One invoice, or every invoice of the customer.")
    invoice_id: str | None = Field(description="The invoice held (null for a customer hold).")
    customer_id: str
    reason: str
    placed_by: str
    ends_at: datetime | None = Field(description="Dunning resumes by itself then; null: until released.")
    status: Literal["active", "released", "expired"] = Field(
        description="`expired`: its ends_at has passed (it ended by itself); `released`: lifted by DELETE."
    )
    acknowledged_at: datetime = Field(
        description="When the platform acknowledged it: no reminder of a held invoice scheduled at or after "
        "this instant is sent."
    )
    released_at: datetime | None
    released_by: str | None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "HoldOut":
        fields = {k: r[k] for k in cls.model_fields if k != "scope"}
        return cls(**fields, scope="invoice" if r["invoice_id"] else "customer")


HoldList = Page[HoldOut]


class DisputeOut(BaseModel):
    dispute_id: str
    invoice_id: str
    status: Literal["open", "upheld", "rejected"]
    reason: str
    currency: str
    disputed_amount: str | None = Field(description="Decimal string; null: the whole invoice is disputed.")
    opened_by: str
    acknowledged_at: datetime = Field(description="When the platform acknowledged it (dunning pauses from then).")
    resolved_at: datetime | None
    outcome: Literal["upheld", "rejected"] | None
    credit_amount: str | None = Field(
        description="Upheld: the amount credited (a credit note referencing the dispute)."
    )
    note: str | None
    resolved_by: str | None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "DisputeOut":
        cur = r["currency"]
        return cls(
            **{k: r[k] for k in cls.model_fields if k not in ("disputed_amount", "credit_amount", "outcome")},
            disputed_amount=_money(r["disputed_amount"], cur),
            credit_amount=_money(r["credit_amount"], cur),
            outcome=None if r["status"] == "open" else r["status"],
        )


class DisputeList(BaseModel):
    data: list[DisputeOut] = Field(description="Oldest first.")


class PromiseOut(BaseModel):
    promise_id: str
    invoice_id: str
    status: Literal["pending", "kept", "broken"] = Field(
        description="The scheduler's verdict: kept when paid by the deadline, broken at the deadline otherwise."
    )
    amount: str
    currency: str
    promised_date: date = Field(
        description="A calendar day in the customer's time zone (the day of `due_by`, if given)."
    )
    due_by: datetime | None = Field(
        description="The instant promised (the request's `by`), or null: by the end of promised_date."
    )
    made_by: str
    note: str | None
    acknowledged_at: datetime = Field(description="When the platform acknowledged it (dunning pauses from then).")
    deadline: datetime | None = Field(
        description="The end of promised_date in the customer's zone (or due_by, if given) plus the policy's grace "
        "(known once broken)."
    )
    paid_amount: str | None = Field(description="Paid or credited since the promise, when it was judged.")
    settled_at: datetime | None = Field(description="When it was judged kept or broken.")

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "PromiseOut":
        cur = r["currency"]
        return cls(
            **{k: r[k] for k in cls.model_fields if k not in ("amount", "paid_amount")},
            amount=format_amount(r["amount"], cur),
            paid_amount=_money(r["paid_amount"], cur),
        )


class PromiseList(BaseModel):
    data: list[PromiseOut] = Field(description="Oldest first.")


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# --- the history entries of the stops ---------------------------------------------------------------


def history_entry(kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    """One entry of an invoice's history (invoice_history.InvoiceEventOut's fields; `at` not yet text)."""
    return {
        "kind": kind,
        "at": at,
        "version": None,
        "changes": None,
        "reason": None,
        "amount": None,
        "reference": None,
        "by": None,
        "data": None,
        **fields,
    }


def _hold_entries(h: Mapping[str, Any]) -> list[dict[str, Any]]:
    scope = "invoice" if h["invoice_id"] else "customer"
    ref = h["hold_id"]
    out = [
        history_entry(
            "hold_placed",
            h["acknowledged_at"],
            reference=ref,
            reason=h["reason"],
            by=h["placed_by"],
            data={"scope": scope, "ends_at": _ts(h["ends_at"])},
        )
    ]
    if h["released_at"] is not None:
        out.append(history_entry("hold_released", h["released_at"], reference=ref, by=h["released_by"]))
    elif h["status"] == "expired":
        out.append(history_entry("hold_expired", h["ends_at"], reference=ref))
    return out


def _dispute_entries(d: Mapping[str, Any], cur: str) -> list[dict[str, Any]]:
    ref = d["dispute_id"]
    out = [
        history_entry(
            "dispute_opened",
            d["acknowledged_at"],
            reference=ref,
            reason=d["reason"],
            amount=_money(d["disputed_amount"], cur),
            by=d["opened_by"],
        )
    ]
    if d["resolved_at"] is not None:
        out.append(
            history_entry(
                "dispute_resolved",
                d["resolved_at"],
                reference=ref,
                reason=d["note"],
                amount=_money(d["credit_amount"], cur),
                by=d["resolved_by"],
                data={"outcome": d["status"]},
            )
        )
    return out


def _promise_entries(p: Mapping[str, Any], cur: str) -> list[dict[str, Any]]:
    ref = p["promise_id"]
    out = [
        history_entry(
            "promise_made",
            p["acknowledged_at"],
            reference=ref,
            reason=p["note"],
            amount=_money(p["amount"], cur),
            by=p["made_by"],
            data={"promised_date": p["promised_date"].isoformat()}
            | ({"due_by": _ts(p["due_by"])} if p.get("due_by") is not None else {}),
        )
    ]
    if p["settled_at"] is not None:
        data = {"deadline": _ts(p["deadline"])} if p["deadline"] is not None else None
        out.append(
            history_entry(
                f"promise_{p['status']}",
                p["settled_at"],
                reference=ref,
                amount=_money(p["paid_amount"], cur),
                data=data,
            )
        )
    return out


def _plan_entries(p: Mapping[str, Any], cur: str) -> list[dict[str, Any]]:
    """A payment plan's entries, from its row (repository.plans' select)."""
    ref = p["id"]
    instalments = p["instalments"] or []
    out = [
        history_entry(
            "payment_plan_agreed",
            p["acknowledged_at"],
            reference=ref,
            amount=_money(p["total"], cur),
            by=p["agreed_by"],
            data={"instalments": len(instalments), "invoice_ids": [i["invoice_id"] for i in p["invoices"] or []]},
        )
    ]
    if p["missed_at"] is not None:
        out.append(
            history_entry("instalment_missed", p["missed_at"], reference=ref, data={"number": p["missed_instalment"]})
        )
    if p["ended_at"] is not None and p["status"] in ("completed", "broken", "cancelled"):
        out.append(
            history_entry(
                f"payment_plan_{p['status']}", p["ended_at"], reference=ref, reason=p["end_reason"], by=p["ended_by"]
            )
        )
    return out


def stop_history(
    currency: str,
    holds: Sequence[Mapping[str, Any]] = (),
    disputes: Sequence[Mapping[str, Any]] = (),
    promises: Sequence[Mapping[str, Any]] = (),
    stop_events: Sequence[Mapping[str, Any]] = (),
    plans: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The history entries of an invoice's stops (unsorted): each hold covering it placed, released or
    expired; each dispute opened and resolved; each promise made, kept or broken; and what the other
    services reported (stop_events rows: paused, resumed, reminder_cancelled); each payment plan covering
    it agreed, an instalment missed, and the plan's end (completed, broken, cancelled)."""
    out: list[dict[str, Any]] = []
    for h in holds:
        out += _hold_entries(h)
    for d in disputes:
        out += _dispute_entries(d, currency)
    for p in promises:
        out += _promise_entries(p, currency)
    for plan in plans:
        out += _plan_entries(plan, currency)
    for e in stop_events:
        out.append(
            history_entry(
                e["kind"],
                e["at"],
                reference=e["reference"],
                reason=e["reason"],
                amount=_money(e["amount"], currency),
                by=(e["data"] or {}).get("by") if e["kind"] == "charges_waived" else None,
                data=e["data"],
            )
        )
    return out
