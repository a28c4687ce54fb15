"""What reminders and consolidated notices quote besides the invoice, formatted for the customer's
locale (rendering.py renders them): the late fees and interest a stage charges
(StageEscalated.charges, NoticeItem.charges), the next stage's date (a deadline, never a fixed
"within 7 days"), and a notice's invoices with totals per currency. Garbled input raises ValueError
(the renderer makes it a RenderError: retrying will not help)."""

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import babel
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

CODE_FORMAT = "¤¤\xa0#,##0.00"  # "EUR 4,200.00", "JPY 310": the ISO code, the currency's own decimals
_HTTP_URL = re.compile(r"^https?://\S+$")
OVERDUE = "overdue"  # the stage shown for a notice's invoices that are listed without a stage of their own


def _money(value: str | None, currency: str, loc: babel.Locale) -> str | None:
    return None if value in (None, "") else format_currency(_decimal(value), currency, locale=loc)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc


def long_date(day: date, loc: babel.Locale) -> str:
    return format_date(day, format="long", locale=loc)


def code_amount(amount: Decimal, currency: str, loc: babel.Locale) -> str:
    """`EUR 4,200.00` (the grouping and decimal marks of the locale)."""
    return format_currency(amount, currency, format=CODE_FORMAT, locale=loc, currency_digits=True)


def charges_of(charges: dict[str, str] | None, currency: str, loc: babel.Locale) -> dict[str, Any] | None:
    """The charges a reminder quotes, formatted; None when the stage charges nothing. `fees` and
    `interest` are the totals claimed on the invoice so far (this stage's when no total is given),
    None when zero; `total_due` the balance with them."""
    if not charges:
        return None
    money = charges.get("currency") or currency
    fees = charges.get("total_late_fees") or charges.get("late_fee")
    interest = charges.get("total_interest") or charges.get("interest")
    rate = charges.get("annual_rate")
    to = charges.get("interest_to")
    return {
        "late_fee": _money(charges.get("late_fee"), money, loc),
        "fees": _money(fees, money, loc) if fees and _decimal(fees) != 0 else None,
        "interest": _money(interest, money, loc) if interest and _decimal(interest) != 0 else None,
        "annual_rate": f"{format_decimal(_decimal(rate), format='#,##0.00##', locale=loc)}\xa0%" if rate else None,
        "day_count": charges.get("day_count") or None,
        "interest_to": long_date(date.fromisoformat(to), loc) if to else None,
        "total_due": _money(charges.get("total_due"), money, loc),
    }


def deadline_of(context: dict[str, str], loc: babel.Locale) -> dict[str, str] | None:
    """StageEscalated.context of kind "stage": the next stage and its local date, the date the
    reminder asks payment by; None when no next stage is known."""
    if context.get("kind") != "stage" or not context.get("next_stage_on"):
        return None
    on = date.fromisoformat(context["next_stage_on"])
    return {"stage": str(context.get("next_stage") or ""), "date": long_date(on, loc)}


def one_per_invoice(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The notice's items, one per invoice, in the order invoices first come: two stages of one invoice
    due in the same window (both fire in the notice) show as its most escalated one, counted once."""
    chosen: dict[str, dict[str, Any]] = {}
    for item in items:
        held = chosen.get(item["invoice_id"])
        if held is None or (item.get("sequence") is not None and (held.get("sequence") or -1) < item["sequence"]):
            chosen[item["invoice_id"]] = item
    return list(chosen.values())


def notice_context(data: dict[str, Any], loc: babel.Locale, today: date, sender_name: str) -> dict[str, Any]:
    """A NoticeComposed payload (its items cut to the ones this attempt lists) as the `consolidated`
    template reads it: every invoice with its stage, dates, balance, link and charges, then the
    totals per currency (balances plus the charges claimed), in the order the currencies first come."""
    invoices = []
    totals: dict[str, Decimal] = {}
    for item in one_per_invoice(data["items"]):
        invoice = item["invoice"]
        currency = invoice["currency"]
        balance, amount_due = _decimal(invoice["balance"]), _decimal(invoice["amount_due"])
        due = date.fromisoformat(invoice["due_date"])
        charges = item.get("charges") or None
        owed = _decimal(charges["total_due"]) if charges and charges.get("total_due") else balance
        totals[currency] = totals.get(currency, Decimal(0)) + owed
        url = invoice.get("payment_url")
        invoices.append(
            {
                "number": invoice["number"],
                "stage": (item.get("stage") or OVERDUE).replace("_", " "),
                "currency": currency,
                "balance": format_currency(balance, currency, locale=loc),
                "amount_due": format_currency(amount_due, currency, locale=loc),
                "partially_paid": balance != amount_due,
                "issue_date": long_date(date.fromisoformat(invoice["issue_date"]), loc),
                "due_date": long_date(due, loc),
                "days_overdue": max((today - due).days, 0),
                "payment_url": url if isinstance(url, str) and _HTTP_URL.match(url) else None,
                "charges": charges_of(charges, currency, loc),
                "total_due": format_currency(owed, currency, locale=loc),
            }
        )
    return {
        "sender_name": sender_name,
        "customer": {"name": data["customer"]["name"], "email": data["customer"].get("email")},
        "invoices": invoices,
        "count": len(invoices),
        "with_charges": any(i["charges"] for i in invoices),
        "totals": [
            {"currency": c, "amount": format_currency(v, c, locale=loc), "code": code_amount(v, c, loc)}
            for c, v in totals.items()
        ],
    }
