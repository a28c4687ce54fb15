"""Payment plans, the rules: what a request may ask (the models), the instalments it makes, and how a
plan reads back.

A plan splits the balance of one or several open invoices of one customer, in one currency, into
at most 36 instalments: given one by one (`instalments`: due dates strictly increasing, the first
today or later in the customer's time zone, amounts > 0 in the currency's minor units, adding up to
the balance exactly), or as `count` + `first_due_date` + `interval` (an ISO 8601 duration of years,
months, weeks and days), the balance split evenly with the remainder on the last instalment. How
much of each instalment is paid is `dunning.plans.allocate` of what the plan's invoices have been
paid since it was agreed (the drop of their balances), the rule the scheduler applies too.
"""

import calendar
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dunning.clock import isoformat
from dunning.http import Page, Problem
from dunning.money import MoneyError, format_amount, from_minor, parse_amount, to_minor
from dunning.plans import allocate, paid_towards
from dunning_ingest.stops import IsoText

PLAN_ID = re.compile(r"^pln_[0-9A-Za-z]{10,40}$")
MAX_INSTALMENTS = 36
MAX_INVOICES = 50
PlanStatus = Literal["active", "completed", "broken", "cancelled"]
InstalmentStatus = Literal["paid", "due", "overdue", "missed"]
_INTERVAL = re.compile(r"^P(?:(\d{1,2})Y)?(?:(\d{1,3})M)?(?:(\d{1,3})W)?(?:(\d{1,4})D)?$")
_INTERVAL_DOC = 'An ISO 8601 duration of years, months, weeks and days: "P1M", "P2W", "P14D", "P1M15D".'


# --- requests ------------------------------------------------------------------------------------


class InstalmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    due_date: Annotated[date, IsoText] = Field(description="The day it is due (the customer's calendar).")
    amount: str = Field(description='Decimal string in major units, e.g. "250.00"; never a JSON number.')

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError('must be a decimal string such as "250.00", not a number')
        return value


class PlanTerms(BaseModel):
    """The instalments of a plan: listed, or `count` + `first_due_date` + `interval`."""

    model_config = ConfigDict(extra="forbid")

    instalments: list[InstalmentIn] | None = Field(
        None,
        min_length=1,
        max_length=MAX_INSTALMENTS,
        description="Each instalment's due date and amount; they add up to the invoices' balance exactly.",
    )
    count: int | None = Field(None, ge=1, le=MAX_INSTALMENTS, description="How many instalments (even split).")
    first_due_date: Annotated[date, IsoText] | None = Field(
        None, description="The first instalment's due date (with `count`)."
    )
    interval: str | None = Field(None, max_length=20, description=_INTERVAL_DOC)
    agreed_by: str = Field("api", min_length=1, max_length=200, description="Who agreed the plan with the customer.")


_LISTED: dict[str, Any] = {
    "instalments": [{"due_date": "2026-12-15", "amount": "600.00"}, {"due_date": "2027-01-15", "amount": "650.00"}]
}
_EVEN: dict[str, Any] = {
    "count": 3,
    "first_due_date": "2026-12-15",
    "interval": "P1M",
    "agreed_by": "j.doe@acme.example",
}


class InvoicePlanIn(PlanTerms):
    """A payment plan over one invoice's balance."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_LISTED, _EVEN]})


class CustomerPlanIn(PlanTerms):
    """A payment plan over several open invoices of one customer, in one currency."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cus_01JDQ4ZK3M8X2V6T9R5W7Y1B0C",
                    "invoice_ids": ["inv_01JDQ5A8N2R4T6V8X0Z2B4D6F8", "inv_01JDQ5B3P5S7U9W1Y3A5C7E9G1"],
                    **_EVEN,
                }
            ]
        },
    )

    customer_id: str = Field(min_length=1, max_length=64, description="The customer's id (`cus_...`).")
    invoice_ids: list[str] = Field(
        min_length=1, max_length=MAX_INVOICES, description="Open invoices of that customer, in one currency."
    )


