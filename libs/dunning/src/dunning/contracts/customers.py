"""The events of dunning.customers.v1 (keyed by customer id)."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, Record


class _CustomerUpdated(NamedTuple):
    customer_id: str
    tenant_id: str
    external_id: str
    version: int
    name: str
    email: str  # the primary accounts-payable address
    cc: tuple[str, ...]
    locale: str
    timezone: str
    changed: tuple[str, ...]  # name | email | cc | locale | timezone | country | subdivision | tags | attributes
    #                           | phone | postal_address
    previous_timezone: str
    updated_at: datetime
    # Added later (absent in older events; omitted when None), as on Customer: the customer's country and
    # subdivision (its public holidays) and the tags and attributes policy segments match on.
    country: str | None = None
    subdivision: str | None = None
    tags: tuple[str, ...] | None = None
    attributes: dict[str, str] | None = None
    # Added later still (as on Customer): the phone in E.164 and the postal address.
    phone: str | None = None
    postal_address: dict[str, Any] | None = None


class CustomerUpdated(_CustomerUpdated, Contract):
    """A customer's whole new contact state; a consumer ignores a version it has seen."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CustomerUpdated.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        """The envelope's subject and Kafka key: the customer id."""
        return self.customer_id


class _HoldPlaced(NamedTuple):
    hold_id: str  # hld_...
    tenant_id: str
    customer_id: str
    invoice_id: str | None  # None: every invoice of the customer, present and future
    reason: str
    placed_by: str
    ends_at: datetime | None  # None: until released
    acknowledged_at: datetime  # read under invoice-ingest's acknowledgement fence


class HoldPlaced(_HoldPlaced, Contract):
    """A dunning block on one invoice or on a whole customer (POST /v1/holds)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.HoldPlaced.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        return self.customer_id


class _HoldReleased(NamedTuple):
    hold_id: str
    tenant_id: str
    customer_id: str
    invoice_id: str | None
    released_by: str
    released_at: datetime


class HoldReleased(_HoldReleased, Contract):
    """A hold lifted by hand (DELETE /v1/holds/{id}); a hold's end date passing needs no event: the
    scheduler resumes at `ends_at` on its own (DunningResumed, reason hold_expired)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.HoldReleased.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        return self.customer_id


class _PlanInvoice(NamedTuple):
    invoice_id: str
    balance: Decimal  # the invoice's balance when the plan was agreed


class PlanInvoice(_PlanInvoice, Record):
    """An invoice a payment plan covers (PaymentPlanAgreed.invoices)."""

    __slots__ = ()


class _Instalment(NamedTuple):
    number: int  # 1, 2, ...
    due_date: date
    amount: Decimal


class Instalment(_Instalment, Record):
    """One instalment of a payment plan (PaymentPlanAgreed.instalments)."""

    __slots__ = ()


class _PaymentPlanAgreed(NamedTuple):
    plan_id: str  # pln_...
    tenant_id: str
    customer_id: str
    currency: str
    total: Decimal  # = sum of the invoices' balances = sum of the instalments
    invoices: tuple[PlanInvoice, ...]
    instalments: tuple[Instalment, ...]
    agreed_by: str
    acknowledged_at: datetime


class PaymentPlanAgreed(_PaymentPlanAgreed, Contract):
    """A payment plan over one or several open invoices of one customer, in one currency."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPlanAgreed.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        return self.customer_id


class _PaymentPlanCancelled(NamedTuple):
    plan_id: str
    tenant_id: str
    customer_id: str
    invoice_ids: tuple[str, ...]
    cancelled_by: str
    reason: str
    cancelled_at: datetime


class PaymentPlanCancelled(_PaymentPlanCancelled, Contract):
    """A plan called off by hand (DELETE /v1/payment-plans/{id}): dunning resumes on what is left."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPlanCancelled.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        return self.customer_id
