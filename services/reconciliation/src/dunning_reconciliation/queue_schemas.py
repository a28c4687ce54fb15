"""API models of the unmatched queue: a manual allocation (to one or several invoices), its undoing,
and the suggestions a queued payment shows."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dunning.clock import isoformat
from dunning.money import format_amount

MAX_ALLOCATIONS = 50
# Payment statuses a listing filters on (`pending_match` is how the API shows `unmatched`).
STATUSES = (
    "applied",
    "partially_allocated",
    "unmatched",
    "pending_match",
    "processing",
    "failed",
    "reversed",
    "rejected_currency_mismatch",
    "invoice_closed",
)
SOURCES = ("stripe", "api", "bank_statement", "gocardless", "standard_webhooks")


def _decimal_text(cls: Any, value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "1250.00", not a number')
    return value


class ManualAllocationIn(BaseModel):
    """One invoice and the amount of the payment's unallocated money to apply to it."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: str | None = Field(None, pattern=r"^inv_[0-9A-Za-z]{10,40}$")
    invoice_external_id: str | None = Field(None, min_length=1, max_length=200)
    amount: str = Field(description='Decimal string in the payment\'s currency, e.g. "400.00"; never a JSON number.')

    _amount_is_text = field_validator("amount", mode="before")(_decimal_text)

    @model_validator(mode="after")
    def _one_key(self) -> "ManualAllocationIn":
        if (self.invoice_id is None) == (self.invoice_external_id is None):
            raise ValueError("name the invoice with exactly one of invoice_id or invoice_external_id")
        return self


class AllocateIn(BaseModel):
    """Allocate a queued (or partly allocated) payment by hand. `remember_payer`: the payer's account
    is learnt as the invoices' customer's, so its later payments of an exact open amount match alone."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "allocations": [
                        {"invoice_external_id": "INV-2026-1001", "amount": "400.00"},
                        {"invoice_external_id": "INV-2026-1004", "amount": "250.00"},
                    ],
                    "reason": "Customer's e-mail of 3 Dec: pays INV-1001 and INV-1004",
                    "remember_payer": True,
                }
            ]
        },
    )

    allocations: list[ManualAllocationIn] = Field(min_length=1, max_length=MAX_ALLOCATIONS)
    reason: str = Field(min_length=1, max_length=500, description="Why, in words (kept on each allocation).")
    remember_payer: bool = True


class UnallocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("undone by hand", min_length=1, max_length=500)


class SuggestionOut(BaseModel):
    """An open invoice a queued payment may pay, ranked (score 0..1) with the reasons in words."""

    invoice_id: str
    number: str
    customer_id: str | None
    balance: str
    currency: str
    due_date: str | None
    score: float
    why: str


class AllocationOut(BaseModel):
    """Money of the payment applied to one invoice; an undone one keeps its row (`unallocated_at`)."""

    allocation_id: str
    invoice_id: str
    amount: str = Field(description="What it applies now (a reversal may have taken part of it back).")
    rule: str = Field(description="The matching rule, `manual` by hand, `metadata`/`api` named by key.")
    reason: str
    allocated_by: str
    created_at: str
    unallocated_at: str | None
    unallocation_reason: str | None


class QueuedPaymentOut(BaseModel):
    """A payment as the listing and the queue show it: its money, where it went, and (unmatched) the
    invoices it may pay."""

    payment_id: str
    invoice_id: str | None = Field(description="The invoice of its latest allocation (null: none yet).")
    status: str = Field(description="applied | partially_allocated | unmatched (the queue) | processing | ...")
    source: str
    reference: str
    currency: str
    amount: str
    amount_allocated: str
    unallocated_amount: str = Field(description="Money of the payment not allocated nor credited nor refunded.")
    amount_refunded: str
    amount_applied: str = Field(description="As amount_allocated (kept for clients of before issue 11).")
    unapplied_amount: str
    balance_remaining: str | None = Field(description="The balance its latest allocation left.")
    settled: bool
    customer_id: str | None
    payer_name: str | None
    payer_account: str | None
    remittance: str | None
    creditor_reference: str | None
    match_rule: str | None
    match_reason: str | None
    received_at: str
    acknowledged_at: str
    allocations: list[AllocationOut]
    suggestions: list[SuggestionOut] | None = Field(
        None, description="An unmatched payment's candidate invoices, best first (at most five)."
    )


def allocation_view(row) -> dict[str, Any]:
    return {
        "allocation_id": row["allocation_id"],
        "invoice_id": row["invoice_id"],
        "amount": format_amount(row["amount"], row["currency"]),
        "rule": row["rule"],
        "reason": row["reason"],
        "allocated_by": row["allocated_by"],
        "created_at": isoformat(row["created_at"]),
        "unallocated_at": isoformat(row["unallocated_at"]) if row["unallocated_at"] else None,
        "unallocation_reason": row["unallocation_reason"],
    }


def queued_payment_view(row, allocations) -> dict[str, Any]:
    """The payment row (repository PAYMENT_COLUMNS) with its allocation rows, as QueuedPaymentOut."""
    currency, balance = row["currency"], row["balance_remaining"]
    view = {
        "payment_id": row["payment_id"],
        "invoice_id": row["invoice_id"],
        "status": row["status"],
        "source": row["source"],
        "reference": row["source_reference"],
        "currency": currency,
        "amount": format_amount(row["amount"], currency),
        "amount_allocated": format_amount(row["amount_applied"], currency),
        "unallocated_amount": format_amount(row["unallocated_amount"], currency),
        "amount_refunded": format_amount(row["amount_refunded"], currency),
        "amount_applied": format_amount(row["amount_applied"], currency),
        "unapplied_amount": format_amount(row["unapplied_amount"], currency),
        "balance_remaining": None if balance is None else format_amount(balance, currency),
        "settled": row["settled"],
        **{k: row[k] for k in ("customer_id", "payer_name", "payer_account", "remittance", "creditor_reference")},
        "match_rule": row["match_rule"],
        "match_reason": row["match_reason"],
        "received_at": isoformat(row["received_at"]),
        "acknowledged_at": isoformat(row["acknowledged_at"]),
        "allocations": [allocation_view(a) for a in allocations],
    }
    if row["status"] == "unmatched":
        view["suggestions"] = row["suggestions"] or []
    return view
