"""Money against a balance: the one rule payments and credit notes share, and amount corrections."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning.money import quantize
from dunning_reconciliation.domain import apply_to_balance, corrected_balance, invoice_status, quantum

D = Decimal


@pytest.mark.parametrize(
    ("balance", "amount", "applied", "remaining", "unapplied", "settled"),
    [
        pytest.param("1000.00", "250.00", "250.00", "750.00", "0.00", False, id="partial"),
        pytest.param("250.00", "250.00", "250.00", "0.00", "0.00", True, id="exact"),
        pytest.param("600.00", "700.00", "600.00", "0.00", "100.00", True, id="above-the-balance"),
        pytest.param("0.00", "50.00", "0", "0.00", "50.00", True, id="nothing-owed"),
        pytest.param("-100.00", "50.00", "0", "-100.00", "50.00", True, id="corrected-below-zero"),
    ],
)
def test_apply_to_balance(balance, amount, applied, remaining, unapplied, settled):
    money = apply_to_balance(D(balance), D(amount))
    assert (money.applied, money.remaining, money.unapplied, money.settled) == (
        D(applied),
        D(remaining),
        D(unapplied),
        settled,
    )


@pytest.mark.parametrize(
    ("balance", "amount_due", "new_amount_due", "expected", "status"),
    [
        pytest.param("600.00", "1000.00", "1200.00", "800.00", "open", id="raised"),
        pytest.param("600.00", "1000.00", "400.00", "0.00", "paid", id="lowered-to-what-was-paid"),
        pytest.param("600.00", "1000.00", "300.00", "-100.00", "paid", id="lowered-below-what-was-paid"),
        pytest.param("0.00", "1000.00", "1100.00", "100.00", "open", id="paid-then-raised"),
    ],
)
def test_corrected_balance(balance, amount_due, new_amount_due, expected, status):
    corrected = corrected_balance(D(balance), D(amount_due), D(new_amount_due))
    assert (corrected, invoice_status(corrected)) == (D(expected), status)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**12), max_value=10**12),
    st.sampled_from(("EUR", "JPY", "KWD", "USD", "ISK")),
)
def test_the_cached_quantum_quantizes_as_the_money_rule(amount, currency):
    """domain.quantum is dunning.money.quantize's quantum made once per currency: same value, same digits."""
    assert str(amount.quantize(quantum(currency))) == str(quantize(amount, currency))
