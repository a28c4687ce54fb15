"""Holds (dunning blocks): on one invoice or on a whole customer (its invoices present and future),
with a reason, who placed it and an optional end. Placing one is an acknowledgement under the fence
(HoldPlaced, keyed by the customer); DELETE releases it (HoldReleased); its end date passing needs no
event (the scheduler resumes at `ends_at` by itself), so its status reads `expired` from then.
"""

from typing import Annotated, Any

import asyncpg
from pydantic import AwareDatetime, Field, model_validator

from dunning.clock import utcnow
from dunning.events import envelope
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_ingest import repository
from dunning_ingest.idempotency import Reply
from dunning_ingest.messages import hold_placed, hold_released
from dunning_ingest.repository import customers as customer_repo
from dunning_ingest.repository import fence
from dunning_ingest.repository import holds as repo
from dunning_ingest.stop_output import HoldOut, dump
from dunning_ingest.stops import By, IsoText, Reason, StrictBody, not_open, reply

log = get_logger(__name__)
TARGETS = ("invoice_id", "customer_id", "invoice_external_id", "customer_external_id")
_ExternalId = Annotated[str, Field(min_length=1, max_length=200)]


class HoldIn(StrictBody):
    """A hold on exactly one of: an invoice (`invoice_id` or `invoice_external_id`) or a customer
    (`customer_id` or `customer_external_id`: all its invoices, present and future)."""

    invoice_id: Annotated[str | None, Field(max_length=64, examples=["inv_01JD7Y0Q9R3M4N5P6Q7R8S9T0V"])] = None
    customer_id: Annotated[str | None, Field(max_length=64)] = None
    invoice_external_id: _ExternalId | None = None
    customer_external_id: _ExternalId | None = None
    reason: Reason
    placed_by: By
    ends_at: Annotated[AwareDatetime, IsoText] | None = Field(
        None,
        description="Optional RFC 3339 instant in the future: dunning resumes by itself then.",
        examples=["2026-12-15T09:00:00Z"],
    )

    @model_validator(mode="after")
    def _one_target(self) -> "HoldIn":
        given = [t for t in TARGETS if getattr(self, t) is not None]
        if not given:
            raise Problem.invalid("invoice_id", f"give one of {', '.join(TARGETS)}", "missing_target")
        if len(given) > 1:
            raise Problem.invalid(given[1], f"give only one of {', '.join(TARGETS)}", "one_target")
        return self

    @property
    def target(self) -> tuple[str, str]:
        return next((t, getattr(self, t)) for t in TARGETS if getattr(self, t) is not None)


class HoldService:
    def __init__(self, pool: asyncpg.Pool, run: Any):
        self.pool = pool
        self.run = run  # InvoiceService.run: one transaction under the Idempotency-Key if one was sent

    async def place(self, tenant_id: str, hold: HoldIn, *, key: str | None, fingerprint: bytes | None) -> Reply:
        """201 with the hold: its acknowledged_at read under the fence, its HoldPlaced in the outbox."""

        async def work(conn: asyncpg.Connection) -> Reply:
            acknowledged_at = await fence.acknowledge_time(conn)  # first: the stop's acknowledgement
            if hold.ends_at is not None and hold.ends_at <= acknowledged_at:
                raise Problem.invalid("ends_at", "must be in the future", "in_the_past")
            invoice_id, customer_id = await self._target(conn, tenant_id, hold)
            row = {
                "hold_id": new_id("hld"),
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "invoice_id": invoice_id,
                "reason": hold.reason,
                "placed_by": hold.placed_by,
                "ends_at": hold.ends_at,
                "acknowledged_at": acknowledged_at,
            }
            env = envelope(hold_placed(row))
            await repo.insert_hold(conn, {**row, "event_id": env["id"]})
            await customer_repo.add_customer_events(conn, [env])
            log.info("ingest.hold.placed", hold_id=row["hold_id"], invoice_id=invoice_id, customer_id=customer_id)
            placed = await repo.get_hold(conn, tenant_id, row["hold_id"])
            return reply(201, dump(HoldOut.from_row(placed)), {"location": f"/v1/holds/{row['hold_id']}"})

        return await self.run(tenant_id, key, fingerprint, work)

    async def _target(self, conn: asyncpg.Connection, tenant_id: str, hold: HoldIn) -> tuple[str | None, str]:
        """(invoice id or None, customer id) of what the hold names: 404 naming the field if unknown,
        409 for an invoice that is not open. The invoice is locked (ordering the hold with a void)."""
        field, value = hold.target
        if field in ("invoice_id", "invoice_external_id"):
            invoice_id: str | None = value
            if field == "invoice_external_id":
                invoice_id = (await repository.existing_by_external_id(conn, tenant_id, [value])).get(value, (None,))[0]
            row = await repository.lock_invoice(conn, tenant_id, invoice_id) if invoice_id else None
            if row is None:
                raise Problem.not_found(field, f"No invoice {value!r}.")
            if row["status"] != "open":
                raise not_open(row, "be held")
            return row["id"], row["customer_id"]
        if field == "customer_id":
            customer = await customer_repo.get_customer(conn, tenant_id, value)
        else:
            customer = await repository.customer_by_external_id(conn, tenant_id, value)
        if customer is None:
            raise Problem.not_found(field, f"No customer {value!r}.")
        return None, customer["id"]

    async def release(self, tenant_id: str, hold_id: str, released_by: str) -> dict[str, Any] | None:
        """The hold after DELETE (None: no such hold). An active hold is released (HoldReleased); a
        released or expired one is answered as it is, unchanged."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get_hold(conn, tenant_id, hold_id, lock=True)
            if row is None:
                return None
            if row["status"] == "active":
                released_at = utcnow()
                await repo.release_hold(conn, tenant_id, hold_id, released_at, released_by)
                await customer_repo.add_customer_events(conn, [envelope(hold_released(row, released_by, released_at))])
                log.info("ingest.hold.released", hold_id=hold_id, released_by=released_by)
                row = await repo.get_hold(conn, tenant_id, hold_id)
            return dump(HoldOut.from_row(row))

    async def read(self, tenant_id: str, hold_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await repo.get_hold(conn, tenant_id, hold_id)
        return None if row is None else dump(HoldOut.from_row(row))

    async def list_holds(self, tenant_id: str, *, limit: int, **filters: Any) -> list[dict[str, Any]]:
        """Up to `limit` holds, newest first; filters: status, invoice_id, customer_id, after."""
        async with self.pool.acquire() as conn:
            rows = await repo.list_holds(conn, tenant_id, limit=limit, **filters)
        return [dump(HoldOut.from_row(r)) for r in rows]
