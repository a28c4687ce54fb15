"""The records reconciliation works with: a payment as received, the keys that find its invoice,
and the outcome of receiving it. Small and immutable; the rules live in reconcile.py."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from dunning.ids import new_id

# Payment statuses as stored. The API shows 'unmatched' as 'pending_match' (see api_status).
APPLIED = "applied"
UNMATCHED = "unmatched"
REJECTED_CURRENCY_MISMATCH = "rejected_currency_mismatch"
PENDING_MATCH = "pending_match"


def api_status(status: str) -> str:
    return PENDING_MATCH if status == UNMATCHED else status


def _unique(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and value.strip():
            seen.setdefault(value.strip(), None)
    return tuple(seen)


@dataclass(frozen=True)
class MatchKeys:
    """How a payment names its invoice, strongest first: our id, the accounting id(s), the number(s)."""

    invoice_id: str | None = None
    external_ids: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()

    @classmethod
    def of(cls, invoice_id: str | None = None, external_ids=(), numbers=()) -> "MatchKeys":
        invoice = invoice_id.strip() if isinstance(invoice_id, str) and invoice_id.strip() else None
        return cls(invoice, _unique(list(external_ids)), _unique(list(numbers)))

    def lock_names(self, tenant_id: str) -> list[str]:
        """Advisory-lock names: a payment and an invoice that share a key serialise on it."""
        names = [f"i:{self.invoice_id}"] if self.invoice_id else []
        names += [f"e:{v}" for v in self.external_ids] + [f"n:{v}" for v in self.numbers]
        return sorted(f"reconciliation\x1f{tenant_id}\x1f{n}" for n in names)


def invoice_status(balance: Decimal) -> str:
    """An invoice's status for what is left to pay: 'paid' once nothing is."""
    return "paid" if balance <= 0 else "open"


def invoice_keys(invoice_id: str, external_id: str, number: str) -> MatchKeys:
    return MatchKeys.of(invoice_id, (external_id,), (number,))


@dataclass(frozen=True)
class IncomingPayment:
    tenant_id: str
    source: str  # stripe | api
    source_reference: str  # Stripe event id, or the accounting system's payment reference
    currency: str
    amount: Decimal  # quantized to the currency's ISO 4217 exponent
    received_at: datetime  # UTC
    keys: MatchKeys
    stripe_object_id: str | None = None
    fingerprint: str | None = None
    payment_id: str = field(default_factory=lambda: new_id("pay"))
    # Read inside the watermark's fence by the transaction that acknowledges the payment (the 2xx
    # follows its commit); a late match carries the original time.
    acknowledged_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    status: str
    payment_id: str
    invoice_id: str | None = None
    settled: bool = False
