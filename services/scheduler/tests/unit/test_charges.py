"""Interest and late fees (charges.py), every expected figure computed by hand in the comment above it."""

from datetime import date
from decimal import Decimal

import pytest

from dunning_scheduler.charges import (
    FixedTerms,
    UnknownReference,
    accrue,
    assess,
    balance_on,
    fixing_day,
    late_fee,
    rate_in_force,
)

D = Decimal
ECB = [
    (date(2024, 6, 12), D("4.25")),
    (date(2024, 9, 18), D("3.65")),
    (date(2024, 10, 23), D("3.40")),
    (date(2024, 12, 18), D("3.15")),
    (date(2025, 2, 5), D("2.90")),
]


def test_hand_case_no_payment():
    # 2026-02-01 .. 2026-03-02 = 28 + 2 = 30 days; 1000 * 10.15 % * 30 / 365 = 8.34246... -> 8.34
    a = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 3, 2),
        terms=FixedTerms(annual_rate=D("10.15")),
    )  # fmt: skip
    assert a.total == D("8.34")
    assert (a.start, a.end) == (date(2026, 2, 1), date(2026, 3, 2))
    assert [(p.days, p.principal) for p in a.periods] == [(30, D("1000.00"))]


def test_hand_case_partial_payment_lowers_the_balance_from_its_day():
    # 400 acknowledged 2026-02-15: Feb 1..14 = 14 days on 1000 (3.89315...), Feb 15..Mar 2 = 16 days
    # on 600 (2.66958...): 6.56273... -> 6.56
    a = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 3, 2),
        terms=FixedTerms(annual_rate=D("10.15")), ledger=[(date(2026, 2, 15), D("400.00"))],
    )  # fmt: skip
    assert a.total == D("6.56")
    assert [(p.start, p.end, p.days, p.principal) for p in a.periods] == [
        (date(2026, 2, 1), date(2026, 2, 14), 14, D("1000.00")),
        (date(2026, 2, 15), date(2026, 3, 2), 16, D("600.00")),
    ]


def test_half_year_fixing_takes_the_rate_of_1_january_and_1_july():
    # due 2024-12-20, through 2025-01-09, reference + 8:
    # Dec 21..31 = 11 days at 4.25 + 8 = 12.25 % (in force 1 July 2024): 1000 * .1225 * 11 / 365 = 3.69178...
    # Jan 1..9 = 9 days at 3.15 + 8 = 11.15 % (in force 1 January 2025): 1000 * .1115 * 9 / 365 = 2.74931...
    # total 6.44109... -> 6.44
    terms = FixedTerms(reference="ecb_main_refinancing", margin=D("8.00"), fixing="half_year")
    a = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2024, 12, 20), through=date(2025, 1, 9),
        terms=terms, rates=ECB,
    )  # fmt: skip
    assert [(p.days, p.annual_rate) for p in a.periods] == [(11, D("12.25")), (9, D("11.15"))]
    assert a.total == D("6.44")
    # daily fixing: 3.15 in force since 2024-12-18 every day: 1000 * .1115 * 20 / 365 = 6.10958... -> 6.11
    daily = FixedTerms(reference="ecb_main_refinancing", margin=D("8.00"), fixing="daily")
    b = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2024, 12, 20), through=date(2025, 1, 9),
        terms=daily, rates=ECB,
    )  # fmt: skip
    assert b.total == D("6.11")


def test_act_act_isda_across_a_year_end():
    # 10 %, due 2023-12-15 through 2024-01-14: 16 days of 2023 / 365 = 4.38356..., 14 days of 2024 / 366
    # = 3.82513...: 8.20869... -> 8.21 (ACT/365F would say 30/365 -> 8.22)
    a = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2023, 12, 15), through=date(2024, 1, 14),
        terms=FixedTerms(annual_rate=D("10"), day_count="ACT/ACT-ISDA"),
    )  # fmt: skip
    assert [(p.days, p.start.year) for p in a.periods] == [(16, 2023), (14, 2024)]
    assert a.total == D("8.21")
    f = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2023, 12, 15), through=date(2024, 1, 14),
        terms=FixedTerms(annual_rate=D("10"), day_count="ACT/365F"),
    )  # fmt: skip
    assert f.total == D("8.22")


