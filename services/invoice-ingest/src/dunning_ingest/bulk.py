"""A bulk import (up to 10,000 invoices) inside one transaction, validated and written as a pipeline.

Items are validated one by one (one bad item never rejects the others) in chunks of 1,000; while
PostgreSQL writes chunk k (existing lookup, customer upsert, invoice insert, outbox insert: one
set-based statement each), Python validates chunk k+1, so the two CPUs of a small machine work at
the same time. Within the request an external_id counts once: its first valid item decides, a
later identical item is "existing", a different one a "conflict".

Upsert mode (a nightly sync): an existing external_id whose content differs is an update through
the rules of changes.py ("updated", InvoiceUpdated), unless the invoice is closed or the item changes
its currency or issue date ("conflict", the field named); one whose invoice fields are all the same
is "existing". The create mode does none of this (its path is the benchmarked one).

Per item the Python work is kept to the checks themselves (invoice_input.fast_validate_invoice_in; pydantic only
for items that fail, to name their errors), one content hash, and one orjson.dumps of its event;
ids come in batches (dunning.ids.new_ids) and rows go to PostgreSQL as columns.
"""

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import asyncpg
from pydantic import ValidationError

from dunning.clock import isoformat, utcnow
from dunning.contracts import Customer
from dunning.ids import new_ids
from dunning_ingest import changes, repository
from dunning_ingest.customer_rules import extras_of
from dunning_ingest.invoice_input import (
    FastInvoiceIn,
    InvoiceIn,
    amount_text,
    error_list,
    fast_validate_invoice_in,
    invoice_adapter,
)
from dunning_ingest.messages import INVOICE_ISSUED, current_traceparent, issued_rows, topic

CHUNK = 1000
YIELD_EVERY = 100  # validated items between two chances for the loop to serve the writer's I/O


