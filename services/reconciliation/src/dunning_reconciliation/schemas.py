"""API models: what the accounting system sends and what reconciliation answers."""

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from dunning.clock import isoformat
from dunning.money import MoneyError, format_amount, validate_currency
from dunning_reconciliation.domain import api_status


class PaymentIn(BaseModel):
    """A payment reported by the accounting system. Name the invoice by `invoice_id` (ours) or
    `invoice_external_id` (the accounting system's id)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoice_external_id": "INV-2026-1107-003",
                    "amount": "158000",
                    "currency": "JPY",
                    "received_at": "2026-12-09T09:00:00+09:00",
                    "reference": "RCPT-2026-12-0457",
                }
            ]
        },
    )

    invoice_id: str | None = Field(None, pattern=r"^inv_[0-9A-Za-z]{10,40}$")
    invoice_external_id: str | None = Field(None, min_length=1, max_length=200)
    amount: str = Field(description='Decimal string in major units, e.g. "1250.00"; never a JSON number.')
    currency: str = Field(description="ISO 4217 code, upper case.")
    received_at: AwareDatetime = Field(description="When the money arrived, with a UTC offset.")
    reference: str = Field(
        min_length=1, max_length=255, description="The accounting system's payment id; retries with it are idempotent."
    )

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError('must be a decimal string such as "1250.00", not a number')
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return validate_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from None


class PaymentOut(BaseModel):
    payment_id: str
    invoice_id: str | None
    status: Literal["applied", "pending_match", "rejected_currency_mismatch"]
    source: Literal["stripe", "api"]
    reference: str = Field(description="Stripe event id, or the accounting system's payment reference.")
    currency: str
    amount: str
    amount_applied: str
    unapplied_amount: str = Field(
        description="Overpayment not applied to the invoice (or, while pending, the whole amount)."
    )
    balance_remaining: str | None
    settled: bool
    received_at: str
    acknowledged_at: str


class WebhookAck(BaseModel):
    status: Literal["applied", "pending_match", "duplicate", "ignored", "rejected_currency_mismatch"]
    payment_id: str | None = None
    invoice_id: str | None = None
    settled: bool | None = None


def payment_view(row) -> dict[str, Any]:
    currency = row["currency"]
    balance = row["balance_remaining"]
    return {
        "payment_id": row["payment_id"],
        "invoice_id": row["invoice_id"],
        "status": api_status(row["status"]),
        "source": row["source"],
        "reference": row["source_reference"],
        "currency": currency,
        "amount": format_amount(row["amount"], currency),
        "amount_applied": format_amount(row["amount_applied"], currency),
        "unapplied_amount": format_amount(row["unapplied_amount"], currency),
        "balance_remaining": None if balance is None else format_amount(balance, currency),
        "settled": row["settled"],
        "received_at": isoformat(row["received_at"]),
        "acknowledged_at": isoformat(row["acknowledged_at"]),
    }
