"""API models: what the accounting system sends (payments, credit notes) and what reconciliation
answers (payments, credit notes, the write-off report)."""

from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from dunning.clock import isoformat
from dunning.money import MoneyError, format_amount, validate_currency
from dunning_reconciliation.domain import api_status


def _decimal_text(cls: Any, value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "1250.00", not a number')
    return value


def _iso_currency(cls: Any, value: str) -> str:
    try:
        return validate_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


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

    _amount_is_text = field_validator("amount", mode="before")(_decimal_text)
    _currency = field_validator("currency")(_iso_currency)


class AllocationOut(BaseModel):
    allocation_id: str
    invoice_id: str
    amount: str = Field(description="What the allocation applies now (a reversal may have reduced it).")
    rule: str = Field(description="The matching rule: metadata, reference, creditor_reference, manual, ...")
    reason: str = Field(description="Why, in words.")
    allocated_by: Literal["system", "api"]
    created_at: str
    unallocated_at: str | None = None
    unallocation_reason: str | None = None


class CreditApplicationOut(BaseModel):
    application_id: str
    invoice_id: str
    amount: str
    applied_at: str


class CreditOut(BaseModel):
    credit_id: str
    customer_id: str
    currency: str
    amount: str = Field(description="The over-payment's excess credited to the customer (less what was reversed).")
    remaining: str = Field(description="Not yet applied to an invoice; applied to the customer's next open one.")
    source_payment_id: str
    created_at: str
    applications: list[CreditApplicationOut]


class PaymentOut(BaseModel):
    payment_id: str
    invoice_id: str | None = Field(description="The (first) invoice it is allocated to, or the one that refused it.")
    status: Literal[
        "applied",
        "partially_allocated",
        "pending_match",
        "processing",
        "failed",
        "reversed",
        "rejected_currency_mismatch",
        "invoice_closed",
    ] = Field(
        description="`invoice_closed`: the invoice is void or written off; recorded, not applied. "
        "`pending_match`: in the unmatched queue."
    )
    source: Literal["stripe", "api", "bank_statement", "gocardless", "standard_webhooks"]
    reference: str = Field(description="Stripe event id, or the accounting system's payment reference.")
    currency: str
    amount: str
    amount_applied: str
    unapplied_amount: str = Field(
        description="Not applied to invoices: the excess credited to the customer plus what is unallocated."
    )
    amount_allocated: str = Field(description="Allocated to invoices now (as amount_applied).")
    unallocated_amount: str = Field(description="Neither allocated, credited nor taken back (the queue's amount).")
    credited_amount: str = Field(description="The excess that became customer credit (see `credit`).")
    amount_refunded: str = Field(description="Taken back: refunds, lost chargebacks, failed debits.")
    balance_remaining: str | None
    settled: bool
    received_at: str
    acknowledged_at: str
    allocations: list[AllocationOut] = []
    credit: CreditOut | None = None


class WebhookAck(BaseModel):
    status: Literal[
        "applied",
        "pending_match",
        "duplicate",
        "ignored",
        "rejected_currency_mismatch",
        "invoice_closed",
        # issue 11, more of Stripe (stripe_money): a debit in flight / failed, a refund reversed, a
        # dispute opened / closed, an invoice Stripe closed, a Stripe credit note applied.
        "processing",
        "failed",
        "reversed",
        "disputed",
        "dispute_closed",
        "closed",
        "credited",
    ]
    payment_id: str | None = None
    invoice_id: str | None = None
    settled: bool | None = None


def allocation_view(row) -> dict[str, Any]:
    currency = row["currency"]
    undone = row["unallocated_at"]
    return {
        "allocation_id": row["allocation_id"],
        "invoice_id": row["invoice_id"],
        "amount": format_amount(row["amount"], currency),
        "rule": row["rule"],
        "reason": row["reason"],
        "allocated_by": row["allocated_by"],
        "created_at": isoformat(row["created_at"]),
        "unallocated_at": None if undone is None else isoformat(undone),
        "unallocation_reason": row["unallocation_reason"],
    }


def credit_view(credit: dict) -> dict[str, Any]:
    """A customer credit (repository.credits_of_*: a row with its applications)."""
    currency = credit["currency"]
    return {
        "credit_id": credit["credit_id"],
        "customer_id": credit["customer_id"],
        "currency": currency,
        "amount": format_amount(credit["amount"], currency),
        "remaining": format_amount(credit["remaining"], currency),
        "source_payment_id": credit["source_payment_id"],
        "created_at": isoformat(credit["created_at"]),
        "applications": [
            {
                "application_id": a["application_id"],
                "invoice_id": a["invoice_id"],
                "amount": format_amount(Decimal(a["amount"]), currency),
                "applied_at": a["applied_at"] if isinstance(a["applied_at"], str) else isoformat(a["applied_at"]),
            }
            for a in credit["applications"]
        ],
    }


def payment_view(row, allocations=(), credit: dict | None = None) -> dict[str, Any]:
    """A payment row (repository PAYMENT_COLUMNS) with its allocation rows and its credit."""
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
        "amount_allocated": format_amount(row["amount_applied"], currency),
        "unallocated_amount": format_amount(row["unallocated_amount"], currency),
        "credited_amount": format_amount(credit["amount"] if credit else Decimal(0), currency),
        "amount_refunded": format_amount(row["amount_refunded"], currency),
        "balance_remaining": None if balance is None else format_amount(balance, currency),
        "settled": row["settled"],
        "received_at": isoformat(row["received_at"]),
        "acknowledged_at": isoformat(row["acknowledged_at"]),
        "allocations": [allocation_view(a) for a in allocations],
        "credit": credit_view(credit) if credit else None,
    }