def test_act_360_and_rounding_half_up_once():
    # 1000 * 9 % * 30 / 360 = 7.50 exactly
    a = accrue(
        amount_due=D("1000.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 3, 2),
        terms=FixedTerms(annual_rate=D("9"), day_count="ACT/360"),
    )  # fmt: skip
    assert a.total == D("7.50")
    # 100 * 1.825 % * 1 / 365 = 0.005 exactly: half-up 0.01 (half-even would say 0.00)
    b = accrue(
        amount_due=D("100.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 2, 1),
        terms=FixedTerms(annual_rate=D("1.825")),
    )  # fmt: skip
    assert b.exact == D("0.005") and b.total == D("0.01")
    # JPY has no minor unit: 100000 * 10 % * 30 / 365 = 821.917... -> 822
    c = accrue(
        amount_due=D("100000"), currency="JPY", due_date=date(2026, 1, 31), through=date(2026, 3, 2),
        terms=FixedTerms(annual_rate=D("10")),
    )  # fmt: skip
    assert c.total == D("822")


def test_nothing_accrues_on_or_before_the_due_date_or_once_paid():
    terms = FixedTerms(annual_rate=D("10"))
    a = accrue(
        amount_due=D("50.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 1, 31), terms=terms
    )
    assert a.total == D("0.00") and a.periods == () and a.start is None
    paid = accrue(
        amount_due=D("50.00"), currency="EUR", due_date=date(2026, 1, 31), through=date(2026, 3, 2), terms=terms,
        ledger=[(date(2026, 2, 1), D("50.00"))],
    )  # fmt: skip
    assert paid.total == D("0.00")
    assert balance_on(D("50"), [(date(2026, 2, 1), D("80"))], date(2026, 2, 2)) == 0


def test_unknown_reference_and_rate_lookup():
    with pytest.raises(UnknownReference):
        accrue(
            amount_due=D("10.00"), currency="EUR", due_date=date(2020, 1, 1), through=date(2020, 1, 3),
            terms=FixedTerms(reference="nope", margin=D(8)), rates=[],
        )  # fmt: skip
    assert rate_in_force(ECB, date(2024, 9, 17)) == D("4.25")
    assert rate_in_force(ECB, date(2024, 9, 18)) == D("3.65")
    assert rate_in_force(ECB, date(2020, 1, 1)) is None
    assert fixing_day(date(2025, 6, 30), "half_year") == date(2025, 1, 1)
    assert fixing_day(date(2025, 7, 1), "half_year") == date(2025, 7, 1)


def test_successive_assessments_add_up_to_the_rounded_total():
    terms = FixedTerms(annual_rate=D("10.15"))
    kw = dict(amount_due=D("1000.00"), currency="EUR", due_date=date(2026, 1, 31), terms=terms)
    # Feb 1..15 = 15 days: 4.17123... -> 4.17; then the hand case's 8.34 in all: 4.17 more
    first = assess(currency="EUR", fee=D("40"), accrual=accrue(through=date(2026, 2, 15), **kw),
                   previous_fees=D(0), previous_interest=D(0))  # fmt: skip
    assert (first.late_fee, first.interest, first.total_late_fees, first.total_interest) == (
        D("40.00"), D("4.17"), D("40.00"), D("4.17"))  # fmt: skip
    second = assess(currency="EUR", fee=D(0), accrual=accrue(through=date(2026, 3, 2), **kw),
                    previous_fees=first.total_late_fees, previous_interest=first.total_interest)  # fmt: skip
    assert (second.interest, second.total_interest, second.total_late_fees) == (D("4.17"), D("8.34"), D("40.00"))


def test_fee_once_per_stage_and_never_when_waived():
    fees = {"EUR": D("40.00"), "GBP": D("40.00")}
    assert late_fee(fees, "EUR", already_charged=False, waived=False) == D("40.00")
    assert late_fee(fees, "EUR", already_charged=True, waived=False) == 0
    assert late_fee(fees, "EUR", already_charged=False, waived=True) == 0
    assert late_fee(fees, "USD", already_charged=False, waived=False) == 0
