"""Promises to pay: the customer promises `amount` by `date` (a day in its time zone) or `by` an
instant ("by 17:00 on Friday"), which pauses dunning until that day's end (or that instant) plus the
policy's grace. Making one is an acknowledgement under the fence (PromiseMade); the scheduler judges
it (PromiseKept, PromiseBroken), which handlers.py records.
One pending promise per invoice, and none on an invoice under an active payment plan.
"""

import datetime as dt
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import AwareDatetime, Field, model_validator

from dunning import outbox
from dunning.events import envelope
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_ingest import repository
from dunning_ingest.idempotency import Reply
from dunning_ingest.messages import promise_made
from dunning_ingest.repository import plans as plans_repo
from dunning_ingest.repository import promises as repo
from dunning_ingest.stop_output import PromiseOut, dump
from dunning_ingest.stops import (
    DEFAULT_BY,
    AmountText,
    By,
    IsoText,
    Note,
    StrictBody,
    acknowledged_open_invoice,
    amount_of,
    conflict,
    reply,
)

log = get_logger(__name__)
HORIZON_DAYS = 365  # a promise further out than a year is no promise


class PromiseIn(StrictBody):
    """Exactly one of `date` (a day) and `by` (an instant)."""

    amount: AmountText = Field(description="The amount promised: more than zero, at most the invoice's balance.")
    date: Annotated[dt.date, IsoText] | None = Field(
        None,
        description="The day the customer promises to pay by, in its time zone: today or later, within a year. "
        "Give this or `by`.",
        examples=["2026-12-10"],
    )
    by: Annotated[AwareDatetime, IsoText] | None = Field(
        None,
        description="The instant the customer promises to pay by (RFC 3339): in the future, within a year. "
        "The promised date is its day in the customer's time zone. Give this or `date`.",
        examples=["2026-12-11T17:00:00+01:00"],
    )
    note: Note | None = None
    made_by: By = DEFAULT_BY

    @model_validator(mode="after")
    def _date_or_by(self) -> "PromiseIn":
        # Neither is refused by `promised`, after the amount is checked: a 422 names the amount first.
        if self.date is not None and self.by is not None:
            raise Problem.invalid("by", "give only one of date, by", "date_or_by")
        return self


def check_date(promised: dt.date, timezone: str, now: dt.datetime) -> None:
    """422 naming `date` unless it is today or later in the customer's zone, and within a year of it."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    if promised < today:
        raise Problem.invalid(
            "date", f"must be today or later in the customer's time zone ({timezone}: {today})", "in_the_past"
        )
    if promised > today + dt.timedelta(days=HORIZON_DAYS):
        raise Problem.invalid("date", f"must be within a year ({today + dt.timedelta(days=HORIZON_DAYS)})", "too_far")


def check_by(by: dt.datetime, now: dt.datetime) -> dt.datetime:
    """`by` in UTC; 422 naming `by` unless it is after `now` and within a year of it."""
    if by <= now:
        raise Problem.invalid("by", "must be in the future", "in_the_past")
    if by > now + dt.timedelta(days=HORIZON_DAYS):
        raise Problem.invalid(
            "by", f"must be within a year ({now + dt.timedelta(days=HORIZON_DAYS):%Y-%m-%d})", "too_far"
        )
    return by.astimezone(dt.UTC)


def promised(body: PromiseIn, timezone: str, now: dt.datetime) -> tuple[dt.date, dt.datetime | None]:
    """The promised date and the instant promised (None: by the date's end), checked (422 naming the field)."""
    if body.by is None:
        if body.date is None:
            raise Problem.invalid("date", "give one of date, by", "missing")
        day = body.date
        check_date(day, timezone, now)
        return day, None
    due_by = check_by(body.by, now)
    return due_by.astimezone(ZoneInfo(timezone)).date(), due_by


class PromiseService:
    def __init__(self, pool: asyncpg.Pool, run: Any):
        self.pool = pool
        self.run = run  # InvoiceService.run: one transaction under the Idempotency-Key if one was sent

    async def make(
        self, tenant_id: str, invoice_id: str, body: PromiseIn, *, key: str | None, fingerprint: bytes | None
    ) -> Reply:
        """201 with the promise: acknowledged under the fence, PromiseMade in the outbox."""

        async def work(conn: asyncpg.Connection) -> Reply:
            acknowledged_at, invoice = await acknowledged_open_invoice(conn, tenant_id, invoice_id, "be promised")
            if (current := await repo.pending_promise_of(conn, invoice_id)) is not None:
                message = f"invoice {invoice_id} has a pending promise ({current['promise_id']})"
                raise conflict("invoice_id", message, "promise_pending", promise_id=current["promise_id"])
            if (plan_id := (await plans_repo.active_plans(conn, [invoice_id])).get(invoice_id)) is not None:
                message = f"invoice {invoice_id} is under an active payment plan ({plan_id})"
                raise conflict("invoice_id", message, "payment_plan_active", plan_id=plan_id)
            currency = invoice["currency"]
            amount = amount_of(
                "amount", body.amount, currency, at_most=invoice["balance"], what="the invoice's balance"
            )
            promised_date, due_by = promised(body, invoice["customer_timezone"], acknowledged_at)
            promise = {
                "promise_id": new_id("prm"),
                "invoice_id": invoice_id,
                "tenant_id": tenant_id,
                "currency": currency,
                "amount": amount,
                "promised_date": promised_date,
                "made_by": body.made_by,
                "note": body.note,
                "acknowledged_at": acknowledged_at,
                "due_by": due_by,
            }
            env = envelope(promise_made(promise))
            await repo.insert_promise(conn, {**promise, "event_id": env["id"]})
            await outbox.add_many(conn, [env])
            log.info("ingest.promise.made", invoice_id=invoice_id, promise_id=promise["promise_id"])
            [row] = [p for p in await repo.promises_of(conn, invoice_id) if p["promise_id"] == promise["promise_id"]]
            location = f"/v1/invoices/{invoice_id}/promises/{promise['promise_id']}"
            return reply(201, dump(PromiseOut.from_row(row)), {"location": location})

        return await self.run(tenant_id, key, fingerprint, work)

    async def list_promises(self, tenant_id: str, invoice_id: str) -> list[dict[str, Any]] | None:
        """The invoice's promises, oldest first; None if it is not the tenant's invoice."""
        async with self.pool.acquire() as conn:
            if await repository.get_invoice(conn, tenant_id, invoice_id) is None:
                return None
            return [dump(PromiseOut.from_row(r)) for r in await repo.promises_of(conn, invoice_id)]
