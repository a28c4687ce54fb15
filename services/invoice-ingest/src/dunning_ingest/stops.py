"""What the stops acknowledged here share (holds, disputes, promises; payment plans too): the
invoice they apply to read under its row lock and refused unless open, the answers they give, the
request fields they have in common, and the rows an invoice's detail shows of them.

Each acknowledging request runs in one transaction that first reads `acknowledged_at` under
invoice-ingest's acknowledgement fence (repository.fence.acknowledge_time), then checks and writes
its row and its event (to the outbox): see docs/cancel-guarantee.md#every-stop-under-the-gate.
"""

from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import orjson
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from dunning.http import PROBLEMS, Problem
from dunning.money import MoneyError, parse_amount
from dunning_ingest import repository
from dunning_ingest.idempotency import Reply
from dunning_ingest.invoice_history import Stops
from dunning_ingest.repository import disputes, fence, holds, plans, promises, stop_events

DEFAULT_BY = "api"  # who acknowledged a stop when the request does not say


def _text(max_length: int, description: str, example: str) -> Any:
    """Required text: not blank, at most `max_length` characters."""
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length, pattern=r"\S"),
        Field(description=description, examples=[example]),
    ]


Reason = _text(500, "Why (at most 500 characters).", "Customer disputes the delivery date")
By = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"\S"),
    Field(description=f'Who (at most 200 characters; default "{DEFAULT_BY}").', examples=["maria@acme.example"]),
]
Note = Annotated[str, StringConstraints(max_length=2000), Field(description="At most 2,000 characters.")]


AmountText = Annotated[
    str, Field(description='A decimal string in the invoice\'s currency, e.g. "250.00".', examples=["250.00"])
]


class StrictBody(BaseModel):
    """A request body: unknown fields refused (422 naming them)."""

    model_config = {"extra": "forbid"}


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be ISO 8601 text")  # not a number of seconds or days
    return value


IsoText = BeforeValidator(_text_only)  # a date or an instant given as text only (RFC 3339)


def amount_of(field: str, text: str, currency: str, *, at_most: Decimal | None = None, what: str = "") -> Decimal:
    """An amount of the invoice's currency (its minor units, > 0, at most `at_most`), or a 422 naming `field`."""
    try:
        amount = parse_amount(text, currency)
    except MoneyError as exc:
        raise Problem.invalid(field, str(exc), "amount") from None
    if at_most is not None and amount > at_most:
        raise Problem.invalid(field, f"must be at most {what} ({at_most} {currency})", "amount_too_large")
    return amount


def not_open(row: Any, what: str) -> Problem:
    """409: only an open invoice can be held, disputed, promised or planned."""
    message = f"invoice {row['id']} is {row['status']}: only an open invoice can {what}"
    return Problem(
        409,
        message,
        type_=PROBLEMS + "invoice-closed",
        title="Invoice closed",
        errors=[{"field": "status", "message": message, "code": "invoice_closed"}],
        extensions={"invoice_id": row["id"], "invoice_status": row["status"]},
    )


def conflict(field: str, message: str, code: str, **extensions: Any) -> Problem:
    """409: a live item conflicts (an open dispute, a pending promise, an active plan)."""
    return Problem(
        409,
        message,
        type_=PROBLEMS + code.replace("_", "-"),
        title="Conflict",
        errors=[{"field": field, "message": message, "code": code}],
        extensions=extensions,
    )


async def locked_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> Any:
    """The tenant's invoice (repository.INVOICE_SELECT), locked until the transaction ends; 404 naming
    `invoice_id` if there is none. The lock orders a stop with the invoice's other changes."""
    row = await repository.lock_invoice(conn, tenant_id, invoice_id)
    if row is None:
        raise Problem.not_found("invoice_id", f"No invoice {invoice_id}.")
    return row


async def acknowledged_open_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str, doing: str) -> Any:
    """A stop on an invoice begins here: the acknowledgement under the fence (first, before any lock),
    then the tenant's invoice locked and open (404, or 409 naming why it cannot `doing`).
    Returns (acknowledged_at, invoice)."""
    acknowledged_at = await fence.acknowledge_time(conn)
    invoice = await locked_invoice(conn, tenant_id, invoice_id)
    if invoice["status"] != "open":
        raise not_open(invoice, doing)
    return acknowledged_at, invoice


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"content-type": "application/json", **(headers or {})}, orjson.dumps(body))


async def stops_of(conn: asyncpg.Connection, invoice_id: str, customer_id: str) -> Stops:
    """The rows of an invoice's stops for its detail: the holds covering it, its disputes, promises and
    payment plans, and what the scheduler and notifier reported (stop_events)."""
    if not await stop_events.any_stops(conn, invoice_id, customer_id):
        return Stops()
    return Stops(
        holds=await holds.holds_covering(conn, invoice_id, customer_id),
        disputes=await disputes.disputes_of(conn, invoice_id),
        promises=await promises.promises_of(conn, invoice_id),
        plans=await plans.plans_of_invoice(conn, invoice_id),
        events=await stop_events.stop_events_of(conn, invoice_id),
    )
