"""API models of the unmatched queue: a manual allocation (to one or several invoices), its undoing,
and the suggestions a queued payment shows."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dunning_reconciliation.domain import UNMATCHED
from dunning_reconciliation.schemas import PaymentOut, payment_view

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
    is learnt as the invoices' customer's (when they share one), so its later payments of an exact open
    amount match alone; undoing the payment's last allocation forgets it again."""

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


class QueuedPaymentOut(PaymentOut):
    """A payment as the listing and the queue show it: PaymentOut (its money, allocations, credit),
    its status as stored and filtered on, what the bank line said of the payer, the rule that matched
    it, and (unmatched) the invoices it may pay."""

    status: str = Field(  # type: ignore[assignment]
        description="As stored (the `status` filter's values): applied | partially_allocated | unmatched "
        "(the queue) | processing | failed | reversed | rejected_currency_mismatch | invoice_closed"
    )
    customer_id: str | None = None
    payer_name: str | None = None
    payer_account: str | None = Field(None, description="The payer's IBAN, upper case, no spaces.")
    remittance: str | None = None
    creditor_reference: str | None = None
    match_rule: str | None = None
    match_reason: str | None = None
    suggestions: list[SuggestionOut] | None = Field(
        None, description="An unmatched payment's candidate invoices, best first (at most five)."
    )


def queued_payment_view(row, allocations, credit: dict | None) -> dict[str, Any]:
    """schemas.payment_view, with the fields of QueuedPaymentOut that it does not show."""
    view = payment_view(row, allocations, credit)
    view["status"] = row["status"]
    for name in ("customer_id", "payer_name", "payer_account", "remittance", "creditor_reference"):
        view[name] = row[name]
    view["match_rule"], view["match_reason"] = row["match_rule"], row["match_reason"]
    if row["status"] == UNMATCHED:
        view["suggestions"] = row["suggestions"] or []
    return view
