"""The events of dunning.customers.v1 (keyed by customer id)."""

from datetime import datetime
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


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
    changed: tuple[str, ...]  # name | email | cc | locale | timezone
    previous_timezone: str
    updated_at: datetime


class CustomerUpdated(_CustomerUpdated, Contract):
    """A customer's whole new contact state; a consumer ignores a version it has seen."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CustomerUpdated.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @property
    def subject(self) -> str:
        """The envelope's subject and Kafka key: the customer id."""
        return self.customer_id
