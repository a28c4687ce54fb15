"""What an invoice's late charges read back as (`InvoiceDetail.charges`): the late fees and interest the
scheduler's stages claimed (LateChargesAssessed totals) and their waiver (LateChargesWaived). The
invoice's `amount_due` and `balance` never include them. `charges_json` writes the model's JSON from
the `charges_*` columns of the invoice's detail row (repository.invoices._GET_INVOICE)."""

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from dunning.clock import isoformat
from dunning.money import format_amount

CHARGES_EXAMPLE: JsonDict = {
    "currency": "EUR",
    "late_fees": "40.00",
    "interest": "8.34",
    "total_claimed": "48.34",
    "waived": False,
    "waived_late_fees": None,
    "waived_interest": None,
    "waived_at": None,
    "waived_by": None,
    "reason": None,
    "last_assessed_at": "2026-03-02T08:00:00Z",
}


class ChargesOut(BaseModel):
    """Late fees and interest claimed on the invoice on top of its amount (never part of `amount_due` or
    `balance`); null when nothing was ever charged."""

    model_config = {"json_schema_extra": {"examples": [CHARGES_EXAMPLE]}}

    currency: str
    late_fees: str = Field(description="The late fees the stages charged, in total (decimal string).")
    interest: str = Field(description="The interest assessed so far, in total (rounded once, decimal string).")
    total_claimed: str = Field(description="late_fees + interest, less what was waived: what the customer owes on top.")
    waived: bool = Field(description="The charges were waived: those claimed are withdrawn, no more are charged.")
    waived_late_fees: str | None = Field(description="The late fees waived.")
    waived_interest: str | None = Field(description="The interest waived.")
    waived_at: datetime | None
    waived_by: str | None
    reason: str | None = Field(description="Why they were waived.")
    last_assessed_at: datetime | None = Field(description="When a stage last charged a fee or interest.")


def charges_json(r: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON of `ChargesOut` for an invoice detail row (None: never charged nor waived)."""
    if not r.get("charged"):
        return None
    cur = r["currency"]
    fees, interest = r["charges_late_fees"], r["charges_interest"]
    waived_fees, waived_interest = r["charges_waived_late_fees"], r["charges_waived_interest"]
    waived = r["charges_waived_at"] is not None
    claimed = fees + interest - ((waived_fees or Decimal(0)) + (waived_interest or Decimal(0)) if waived else 0)
    at = r["charges_last_assessed_at"]
    return {
        "currency": cur,
        "late_fees": format_amount(fees, cur),
        "interest": format_amount(interest, cur),
        "total_claimed": format_amount(max(claimed, Decimal(0)), cur),
        "waived": waived,
        "waived_late_fees": None if waived_fees is None else format_amount(waived_fees, cur),
        "waived_interest": None if waived_interest is None else format_amount(waived_interest, cur),
        "waived_at": _ts(r["charges_waived_at"]),
        "waived_by": r["charges_waived_by"],
        "reason": r["charges_waived_reason"],
        "last_assessed_at": _ts(at),
    }


def _ts(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)
