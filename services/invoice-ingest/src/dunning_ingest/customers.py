"""Customers as a resource: read one (its contacts, open invoices, balance per currency and active
holds), list them, and change one with a JSON merge patch under optimistic concurrency.

The customer is also written by the invoices that name it (repository.customers.upsert_ctes): both
writers bump its version and publish CustomerUpdated in the statement that changes it. A PATCH
checks its fields by the rules of an invoice's customer (`invoice_input.CustomerIn`, whose fields it
takes), and `If-Match` against the version it holds locked, so a stale write is a 412 and never a
lost update.
"""

import copy
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, create_model

from dunning.http import Problem
from dunning.http.preconditions import check_if_match
from dunning.logging import get_logger
from dunning.tracing import current_traceparent
from dunning_ingest.customer_output import OPEN_INVOICES_SHOWN, CustomerDetail, CustomerOut
from dunning_ingest.customer_rules import SUBDIVISION, Attributes, Country, Phone, PostalAddress, Tags
from dunning_ingest.invoice_input import CustomerIn
from dunning_ingest.repository import customers as repo
from dunning_ingest.repository import holds as hold_repo

log = get_logger(__name__)
MAX_CC = 10
PATCHABLE = (
    "name",
    "email",
    "cc",
    "locale",
    "timezone",
    "country",
    "subdivision",
    "tags",
    "attributes",
    "phone",
    "postal_address",
)


def _optional(name: str, description: str) -> Any:
    """CustomerIn's field `name` (its type, limits and checks), not required: absent means unchanged."""
    info = copy.copy(CustomerIn.model_fields[name])
    info.default, info.description = None, description
    return (info.annotation, info)


_EMAIL = CustomerIn.model_fields["email"]
_CC: Any = (  # a list of CustomerIn's email, each checked as the primary one is
    Annotated[
        list[Annotated[str, *_EMAIL.metadata, Field(json_schema_extra=_EMAIL.json_schema_extra)]] | None,
        Field(
            max_length=MAX_CC,
            description=f"Addresses copied on every e-mail reminder: at most {MAX_CC}, no address twice; the "
            "whole list is replaced, `[]` or `null` clears it.",
        ),
    ],
    None,
)


_SUBDIVISION: Any = (  # without CustomerIn's check: the country may be the stored one (checked in patch)
    Annotated[
        Annotated[str, Field(pattern=SUBDIVISION.pattern)] | None,
        Field(
            description="ISO 3166-2 subdivision code without the country (BY for DE-BY): only with a country "
            "(given here or stored); null clears it.",
            examples=["BY"],
        ),
    ],
    None,
)


def _no_defaults(schema: dict[str, Any]) -> None:
    """An absent member means "leave it" (RFC 7396), not a null default: say nothing of defaults."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["examples"] = [
        {"email": "payables@yamada.example", "cc": ["cfo@yamada.example"], "country": "JP", "tags": ["strategic"]}
    ]


CustomerPatch: type[BaseModel] = create_model(
    "CustomerPatch",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_no_defaults),
    __doc__="A JSON merge patch (RFC 7396) of a customer: the members given are set, the others left as "
    "they are. `null` is refused, except for `cc`, `country`, `subdivision`, `tags`, `attributes`, `phone` and "
    "`postal_address`, which it clears.",
    name=_optional("name", "The customer's name."),
    email=_optional("email", "The primary accounts-payable address: every reminder goes to it."),
    cc=_CC,
    locale=_optional("locale", "BCP 47 locale known to CLDR: the language and formats of the reminders."),
    timezone=_optional("timezone", "IANA time zone: reminders are sent in the customer's business hours."),
    # issue 10: null clears them (a new country without a subdivision clears the subdivision)
    country=(Country, None),
    subdivision=_SUBDIVISION,
    tags=(Tags, None),
    attributes=(Attributes, None),
    # the contact channels beyond e-mail: null clears them
    phone=(Phone, None),
    postal_address=(PostalAddress, None),
)


def _changes(patch: BaseModel) -> dict[str, Any]:
    """The members the patch sets, checked: no null but in cc (null clears it), no address twice in cc."""
    values = patch.model_dump(exclude_unset=True)
    if "cc" in values:
        cc = values["cc"] = values["cc"] or []
        seen: set[str] = set()
        for i, address in enumerate(cc):
            if address.casefold() in seen:
                raise Problem.invalid(f"cc.{i}", f"{address} is already in cc", "duplicate")
            seen.add(address.casefold())
    return values


class CustomerService:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def read(self, tenant_id: str, customer_id: str) -> dict[str, Any] | None:
        """The customer's detail, read from one snapshot; None if it is not the tenant's."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await self._detail(conn, tenant_id, customer_id)

    async def list_customers(
        self, tenant_id: str, *, external_id: str | None, email: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` customers in external id order, as CustomerOut JSON."""
        async with self.pool.acquire() as conn:
            rows = await repo.list_customers(
                conn, tenant_id, external_id=external_id, email=email, after=after, limit=limit
            )
        return [CustomerOut.from_row(r).model_dump(mode="json") for r in rows]

    async def patch(
        self, tenant_id: str, customer_id: str, patch: BaseModel, if_match: str | None
    ) -> dict[str, Any] | None:
        """Apply the merge patch under If-Match; the customer's detail after it (None: no such customer).
        Nothing changed: the same version, nothing published. A stale If-Match: 412, nothing written."""
        values = _changes(patch)
        async with self.pool.acquire() as conn, conn.transaction():
            current = await repo.lock_customer(conn, tenant_id, customer_id)
            if current is None:
                return None
            check_if_match(if_match, current["version"], what="customer")
            if values.get("subdivision") is not None and not values.get("country", current["country"]):
                raise Problem.invalid("subdivision", "a subdivision needs a country (none is stored)", "no_country")
            changed = await repo.update_customer(conn, tenant_id, customer_id, values, current_traceparent())
            if changed is not None:
                log.info("ingest.customer.updated", customer_id=customer_id, version=changed["version"])
            return await self._detail(conn, tenant_id, customer_id)

    async def _detail(self, conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> dict[str, Any] | None:
        row = await repo.get_customer(conn, tenant_id, customer_id)
        if row is None:
            return None
        invoices = await repo.open_invoices_of(conn, tenant_id, customer_id, OPEN_INVOICES_SHOWN + 1)
        balances = await repo.balances_of(conn, tenant_id, customer_id)
        holds = await hold_repo.active_holds_of_customer(conn, tenant_id, customer_id)
        return CustomerDetail.from_rows(row, invoices, balances, holds).model_dump(mode="json")
