"""The events of dunning.payments.v1: what reconciliation applied to an invoice's balance, and every
change to it (issue 11: allocations, reversals, customer credit, payments still pending, invoices a
processor closed). Each money event names its invoice (the key) and states the balance reconciliation
left with `balance_version`, reconciliation's count of the invoice's balance changes: of two events,
the higher version states the later balance (docs/decisions/0018-money-in.md)."""

from datetime import datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _PaymentReceived(NamedTuple):
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    source: str  # stripe | api | bank_statement | gocardless | standard_webhooks
    source_reference: str
    currency: str
    amount: Decimal
    amount_applied: Decimal
    balance_remaining: Decimal
    settled: bool
    received_at: datetime
    acknowledged_at: datetime
    # issue 11: the allocation this event reports (one payment may be allocated to several invoices,
    # one event each), the rule that matched it and why, in words; the invoice's balance version.
    allocation_id: str | None = None
    match_rule: str | None = None
    match_reason: str | None = None
    balance_version: int | None = None


class PaymentReceived(_PaymentReceived, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentReceived.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _CreditNoteIssued(NamedTuple):
    credit_note_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    reference: str
    reason: str
    currency: str
    amount: Decimal
    amount_applied: Decimal
    balance_remaining: Decimal
    settled: bool
    acknowledged_at: datetime
    balance_version: int | None = None


class CreditNoteIssued(_CreditNoteIssued, Contract):
    """A credit note applied to an invoice's balance, as a payment is (covered by the watermark)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CreditNoteIssued.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _PaymentUnallocated(NamedTuple):
    allocation_id: str
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    currency: str
    amount: Decimal  # what the allocation had applied, now back on the invoice's balance
    balance_remaining: Decimal
    settled: bool  # still settled after the change (False: the invoice reopened if it was settled)
    reason: str
    unallocated_by: str  # "api" (a person, through the API) or "system"
    unallocated_at: datetime
    balance_version: int


class PaymentUnallocated(_PaymentUnallocated, Contract):
    """An allocation undone (by hand, from the unmatched queue's manual allocations): its amount
    raises the invoice's balance again; the payment's money is unallocated (back in the queue)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentUnallocated.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _PaymentReversed(NamedTuple):
    reversal_id: str
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    kind: str  # refund | chargeback | payment_failed
    source: str
    source_reference: str  # the processor's refund / dispute / event id, or the API's reference
    currency: str
    amount: Decimal  # taken back from this invoice's allocations (raises its balance)
    balance_remaining: Decimal
    settled: bool
    reversed_at: datetime
    acknowledged_at: datetime
    balance_version: int


class PaymentReversed(_PaymentReversed, Contract):
    """Money that left again (a refund, a lost chargeback, a debit that failed after it was counted):
    the invoice's balance rises by `amount`; a settled invoice reopens and dunning resumes."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentReversed.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _CustomerCreditApplied(NamedTuple):
    application_id: str
    credit_id: str
    customer_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    source_payment_id: str  # the payment whose excess became the credit
    currency: str
    amount_applied: Decimal
    credit_remaining: Decimal  # what is left of the customer's credit afterwards
    balance_remaining: Decimal
    settled: bool
    applied_at: datetime
    acknowledged_at: datetime
    balance_version: int


class CustomerCreditApplied(_CustomerCreditApplied, Contract):
    """A customer's credit (an over-payment's excess) applied to one of its open invoices, as a
    payment is (covered by the watermark)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CustomerCreditApplied.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _PaymentPending(NamedTuple):
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    kind: str  # processing (a debit not yet settled) | chargeback (a card payment disputed)
    source: str
    source_reference: str
    currency: str
    amount: Decimal
    since: datetime
    acknowledged_at: datetime


class PaymentPending(_PaymentPending, Contract):
    """Money whose fate is open: a debit still processing (not counted as paid) or a disputed card
    payment. Dunning of the invoice pauses until PaymentPendingEnded."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPending.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _PaymentPendingEnded(NamedTuple):
    payment_id: str
    invoice_id: str
    tenant_id: str
    kind: str  # processing | chargeback
    outcome: str  # succeeded | failed (processing); won | lost (chargeback)
    source_reference: str
    ended_at: datetime


class PaymentPendingEnded(_PaymentPendingEnded, Contract):
    """The pending money's fate: the pause ends. A success is followed by PaymentReceived, a lost
    chargeback by PaymentReversed (both in the same transaction, on the same partition)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPendingEnded.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _InvoiceClosedByProcessor(NamedTuple):
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    action: str  # void | write_off
    source: str  # stripe
    source_reference: str  # the processor's event id
    reason: str
    closed_at: datetime


class InvoiceClosedByProcessor(_InvoiceClosedByProcessor, Contract):
    """The processor that is also the accounting system closed the invoice (Stripe's invoice.voided,
    invoice.marked_uncollectible): invoice-ingest, which owns the invoice, voids or writes it off."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceClosedByProcessor.v1"
    SOURCE: ClassVar[str] = "/reconciliation"
