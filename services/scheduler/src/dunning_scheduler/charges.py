"""Late fees and interest, pure (no I/O): the firing loop assesses with it, the charges API projects.

Interest accrues per day from the day after the due date through the assessment day (inclusive), on
that day's overdue balance (amount due minus the money applied up to and including that day: money
acknowledged on day D lowers the balance from D on), at the rate in force that day: the policy's
`annual_rate`, or a reference rate plus `margin` (fixing `half_year`: the reference in force on
1 January / 1 July of the day's half-year, EU Late Payment Directive 2011/7/EU art. 2(12); `daily`:
the reference in force that day). Rates are percent per annum. Day counts: ACT/365F (days/365),
ACT/360 (days/360), ACT/ACT-ISDA (each day / the length of its own year).

Days with the same balance, rate and divisor form a period; each period's amount is exact (Decimal,
34 digits), the total is rounded ROUND_HALF_UP to the currency's minor unit once. An assessment's
interest is the new rounded total minus the previous one, so the sum of assessments is the total.
"""

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Protocol

from dunning.contracts import InterestPeriod
from dunning.money import exponent

DAY_COUNTS = ("ACT/365F", "ACT/360", "ACT/ACT-ISDA")
FIXINGS = ("half_year", "daily")
_EXACT = Context(prec=34)
_HUNDRED = Decimal(100)


class Terms(Protocol):
    """What accrual reads of a policy's interest terms (policy.InterestTerms has these fields)."""

    @property
    def annual_rate(self) -> Decimal | None: ...
    @property
    def reference(self) -> str | None: ...
    @property
    def margin(self) -> Decimal: ...
    @property
    def fixing(self) -> str: ...
    @property
    def day_count(self) -> str: ...


@dataclass(frozen=True)
class FixedTerms:
    """Interest terms built by hand (tests, the API's projection): the shape of policy.InterestTerms."""

    annual_rate: Decimal | None = None
    reference: str | None = None
    margin: Decimal = Decimal(0)
    fixing: str = "half_year"
    day_count: str = "ACT/365F"


class UnknownReference(LookupError):
    """The terms name a reference rate with no value in force on a day that accrues."""


RateHistory = Sequence[tuple[date, Decimal]]  # (valid_from, percent), oldest first


def rate_in_force(history: RateHistory, day: date) -> Decimal | None:
    """The rate whose valid_from is the latest on or before `day` (None: none yet)."""
    found = None
    for valid_from, rate in history:
        if valid_from > day:
            break
        found = rate
    return found


def fixing_day(day: date, fixing: str) -> date:
    """The day whose reference rate applies to `day`: 1 Jan / 1 Jul of its half-year, or itself."""
    if fixing == "half_year":
        return date(day.year, 1 if day.month <= 6 else 7, 1)
    return day


def annual_rate_on(terms: Terms, day: date, history: RateHistory) -> Decimal:
    """The rate (percent p.a.) in force on `day`; raises UnknownReference without a reference value."""
    if terms.annual_rate is not None:
        return terms.annual_rate
    reference = rate_in_force(history, fixing_day(day, terms.fixing))
    if reference is None:
        raise UnknownReference(f"no {terms.reference} rate in force on {fixing_day(day, terms.fixing)}")
    return reference + terms.margin


def plain(value: Decimal) -> Decimal:
    """A decimal without trailing zeros or exponent: 4.2500 -> 4.25, 10.0000 -> 10."""
    return Decimal(format(value.normalize(), "f"))


def divisor(day_count: str, day: date) -> int:
    if day_count == "ACT/360":
        return 360
    if day_count == "ACT/ACT-ISDA":
        return 366 if calendar.isleap(day.year) else 365
    if day_count == "ACT/365F":
        return 365
    raise ValueError(f"unknown day count {day_count!r}")


def balance_on(amount_due: Decimal, ledger: Iterable[tuple[date, Decimal]], day: date) -> Decimal:
    """The overdue balance on `day`: amount due minus money applied on or before it (never below 0)."""
    applied = sum((amount for on, amount in ledger if on <= day), Decimal(0))
    return max(amount_due - applied, Decimal(0))


