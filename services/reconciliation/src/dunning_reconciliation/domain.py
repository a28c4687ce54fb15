"""The records reconciliation works with: a payment as received (with what a bank line or processor
tells about its payer), the keys that find its invoice, an allocation of its money to an invoice,
the outcomes of receiving, allocating and reversing it, and the arithmetic of money against a
balance (payments and credit notes share it). Small and immutable; the rules live in
allocations.py (money meets a balance), money.py (reversals, pending money), credits.py (customer
credit), reconcile.py (payments that name their invoice) and credit_notes.py."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from dunning.ids import new_id
from dunning.money import exponent

# Payment statuses as stored. The API shows 'unmatched' as 'pending_match' (see api_status).
APPLIED = "applied"  # wholly allocated (or its excess credited to the customer)
PARTIALLY_ALLOCATED = "partially_allocated"  # some of its money still unallocated
UNMATCHED = "unmatched"  # in the queue: its invoice unknown yet, or no confident match
PROCESSING = "processing"  # a debit not yet settled: nothing applied
FAILED = "failed"  # a debit that never settled
REVERSED = "reversed"  # all of it taken back (refund, lost chargeback, failed debit)
REJECTED_CURRENCY_MISMATCH = "rejected_currency_mismatch"
INVOICE_CLOSED = "invoice_closed"  # its invoice is void or written off: recorded, never applied
PENDING_MATCH = "pending_match"

# Invoice statuses. A void or written-off invoice takes no more money (CLOSED).
OPEN, PAID, VOID, WRITTEN_OFF = "open", "paid", "void", "written_off"
CLOSED = frozenset({VOID, WRITTEN_OFF})


@lru_cache(maxsize=64)
def quantum(currency: str) -> Decimal:
    """The currency's smallest unit (0.01 for EUR): `amount.quantize(quantum(c))` is
    `dunning.money.quantize(amount, c)` with the quantum made once per currency (a statement's
    allocations quantize some five times each; tests/unit/test_domain.py holds the two equal)."""
    return Decimal(1).scaleb(-exponent(currency))


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
    return PAID if balance <= 0 else OPEN


@dataclass(frozen=True)
class Applied:
    """Money (a payment, a credit note) against a balance: what is applied, left owed, and kept over."""

    applied: Decimal
    remaining: Decimal
    unapplied: Decimal

    @property
    def settled(self) -> bool:
        return self.remaining <= 0


def apply_to_balance(balance: Decimal, amount: Decimal) -> Applied:
    """At most the balance is applied (never below zero); the surplus stays unapplied."""
    applied = max(min(amount, balance), Decimal(0))
    return Applied(applied, balance - applied, amount - applied)


def corrected_balance(balance: Decimal, amount_due: Decimal, new_amount_due: Decimal) -> Decimal:
    """An amount correction moves the balance by the difference: what was applied stays applied (a
    balance at or below zero is settled; below zero, more was applied than is now due)."""
    return balance + (new_amount_due - amount_due)


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
    # Issue 11: what a bank line or a processor tells about the payer (matching reads them).
    payer_name: str | None = None
    payer_account: str | None = None  # IBAN, normalised: upper case, no spaces
    remittance: str | None = None
    creditor_reference: str | None = None  # ISO 11649 RF reference, normalised
    statement_id: str | None = None
    customer_id: str | None = None
    # Read inside the watermark's fence by the transaction that acknowledges the payment (the 2xx
    # follows its commit); a late match carries the original time.
    acknowledged_at: datetime | None = None


@dataclass(frozen=True)
class Allocation:
    """Money of a payment to apply to one invoice, with the rule that chose it and why, in words."""

    invoice_id: str
    amount: Decimal  # > 0; allocate() caps it at the invoice's open balance
    rule: str  # metadata | reference | creditor_reference | payer_account_amount | customer_amount
    # | customer_sum | manual | late_match | api | legacy
    reason: str  # "INV-1001 and INV-1004 named in the remittance"


@dataclass(frozen=True)
class PaymentRef:
    """How a later event names a payment: our id, its (source, source_reference), or Stripe's object."""

    payment_id: str | None = None
    source: str | None = None
    source_reference: str | None = None
    stripe_object_id: str | None = None


@dataclass(frozen=True)
class AllocationResult:
    """What allocate() did: the payment's status, the allocations written, and where the rest went."""

    status: str
    payment_id: str
    allocation_ids: tuple[str, ...] = ()
    invoice_ids: tuple[str, ...] = ()
    allocated: Decimal = Decimal(0)
    credited: Decimal = Decimal(0)
    unallocated: Decimal = Decimal(0)
    settled: bool = False  # the last invoice touched is settled
    credit_id: str | None = None


@dataclass(frozen=True)
class ReverseResult:
    """What reverse() did (`replayed`: the same source reference was reversed before, nothing new)."""

    reversal_id: str
    payment_id: str
    amount: Decimal
    invoice_ids: tuple[str, ...] = ()
    replayed: bool = False


@dataclass(frozen=True)
class Outcome:
    status: str
    payment_id: str
    invoice_id: str | None = None
    settled: bool = False