_gc_pauses = 0  # bulk requests in flight that hold the cyclic GC off


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold CPython's cyclic garbage collector off while a bulk request runs.

    An import allocates ~300,000 containers that live until its response (the parsed items, rows,
    events, results); with the collector on, its generation scans walk them again and again — a
    third of the import's CPU. They hold no reference cycles (reference counting frees them), and
    the collector runs as usual again as soon as the last bulk request in flight is done.
    """
    global _gc_pauses
    if _gc_pauses == 0 and not gc.isenabled():  # disabled by someone else: leave it alone
        yield
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


def conflict_message(invoice_id: str) -> str:
    return (
        f"invoice {invoice_id} already has this external_id with different content; change it with "
        f'PATCH /v1/invoices/{invoice_id}, or send it in a bulk import with "mode": "upsert"'
    )


class _Valid:
    __slots__ = ("index", "inv", "content_hash")

    def __init__(self, index: int, inv: Any, content_hash: bytes):
        self.index, self.inv, self.content_hash = index, inv, content_hash


class BulkImport:
    def __init__(self, conn: asyncpg.Connection, tenant_id: str, *, upsert: bool = False):
        self.conn = conn
        self.tenant_id = tenant_id
        self.upsert = upsert
        self.updated: set[str] = set()  # external ids updated (upsert mode)
        self.conflicts: dict[str, tuple[str, str, str]] = {}  # external_id -> (field, message, code), upsert mode
        self.now = utcnow()
        self.issued_at = isoformat(self.now)
        self.traceparent = current_traceparent()
        self.valid: list[_Valid] = []
        self.first: dict[str, _Valid] = {}  # external_id -> the item that decides
        self.created: dict[str, str] = {}  # external_id -> new invoice id
        self.existing: dict[str, tuple[str, bytes]] = {}  # external_id -> (id, content hash)
        # external_id -> (id, data written, its stored optional fields as the events carry them)
        self.customers: dict[str, tuple[str, Any, dict[str, Any]]] = {}
        self.checked: dict = {}  # customer values -> FastCustomerIn

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
            item = items[index]
            inv: FastInvoiceIn | InvoiceIn | None = fast_validate_invoice_in(item, self.checked)
            if inv is None:
                try:
                    inv = invoice_adapter.validate_python(item)
                except ValidationError as exc:
                    results[index] = {
                        "index": index,
                        "status": "invalid",
                        "errors": error_list(exc, f"invoices.{index}"),
                    }
                    continue
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
        known = await repository.existing_by_external_id(conn, tenant_id, [v.inv.external_id for v in fresh])
        self.existing.update(known)
        if self.upsert:
            await self._update(
                [v for v in fresh if v.inv.external_id in known and known[v.inv.external_id][1] != v.content_hash]
            )
        # Sorted by external id: concurrent imports lock rows in the same order.
        new = sorted((v for v in fresh if v.inv.external_id not in self.existing), key=lambda v: v.inv.external_id)
        if not new:
            return
        await self._upsert_customers(new)
        customers = self.customers
        rows = [
            {
                "id": invoice_id,
                "external_id": i.external_id,
                "number": i.number,
                "customer_id": customers[i.customer.external_id][0],
                "currency": i.currency,
                "amount_due": amount_text(i),
                "issue_date": i.issue_date,
                "due_date": i.due_date,
                "payment_url": i.payment_url,
                "metadata": i.metadata,
                "content_hash": v.content_hash.hex(),
            }
            for invoice_id, v, i in zip(new_ids("inv", len(new)), new, (v.inv for v in new), strict=True)
        ]
        inserted = await repository.insert_invoices(conn, tenant_id, self.now, rows)
        issued = []
        created = self.created
        for row, v in zip(rows, new, strict=True):
            if inserted is None or row["id"] in inserted:
                created[v.inv.external_id] = row["id"]
                issued.append((row["id"], row["customer_id"], v.inv))
        if issued:
            extras = {cid: x for cid, _, x in customers.values()}
            await repository.add_to_outbox(
                conn, topic(), INVOICE_ISSUED, issued_rows(tenant_id, issued, self.issued_at, self.traceparent, extras)
            )
        raced = [v.inv.external_id for v in new if v.inv.external_id not in created]
        if raced:  # created by a concurrent request after our lookup
            self.existing.update(await repository.existing_by_external_id(conn, tenant_id, raced))

    async def _update(self, changed: list[_Valid]) -> None:
        """Upsert mode: the items whose invoice exists with other content, through changes.py's rules."""
        if not changed:
            return
        rows = await repository.lock_invoices(
            self.conn, self.tenant_id, [self.existing[v.inv.external_id][0] for v in changed]
        )
        candidates = []
        for v in changed:
            inv = v.inv
            row = rows[self.existing[inv.external_id][0]]
            field = changes.changed_immutable(row, inv.currency, inv.issue_date)
            if field is not None:
                self.conflicts[inv.external_id] = (field, changes.immutable_message(field, row), "immutable")
                continue
            c = inv.customer
            new = changes.State(
                inv.number,
                Customer("", c.external_id, c.name, c.email, c.locale, c.timezone),  # its id and fields: below
                inv.amount_due,
                inv.due_date,
                inv.payment_url,
                inv.metadata,
            )
            diff = changes.field_changes(row, new)
            if diff and row["status"] != "open":
                self.conflicts[inv.external_id] = ("external_id", changes.closed_message(row), "invoice_closed")
            else:
                candidates.append((v, row, new, diff))
        if not candidates:
            return
        await self._upsert_customers([v for v, *_ in candidates])
        updates = []
        for v, row, new, diff in candidates:
            if diff:
                cid, _, stored = self.customers[new.customer.external_id]
                tags = stored.get("tags")
                customer = new.customer._replace(
                    customer_id=cid,
                    country=stored.get("country"),
                    subdivision=stored.get("subdivision"),
                    tags=None if tags is None else tuple(tags),
                    attributes=stored.get("attributes"),
                    phone=stored.get("phone"),
                    postal_address=stored.get("postal_address"),
                )
                new = new._replace(customer=customer)
                updates.append(changes.Update(row, new, diff, v.content_hash))
                self.updated.add(v.inv.external_id)
        await changes.apply_updates(self.conn, self.tenant_id, updates, self.now)

    async def _upsert_customers(self, new: list[_Valid]) -> None:
        """Write each customer of this import once, and again only if a later item changes it (last wins)."""
        latest: dict[str, Any] = {}
        given: dict[str, dict[str, Any]] = {}  # the optional fields the items give, merged in item order
        for v in sorted(new, key=lambda v: v.index):
            c = latest[v.inv.customer.external_id] = v.inv.customer
            merged = given.setdefault(c.external_id, {})
            if c.country is not None and c.subdivision is None:
                merged.pop("subdivision", None)  # a new country drops the subdivision given before
            merged.update({k: x for k, x in extras_of(c).items() if x is not None})
        changed = []
        for ext, c in latest.items():
            x = given[ext]
            tags, attributes = x.get("tags"), x.get("attributes")
            data = (
                c.name,
                c.email,
                c.locale,
                c.timezone,
                x.get("country"),
                x.get("subdivision"),
                None if tags is None else list(tags),
                None if attributes is None else dict(attributes),
                x.get("phone"),
                x.get("postal_address"),
            )
            known = self.customers.get(ext)
            if known is None or known[1] != data:
                changed.append((ext, data))
        if not changed:
            return
        rows = [
            repository.CustomerRow(new_id, ext, *data)
            for new_id, (ext, data) in zip(new_ids("cus", len(changed)), changed, strict=True)
        ]
        written = await repository.upsert_customers(self.conn, self.tenant_id, rows)
        for ext, data in changed:
            self.customers[ext] = (written[ext][0], data, written[ext][1])

    def _result(self, v: _Valid) -> dict[str, Any]:
        ext = v.inv.external_id
        winner = self.first[ext]
        errors = None
        if ext in self.created:
            invoice_id = self.created[ext]
            status = "created" if v is winner else "existing" if v.content_hash == winner.content_hash else "conflict"
        elif self.upsert:
            invoice_id = self.existing[ext][0]
            if v is not winner and v.content_hash != winner.content_hash:
                status = "conflict"
            elif ext in self.conflicts:
                status = "conflict"
                field, message, code = self.conflicts[ext]
                errors = [{"field": f"invoices.{v.index}.{field}", "message": message, "code": code}]
            else:
                status = "updated" if v is winner and ext in self.updated else "existing"
        else:
            invoice_id, stored_hash = self.existing[ext]
            status = "existing" if v.content_hash == stored_hash else "conflict"
        result: dict[str, Any] = {"index": v.index, "status": status, "id": invoice_id}
        if status == "conflict":
            result["errors"] = errors or [
                {
                    "field": f"invoices.{v.index}.external_id",
                    "message": conflict_message(invoice_id),
                    "code": "invoice_exists",
                }
            ]
        return result
