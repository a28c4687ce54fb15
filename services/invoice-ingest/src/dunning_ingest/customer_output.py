"""What a customer reads back as (GET /v1/customers, GET and PATCH /v1/customers/{id}): the response
models, built from rows by their `from_row(s)`. Not a hot path, so no JSON writer beside them: the
routes dump these models."""

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from dunning.http import Page
from dunning.money import format_amount
from dunning_ingest.customer_rules import whole_address
from dunning_ingest.stop_output import HoldOut

CUSTOMER_ID = re.compile(r"^cus_[0-9A-Za-z]{10,40}$")
# A customer's external id as a list cursor carries it: storable text (no NUL, no lone surrogate), 1-200.
EXTERNAL_ID = re.compile("[^\x00\ud800-\udfff]{1,200}")
OPEN_INVOICES_SHOWN = 50  # a customer's open invoices in its detail, newest first (`has_more` says if more)


class Contacts(BaseModel):
    email: str = Field(description="The primary accounts-payable address: every reminder goes to it.")
    cc: list[str] = Field(description="Addresses copied on every e-mail reminder (at most 10).")


class CustomerOut(BaseModel):
    id: str
    external_id: str = Field(description="The customer's id in the accounting system.")
    name: str
    contacts: Contacts
    locale: str
    timezone: str
    country: str | None = Field(description="ISO 3166-1 alpha-2: the public holidays of its working calendar.")
    subdivision: str | None = Field(description="ISO 3166-2 code without the country (BY for DE-BY).")
    tags: list[str] = Field(description="What the tenant's segment rules match on.", examples=[["strategic"]])
    attributes: dict[str, str] = Field(
        description="Text attributes the segment rules match exactly.", examples=[{"industry": "construction"}]
    )
    phone: str | None = Field(None, description="E.164 (+4930123456): SMS reminders and calls; null: none.")
    postal_address: dict[str, Any] | None = Field(
        None,
        description="Where letters go: name, lines (1-4), postal_code, city, region, country; null: none.",
    )
    version: int = Field(description="1 at creation, +1 per change; the `ETag` of the customer is its quoted version.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def fields_of(cls, r: Mapping[str, Any]) -> dict[str, Any]:
        """The model's fields from a customer row (repository.customers.CUSTOMER_SELECT)."""
        plain = {k: r[k] for k in CustomerOut.model_fields if k not in ("contacts", "tags", "attributes")}
        plain["phone"], plain["postal_address"] = r.get("phone"), whole_address(r.get("postal_address"))
        extras = {"tags": list(r["tags"] or ()), "attributes": dict(r["attributes"] or {})}
        return {**plain, **extras, "contacts": Contacts(email=r["email"], cc=list(r["cc"]))}

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "CustomerOut":
        return cls(**cls.fields_of(r))


class OpenInvoiceOut(BaseModel):
    id: str
    external_id: str
    number: str
    currency: str
    balance: str = Field(description="Decimal string in major units.")
    due_date: date

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "OpenInvoiceOut":
        return cls(**{**{k: r[k] for k in cls.model_fields}, "balance": format_amount(r["balance"], r["currency"])})


class OpenInvoices(BaseModel):
    data: list[OpenInvoiceOut] = Field(description=f"Newest first, at most {OPEN_INVOICES_SHOWN}.")
    has_more: bool = Field(description="More open invoices than shown: `GET /v1/invoices?status=open&customer=...`.")


class CustomerDetail(CustomerOut):
    open_invoices: OpenInvoices
    balances: dict[str, str] = Field(
        description="Per currency, the sum of the open invoices' balances (decimal strings).",
        examples=[{"EUR": "1250.00", "JPY": "158000"}],
    )
    holds: list[HoldOut] = Field(
        description="The active holds of the customer and of its invoices, oldest first (GET /v1/holds for all)."
    )

    @classmethod
    def from_rows(
        cls,
        r: Mapping[str, Any],
        open_invoices: Sequence[Mapping[str, Any]],
        balances: Sequence[Mapping[str, Any]],
        holds: Sequence[Mapping[str, Any]] = (),
    ) -> "CustomerDetail":
        """`open_invoices`: up to OPEN_INVOICES_SHOWN + 1 rows (the extra one only says there are more)."""
        shown = open_invoices[:OPEN_INVOICES_SHOWN]
        return cls(
            **cls.fields_of(r),
            open_invoices=OpenInvoices(
                data=[OpenInvoiceOut.from_row(i) for i in shown], has_more=len(open_invoices) > len(shown)
            ),
            balances={b["currency"]: format_amount(b["balance"], b["currency"]) for b in balances},
            holds=[HoldOut.from_row(h) for h in holds],
        )


CustomerList = Page[CustomerOut]
