"""A bulk import (up to 10,000 invoices) inside one transaction, validated and written as a pipeline.

Items are validated one by one (one bad item never rejects the others) in chunks of 1,000; while
PostgreSQL writes chunk k (existing lookup, customer upsert, invoice insert, outbox insert: one
set-based statement each), Python validates chunk k+1, so the two CPUs of a small machine work at
the same time. Within the request an external_id counts once: its first valid item decides, a
later identical item is "existing", a different one a "conflict".
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError

from dunning import outbox
from dunning.clock import utcnow
from dunning.ids import new_id

from dunning_ingest import repository
from dunning_ingest.events_out import invoices_issued
from dunning_ingest.schemas import InvoiceIn, error_list, invoice_adapter

CHUNK = 1000
YIELD_EVERY = 100  # validated items between two chances for the loop to serve the writer's I/O


def conflict_message(invoice_id: str) -> str:
    return (f"invoice {invoice_id} already has this external_id with different content; "
            "changing an invoice is not supported yet")


@dataclass
class _Valid:
    index: int
    inv: InvoiceIn
    content_hash: bytes


@dataclass
class BulkImport:
    conn: asyncpg.Connection
    tenant_id: str
    now: Any = field(default_factory=utcnow)
    valid: list[_Valid] = field(default_factory=list)
    first: dict[str, _Valid] = field(default_factory=dict)       # external_id -> the item that decides
    created: dict[str, str] = field(default_factory=dict)        # external_id -> new invoice id
    existing: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # external_id -> (id, content hash)
    customers: dict[str, tuple[str, Any]] = field(default_factory=dict)   # external_id -> (id, data written)

    async def run(self, items: list[Any]) -> list[dict[str, Any]]:
        """One result per item, in order."""
        results: list[dict[str, Any] | None] = [None] * len(items)
        writing: asyncio.Future | None = None
        try:
            for start in range(0, len(items), CHUNK):
                chunk = await self._validate(items, start, results)
                if writing is not None:
                    await writing  # one statement at a time on the connection
                writing = asyncio.ensure_future(self._write(chunk))
            if writing is not None:
                await writing
        except BaseException:
            if writing is not None and not writing.done():
                await asyncio.gather(writing, return_exceptions=True)  # never leave a statement running
            raise
        for v in self.valid:
            results[v.index] = self._result(v)
        return results  # type: ignore[return-value]

    async def _validate(self, items: list[Any], start: int, results: list) -> list[_Valid]:
        chunk = []
        for index in range(start, min(start + CHUNK, len(items))):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                inv = invoice_adapter.validate_python(items[index])
            except ValidationError as exc:
                results[index] = {"index": index, "status": "invalid", "errors": error_list(exc, f"invoices.{index}")}
            else:
                chunk.append(_Valid(index, inv, inv.content_hash()))
        self.valid += chunk
        return chunk

    async def _write(self, chunk: list[_Valid]) -> None:
        fresh = []
        for v in chunk:
            if v.inv.external_id not in self.first:
                self.first[v.inv.external_id] = v
                fresh.append(v)
        if not fresh:
            return
        conn, tenant_id = self.conn, self.tenant_id
        self.existing.update(await repository.existing_by_external_id(conn, tenant_id, [v.inv.external_id for v in fresh]))
        # Sorted by external id: concurrent imports lock rows in the same order.
        new = sorted((v for v in fresh if v.inv.external_id not in self.existing), key=lambda v: v.inv.external_id)
        if not new:
            return
        await self._upsert_customers(new)
        rows = [
            (new_id("inv"), v.inv.external_id, v.inv.number, self.customers[v.inv.customer.external_id][0],
             v.inv.currency, v.inv.amount_due, v.inv.issue_date, v.inv.due_date, v.inv.payment_url,
             v.inv.metadata, v.content_hash)
            for v in new
        ]
        inserted = await repository.insert_invoices(conn, tenant_id, self.now, rows)
        issued = []
        for v, row in zip(new, rows):
            if row[0] in inserted:
                self.created[v.inv.external_id] = row[0]
                issued.append((row[0], row[3], v.inv))
        await outbox.add_many(conn, invoices_issued(tenant_id, issued, self.now))
        raced = [v.inv.external_id for v in new if v.inv.external_id not in self.created]
        if raced:  # created by a concurrent request after our lookup
            self.existing.update(await repository.existing_by_external_id(conn, tenant_id, raced))

    async def _upsert_customers(self, new: list[_Valid]) -> None:
        """Write each customer of this import once, and again only if a later item changes it (last wins)."""
        latest = {v.inv.customer.external_id: v.inv.customer for v in sorted(new, key=lambda v: v.index)}
        rows = []
        for ext, c in latest.items():
            data = (c.name, c.email, c.locale, c.timezone)
            known = self.customers.get(ext)
            if known is None or known[1] != data:
                rows.append((new_id("cus"), ext, *data))
        ids = await repository.upsert_customers(self.conn, self.tenant_id, rows)
        for row in rows:
            self.customers[row[1]] = (ids[row[1]], row[2:])

    def _result(self, v: _Valid) -> dict[str, Any]:
        ext = v.inv.external_id
        winner = self.first[ext]
        if ext in self.created:
            invoice_id = self.created[ext]
            status = "created" if v is winner else "existing" if v.content_hash == winner.content_hash else "conflict"
        else:
            invoice_id, stored_hash = self.existing[ext]
            status = "existing" if v.content_hash == stored_hash else "conflict"
        result: dict[str, Any] = {"index": v.index, "status": status, "id": invoice_id}
        if status == "conflict":
            result["errors"] = [{"field": f"invoices.{v.index}.external_id", "message": conflict_message(invoice_id)}]
        return result
