"""When a money event reopens a settled invoice (reopening.reopens), one case per row."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dunning_scheduler.reopening import Money, reopens

TENANT = "ten_a"
HELD = {"tenant_id": TENANT, "currency": "EUR", "settled": True, "status": "open", "balance_version": 1}


def money(*, settled: bool = False, version: int | None = 2, currency: str = "EUR") -> Money:
    return Money("pay_1", "rev_1", currency, Decimal("-10.00"), Decimal("10.00"), settled,
                 datetime(2026, 12, 1, tzinfo=UTC), version, "invoice_settled", "rev_1")  # fmt: skip


@pytest.mark.parametrize(
    ("held", "event", "expected"),
    [
        pytest.param(HELD, money(), True, id="newer-not-settled-of-a-settled-invoice"),
        pytest.param({**HELD, "balance_version": None}, money(), True, id="first-versioned-event"),
        pytest.param(HELD, money(version=1), False, id="not-newer"),
        pytest.param(HELD, money(settled=True), False, id="still-settled"),
        pytest.param({**HELD, "settled": False}, money(), False, id="open-invoice-only-moves-its-balance"),
        pytest.param({**HELD, "status": "void"}, money(), False, id="void-stays-closed"),
        pytest.param({**HELD, "status": "written_off"}, money(), False, id="written-off-stays-closed"),
        pytest.param({**HELD, "tenant_id": "ten_b"}, money(), False, id="another-tenants"),
        pytest.param(HELD, money(currency="USD"), False, id="another-currency"),
        pytest.param(None, money(), False, id="unknown-invoice"),
        pytest.param(HELD, money(version=None), False, id="no-version-never-unsettles"),
    ],
)
def test_reopens(held, event, expected):
    assert reopens(held, TENANT, event) is expected