def round_half_up(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Accrual:
    start: date | None  # the first day accrued (None: nothing accrues yet)
    end: date | None  # the last day accrued, inclusive
    periods: tuple[InterestPeriod, ...]
    exact: Decimal  # the sum of the periods, unrounded
    total: Decimal  # rounded half-up to the currency's minor unit


def accrue(
    *,
    amount_due: Decimal,
    currency: str,
    due_date: date,
    through: date,
    terms: Terms,
    ledger: Sequence[tuple[date, Decimal]] = (),
    rates: RateHistory = (),
) -> Accrual:
    """Interest on the overdue balance from due_date + 1 through `through` (inclusive).
    `ledger`: (local day acknowledged, amount) of the money applied; `rates`: the reference's history."""
    start = due_date + timedelta(days=1)
    if through < start:
        return Accrual(None, None, (), Decimal(0), round_half_up(Decimal(0), currency))
    ledger = sorted(ledger)
    runs: list[list] = []  # [start, end, days, principal, rate, divisor, year]
    day = start
    while day <= through:
        principal = balance_on(amount_due, ledger, day)
        rate = annual_rate_on(terms, day, rates)
        div = divisor(terms.day_count, day)
        key = (principal, rate, div, day.year if terms.day_count == "ACT/ACT-ISDA" else 0)
        if runs and runs[-1][3:] == list(key) and runs[-1][1] + timedelta(days=1) == day:
            runs[-1][1] = day
            runs[-1][2] += 1
        else:
            runs.append([day, day, 1, *key])
        day += timedelta(days=1)
    periods = tuple(
        InterestPeriod(
            s, e, n, round_half_up(p, currency), r, _EXACT.divide(_EXACT.multiply(p * r, Decimal(n)), _HUNDRED * d)
        )
        for s, e, n, p, r, d, _ in runs
        if p > 0
    )
    exact = sum((p.amount for p in periods), Decimal(0))
    return Accrual(start, through, periods, exact, round_half_up(exact, currency))


def late_fee(fees: dict[str, Decimal], currency: str, *, already_charged: bool, waived: bool) -> Decimal:
    """The stage's fixed fee in the invoice's currency: once per (invoice, stage), never when waived."""
    if waived or already_charged:
        return Decimal(0)
    return fees.get(currency, Decimal(0))


@dataclass(frozen=True)
class Assessment:
    late_fee: Decimal
    interest: Decimal  # this assessment's share: the new rounded total minus the previous one
    total_late_fees: Decimal
    total_interest: Decimal
    accrual: Accrual | None


def assess(
    *,
    currency: str,
    fee: Decimal,
    accrual: Accrual | None,
    previous_fees: Decimal,
    previous_interest: Decimal,
) -> Assessment:
    """Combine a stage's fee and the accrual to date with what the invoice was charged before."""
    zero = round_half_up(Decimal(0), currency)
    fee = round_half_up(fee, currency)
    total_interest = previous_interest if accrual is None else max(accrual.total, previous_interest)
    return Assessment(
        fee,
        round_half_up(total_interest - previous_interest, currency) if accrual is not None else zero,
        round_half_up(previous_fees + fee, currency),
        round_half_up(total_interest, currency),
        accrual,
    )


def charges_field(
    assessment: Assessment, currency: str, amount_due_balance: Decimal, terms: Terms | None, rate: Decimal | None
) -> dict[str, str]:
    """StageEscalated.charges / NoticeItem.charges: decimal strings, keys not applicable left out."""
    out = {
        "currency": currency,
        "late_fee": str(assessment.late_fee),
        "interest": str(assessment.interest),
        "total_late_fees": str(assessment.total_late_fees),
        "total_interest": str(assessment.total_interest),
        "total_due": str(
            round_half_up(amount_due_balance + assessment.total_late_fees + assessment.total_interest, currency)
        ),
    }
    accrual = assessment.accrual
    if accrual is not None and terms is not None:
        if accrual.end is not None:
            out["interest_to"] = accrual.end.isoformat()
        out["day_count"] = terms.day_count
        if rate is not None:
            out["annual_rate"] = str(rate)
    return out