# --- responses -----------------------------------------------------------------------------------


class PlanInvoiceOut(BaseModel):
    invoice_id: str
    external_id: str
    balance: str = Field(description="The invoice's balance when the plan was agreed.")
    current_balance: str


class InstalmentOut(BaseModel):
    number: int
    due_date: date
    amount: str
    paid: str = Field(description="Paid towards this instalment: payments cover instalments in order.")
    status: InstalmentStatus = Field(
        description="`paid` in full; `due` (not yet past its due date); `overdue` (past it, unpaid, not yet "
        "judged); `missed` (the scheduler found it unpaid past its grace: the plan is broken)."
    )


class PlanOut(BaseModel):
    plan_id: str
    customer_id: str
    customer_external_id: str
    currency: str
    total: str = Field(description="The invoices' balance when the plan was agreed = the sum of the instalments.")
    paid: str = Field(description="Paid towards the plan since it was agreed.")
    remaining: str
    invoices: list[PlanInvoiceOut]
    instalments: list[InstalmentOut]
    status: PlanStatus = Field(
        description="`active` while honoured; `completed` (every instalment paid), `broken` (an instalment "
        "missed: dunning resumes on the invoices' whole balances), `cancelled` (DELETE)."
    )
    agreed_by: str
    acknowledged_at: datetime = Field(
        description="When the plan was acknowledged: no reminder scheduled later is sent."
    )
    missed_instalment: int | None
    ended_at: datetime | None
    cancelled_by: str | None
    cancel_reason: str | None


PlanList = Page[PlanOut]


# --- the rules -----------------------------------------------------------------------------------


def local_today(timezone: str, now: datetime) -> date:
    """The customer's calendar day at `now` (UTC)."""
    return now.astimezone(ZoneInfo(timezone)).date()


def _add_months(day: date, months: int) -> date:
    """`day` plus whole months, the day of month clamped to the month's last (31 Jan + 1 month = 28 Feb)."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return day.replace(year=year, month=month + 1, day=min(day.day, calendar.monthrange(year, month + 1)[1]))


def _interval(text: str) -> tuple[int, int]:
    """(months, days) of an ISO 8601 duration, or a 422 naming `interval`."""
    m = _INTERVAL.fullmatch(text)
    if m is None or not any(m.groups()):
        raise Problem.invalid("interval", _INTERVAL_DOC.replace("An", "must be an", 1), "invalid_interval")
    years, months, weeks, days = (int(g or 0) for g in m.groups())
    if years * 12 + months + weeks * 7 + days == 0:
        raise Problem.invalid("interval", "must be longer than zero", "invalid_interval")
    return years * 12 + months, weeks * 7 + days


def _even(terms: PlanTerms, total: Decimal, currency: str, today: date) -> list[tuple[int, date, Decimal]]:
    missing = [f for f in ("count", "first_due_date", "interval") if getattr(terms, f) is None]
    if missing:
        raise Problem.invalid(
            missing[0], "required: give `instalments`, or `count`, `first_due_date` and `interval`", "missing"
        )
    count, first = terms.count, terms.first_due_date
    assert count is not None and first is not None and terms.interval is not None
    months, days = _interval(terms.interval)
    if first < today:
        raise Problem.invalid("first_due_date", f"must be today ({today}) or later", "in_the_past")
    minor = to_minor(total, currency)
    each = minor // count
    if each == 0:
        raise Problem.invalid("count", f"{format_amount(total, currency)} cannot be split in {count}", "too_many")
    amounts = [each] * (count - 1) + [minor - each * (count - 1)]
    try:
        dues = [_add_months(first, k * months) + timedelta(days=k * days) for k in range(count)]
    except (ValueError, OverflowError):
        raise Problem.invalid("interval", "the instalments would fall due beyond the calendar", "too_long") from None
    return [(n, due, from_minor(a, currency)) for n, (due, a) in enumerate(zip(dues, amounts, strict=True), 1)]


def _listed(instalments: Sequence[InstalmentIn], currency: str, today: date) -> list[tuple[int, date, Decimal]]:
    out: list[tuple[int, date, Decimal]] = []
    for i, item in enumerate(instalments):
        try:
            amount = parse_amount(item.amount, currency)
        except MoneyError as exc:
            raise Problem.invalid(f"instalments.{i}.amount", str(exc), "invalid_amount") from None
        if i == 0 and item.due_date < today:
            raise Problem.invalid("instalments.0.due_date", f"must be today ({today}) or later", "in_the_past")
        if out and item.due_date <= out[-1][1]:
            raise Problem.invalid(
                f"instalments.{i}.due_date", f"must be after the previous instalment's ({out[-1][1]})", "not_increasing"
            )
        out.append((i + 1, item.due_date, amount))
    return out


def instalments_of(terms: PlanTerms, total: Decimal, currency: str, today: date) -> list[tuple[int, date, Decimal]]:
    """(number, due date, amount) of the plan `terms` ask for over `total`; a 422 naming the field
    that cannot be met. `today`: the customer's calendar day."""
    if terms.instalments is None:
        return _even(terms, total, currency, today)
    if given := [f for f in ("count", "first_due_date", "interval") if getattr(terms, f) is not None]:
        raise Problem.invalid(given[0], "give either `instalments` or `count`/`first_due_date`/`interval`", "either")
    out = _listed(terms.instalments, currency, today)
    summed = sum((a for _, _, a in out), Decimal(0))
    if summed != total:
        raise Problem.invalid(
            "instalments",
            f"add up to {format_amount(summed, currency)}; the invoices' balance is {format_amount(total, currency)}",
            "sum_mismatch",
        )
    return out


