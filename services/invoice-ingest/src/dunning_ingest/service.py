"""Creating invoices, one or ten thousand at a time, idempotently.

One invoice: one transaction of a few statements (customer upsert + invoice insert in one CTE, the
InvoiceIssued row in the outbox, the Idempotency-Key result). Bulk: items are validated one by
one in memory, then written set-based (one statement per table) with a single outbox insert.
"(tenant, external_id) exists with the same content" is a replay (200/"existing"); with other
content it is a conflict (409/"conflict"): updates are not accepted here.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi.responses import Response
from pydantic import ValidationError

from dunning import outbox
from dunning.clock import utcnow
from dunning.http import PROBLEM, problem_body
from dunning.ids import new_id
from dunning.logging import get_logger

from dunning_ingest import repository
from dunning_ingest.events_out import invoice_issued
from dunning_ingest.idempotency import PROBLEMS, IdempotencyStore
from dunning_ingest.representation import detail_json, new_invoice_row
from dunning_ingest.schemas import InvoiceIn, error_list, invoice_adapter

log = get_logger(__name__)
JSON = "application/json"
Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, dict[str, str], bytes]]]
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    media = PROBLEM if status >= 400 else JSON
    return status, {"content-type": media, **(headers or {})}, orjson.dumps(body)


def _conflict_message(invoice_id: str) -> str:
    return (f"invoice {invoice_id} already has this external_id with different content; "
            "changing an invoice is not supported yet")


@dataclass
class _Valid:
    index: int
    inv: InvoiceIn
    content_hash: bytes


class InvoiceService:
    def __init__(self, pool: asyncpg.Pool, idempotency: IdempotencyStore):
        self.pool = pool
        self.idempotency = idempotency

    async def run(self, tenant_id: str, key: str | None, fingerprint: bytes | None, work: Work) -> Response:
        """Do `work` in one transaction, under the Idempotency-Key if one was sent."""
        if key is not None:
            replay = await self.idempotency.claim(tenant_id, key, fingerprint)
            if replay is not None:
                log.info("ingest.idempotency.replayed", status=replay.status_code)
                return replay
        try:
            for attempt in range(1, 4):
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        status, headers, body = await work(conn)
                        if key is not None:
                            await IdempotencyStore.complete(conn, tenant_id, key, status, headers, body)
                    break
                except RETRYABLE as exc:
                    if attempt == 3:
                        raise
                    log.warning("ingest.transaction.retry", error=repr(exc), attempt=attempt)
        except BaseException:
            if key is not None:
                try:
                    await self.idempotency.release(tenant_id, key)
                except Exception:  # noqa: BLE001 - the original error matters more
                    log.exception("ingest.idempotency.release_failed")
            raise
        return Response(body, status_code=status, headers=headers)

    # --- one invoice --------------------------------------------------------------------------

    async def create(self, tenant_id: str, inv: InvoiceIn, *, path: str, key: str | None = None,
                     fingerprint: bytes | None = None) -> Response:
        content_hash = inv.content_hash()

        async def work(conn: asyncpg.Connection):
            invoice_id, now = new_id("inv"), utcnow()
            row = await repository.create_one(conn, tenant_id, invoice_id=invoice_id, new_customer_id=new_id("cus"),
                                              inv=inv, content_hash=content_hash, created_at=now)
            if row["created_id"] is not None:
                await outbox.add(conn, invoice_issued(tenant_id, invoice_id, row["customer_id"], inv, now))
                log.info("ingest.invoice.created", invoice_id=invoice_id, external_id=inv.external_id)
                body = detail_json(new_invoice_row(invoice_id, row["customer_id"], inv, now))
                return _json(201, body, {"location": f"{path}/{invoice_id}"})
            existing_id, existing_hash = row["existing_id"], row["existing_hash"]
            if existing_id is None:  # created concurrently after this statement's snapshot
                existing = await repository.existing_by_external_id(conn, tenant_id, [inv.external_id])
                existing_id, existing_hash = existing[inv.external_id]
            if bytes(existing_hash) == content_hash:
                log.info("ingest.invoice.existing", invoice_id=existing_id, external_id=inv.external_id)
                body = await self.detail(conn, tenant_id, existing_id)
                return _json(200, body, {"location": f"{path}/{existing_id}"})
            log.info("ingest.invoice.conflict", invoice_id=existing_id, external_id=inv.external_id)
            problem = problem_body(409, _conflict_message(existing_id), type_=PROBLEMS + "invoice-exists",
                                   title="Invoice already exists", instance=path,
                                   errors=[{"field": "external_id", "message": _conflict_message(existing_id)}])
            problem["invoice_id"] = existing_id
            return _json(409, problem)

        return await self.run(tenant_id, key, fingerprint, work)

    async def detail(self, conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> dict[str, Any] | None:
        row = await repository.get_invoice(conn, tenant_id, invoice_id)
        if row is None:
            return None
        payments = await repository.payments_of(conn, invoice_id)
        stages, history = await repository.timeline_of(conn, invoice_id)
        return detail_json(row, payments, stages, history)

    # --- many invoices ------------------------------------------------------------------------

    async def create_many(self, tenant_id: str, items: list[Any], *, key: str | None = None,
                          fingerprint: bytes | None = None) -> Response:
        results: list[dict[str, Any] | None] = [None] * len(items)
        valid: list[_Valid] = []
        for index, item in enumerate(items):
            if index and index % 1000 == 0:
                await asyncio.sleep(0)  # let other requests in between chunks of validation
            try:
                inv = invoice_adapter.validate_python(item)
            except ValidationError as exc:
                results[index] = {"index": index, "status": "invalid", "errors": error_list(exc, f"invoices.{index}")}
            else:
                valid.append(_Valid(index, inv, inv.content_hash()))

        async def work(conn: asyncpg.Connection):
            outcome = await self._write_many(conn, tenant_id, valid)
            for v in valid:
                status, invoice_id = outcome[v.index]
                result: dict[str, Any] = {"index": v.index, "status": status, "id": invoice_id}
                if status == "conflict":
                    result["errors"] = [{"field": f"invoices.{v.index}.external_id",
                                         "message": _conflict_message(invoice_id)}]
                results[v.index] = result
            summary = {"created": 0, "existing": 0, "failed": 0}
            for r in results:
                summary[r["status"] if r["status"] in ("created", "existing") else "failed"] += 1
            log.info("ingest.bulk.done", items=len(items), **summary)
            return _json(200, {"summary": summary, "results": results})

        return await self.run(tenant_id, key, fingerprint, work)

    async def _write_many(self, conn: asyncpg.Connection, tenant_id: str,
                          valid: list[_Valid]) -> dict[int, tuple[str, str]]:
        """Insert what is new; returns index -> (created | existing | conflict, invoice id)."""
        first: dict[str, _Valid] = {}
        for v in valid:
            first.setdefault(v.inv.external_id, v)
        existing = await repository.existing_by_external_id(conn, tenant_id, list(first))
        new = sorted((v for ext, v in first.items() if ext not in existing), key=lambda v: v.inv.external_id)
        created: dict[str, str] = {}
        if new:
            customers = {v.inv.customer.external_id: v.inv.customer for v in sorted(new, key=lambda v: v.index)}
            customer_ids = await repository.upsert_customers(conn, tenant_id, [
                (new_id("cus"), c.external_id, c.name, c.email, c.locale, c.timezone) for c in customers.values()
            ])
            now = utcnow()
            rows = [
                (new_id("inv"), v.inv.external_id, v.inv.number, customer_ids[v.inv.customer.external_id],
                 v.inv.currency, v.inv.amount_due, v.inv.issue_date, v.inv.due_date, v.inv.payment_url,
                 v.inv.metadata, v.content_hash)
                for v in new
            ]
            inserted = await repository.insert_invoices(conn, tenant_id, now, rows)
            envelopes = []
            for v, row in zip(new, rows):
                if row[0] in inserted:
                    created[v.inv.external_id] = row[0]
                    envelopes.append(invoice_issued(tenant_id, row[0], row[3], v.inv, now))
            await outbox.add_many(conn, envelopes)
            raced = [v.inv.external_id for v in new if v.inv.external_id not in created]
            if raced:  # created by a concurrent request after our lookup
                existing.update(await repository.existing_by_external_id(conn, tenant_id, raced))
        outcome: dict[int, tuple[str, str]] = {}
        for v in valid:
            ext = v.inv.external_id
            winner = first[ext]
            if ext in created:
                invoice_id = created[ext]
                status = ("created" if v is winner
                          else "existing" if v.content_hash == winner.content_hash else "conflict")
            else:
                invoice_id, stored_hash = existing[ext]
                status = "existing" if v.content_hash == stored_hash else "conflict"
            outcome[v.index] = (status, invoice_id)
        return outcome