class CreditNoteIn(BaseModel):
    """A credit note issued by the accounting system against one invoice. Name the invoice by
    `invoice_id` (ours) or `invoice_external_id` (the accounting system's id)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoice_external_id": "INV-2026-00412",
                    "reference": "CN-2026-0031",
                    "amount": "250.00",
                    "currency": "EUR",
                    "reason": "Two units returned damaged",
                }
            ]
        },
    )

    invoice_id: str | None = Field(None, pattern=r"^inv_[0-9A-Za-z]{10,40}$")
    invoice_external_id: str | None = Field(None, min_length=1, max_length=200)
    reference: str = Field(
        min_length=1,
        max_length=255,
        description="The accounting system's credit note number; retries with it are idempotent.",
    )
    amount: str = Field(description='Decimal string in major units, e.g. "250.00"; never a JSON number.')
    currency: str = Field(description="ISO 4217 code, upper case; the invoice's currency.")
    reason: str = Field(min_length=1, max_length=500, description="Why the credit was given (free text).")

    _amount_is_text = field_validator("amount", mode="before")(_decimal_text)
    _currency = field_validator("currency")(_iso_currency)


class CreditNoteOut(BaseModel):
    credit_note_id: str
    invoice_id: str
    invoice_external_id: str
    reference: str
    reason: str
    currency: str
    amount: str
    amount_applied: str = Field(description="Part of the amount applied to the invoice (at most its balance).")
    unapplied_amount: str = Field(description="Part of the amount above the balance: recorded, not applied.")
    balance_remaining: str
    settled: bool
    acknowledged_at: str = Field(description="When it was applied; the payments watermark covers it from then.")


class WriteOffOut(BaseModel):
    invoice_id: str
    external_id: str
    number: str
    currency: str
    amount: str = Field(description="The balance written off, as reconciliation held it when it applied the write-off.")
    amount_reported: str = Field(description="The balance invoice-ingest held when it accepted the write-off.")
    reason: str
    written_off_at: str


class CurrencyTotal(BaseModel):
    currency: str
    count: int
    amount: str


class WriteOffReport(BaseModel):
    data: list[WriteOffOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    totals: list[CurrencyTotal] = Field(description="Per currency, every write-off of the period (not only this page).")


def credit_note_view(row) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "credit_note_id": row["credit_note_id"],
        "invoice_id": row["invoice_id"],
        "invoice_external_id": row["invoice_external_id"],
        "reference": row["reference"],
        "reason": row["reason"],
        "currency": currency,
        "amount": format_amount(row["amount"], currency),
        "amount_applied": format_amount(row["amount_applied"], currency),
        "unapplied_amount": format_amount(row["unapplied_amount"], currency),
        "balance_remaining": format_amount(row["balance_remaining"], currency),
        "settled": row["settled"],
        "acknowledged_at": isoformat(row["acknowledged_at"]),
    }


def write_off_view(row) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "invoice_id": row["invoice_id"],
        "external_id": row["external_id"],
        "number": row["number"],
        "currency": currency,
        "amount": format_amount(row["amount"], currency),
        "amount_reported": format_amount(row["amount_reported"], currency),
        "reason": row["reason"],
        "written_off_at": isoformat(row["written_off_at"]),
    }


def currency_total(row) -> dict[str, Any]:
    return {"currency": row["currency"], "count": row["count"], "amount": format_amount(row["amount"], row["currency"])}


class CustomerCreditOut(BaseModel):
    customer_id: str
    balances: list[CurrencyTotal] = Field(description="Per currency, the credit not yet applied.")
    credits: list[CreditOut] = Field(description="Every credit of the customer, oldest first, with its applications.")


def customer_credit_view(customer_id: str, credits: list[dict]) -> dict[str, Any]:
    totals: dict[str, list] = {}
    for c in credits:
        if c["remaining"] > 0:
            entry = totals.setdefault(c["currency"], [0, Decimal(0)])
            entry[0] += 1
            entry[1] += c["remaining"]
    return {
        "customer_id": customer_id,
        "balances": [
            {"currency": cur, "count": n, "amount": format_amount(amount, cur)}
            for cur, (n, amount) in sorted(totals.items())
        ],
        "credits": [credit_view(c) for c in credits],
    }