# --- reading back --------------------------------------------------------------------------------


def plan_view(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A plan (repository.plans' select) as the API shows it (PlanOut), each instalment's state
    computed from the invoices' balances now."""
    currency = row["currency"]
    invoices, instalments = row["invoices"] or [], row["instalments"] or []
    paid = paid_towards([Decimal(i["balance"]) for i in invoices], [Decimal(i["current_balance"]) for i in invoices])
    states = allocate(
        [(n["number"], date.fromisoformat(n["due_date"]), Decimal(n["amount"])) for n in instalments], paid
    )
    today = local_today(row["customer_timezone"], now)

    def status(s: Any) -> str:
        if s.covered:
            return "paid"
        if s.number == row["missed_instalment"]:
            return "missed"
        return "overdue" if s.due_date < today else "due"

    money = lambda v: format_amount(Decimal(v), currency)  # noqa: E731
    covered = sum((s.paid for s in states), Decimal(0))
    return {
        "plan_id": row["id"],
        "customer_id": row["customer_id"],
        "customer_external_id": row["customer_external_id"],
        "currency": currency,
        "total": money(row["total"]),
        "paid": money(covered),
        "remaining": money(row["total"] - covered),
        "invoices": [
            {
                "invoice_id": i["invoice_id"],
                "external_id": i["external_id"],
                "balance": money(i["balance"]),
                "current_balance": money(i["current_balance"]),
            }
            for i in invoices
        ],
        "instalments": [
            {
                "number": s.number,
                "due_date": s.due_date.isoformat(),
                "amount": money(s.amount),
                "paid": money(s.paid),
                "status": status(s),
            }
            for s in states
        ],
        "status": row["status"],
        "agreed_by": row["agreed_by"],
        "acknowledged_at": isoformat(row["acknowledged_at"]),
        "missed_instalment": row["missed_instalment"],
        "ended_at": isoformat(row["ended_at"]) if row["ended_at"] else None,
        "cancelled_by": row["ended_by"],
        "cancel_reason": row["end_reason"],
    }
