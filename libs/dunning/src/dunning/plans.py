"""Payment plans' one allocation rule: money paid towards a plan covers its instalments in order.

Both the scheduler (which cancels a covered instalment's reminders and judges a missed one) and
invoice-ingest (which shows each instalment's state) apply this one function, so they never
disagree about which instalment a payment paid.
"""

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import NamedTuple


class InstalmentState(NamedTuple):
    number: int
    due_date: date
    amount: Decimal
    paid: Decimal  # towards this instalment, 0 <= paid <= amount
    covered: bool  # paid in full


def allocate(instalments: Sequence[tuple[int, date, Decimal]], paid_total: Decimal) -> list[InstalmentState]:
    """Spread `paid_total` (paid or credited on the plan's invoices since it was agreed, never below
    zero) over the instalments (number, due date, amount) in number order."""
    left = max(paid_total, Decimal(0))
    states = []
    for number, due, amount in sorted(instalments):
        paid = min(left, amount)
        left -= paid
        states.append(InstalmentState(number, due, amount, paid, paid >= amount))
    return states


def paid_towards(balances_at_plan: Sequence[Decimal], balances_now: Sequence[Decimal]) -> Decimal:
    """What the plan's invoices have been paid since it was agreed: the drop of their balances."""
    return sum((before - now for before, now in zip(balances_at_plan, balances_now, strict=True)), Decimal(0))
