"""Creating invoices, one or ten thousand at a time, idempotently, and changing them.

One invoice: one SQL statement (customer upsert, invoice insert, the InvoiceIssued row in the outbox
and the relay's NOTIFY in one CTE chain), plus the Idempotency-Key result in the same transaction
when a key was sent. Bulk: see bulk.py.
"(tenant, external_id) exists with the same content" is a replay (200/"existing"); with other
content it is a conflict (409/"conflict"): changes go through PATCH or the bulk upsert mode.
Changes (PATCH, void, write-off) lock the invoice, check If-Match and apply the rules of changes.py
in one transaction; every invoice answer carries its version as a strong ETag.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from dunning.clock import isoformat, utcnow
from dunning.http import PROBLEM, PROBLEMS, Problem, problem_body
from dunning.http.preconditions import check_if_match, etag
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_ingest import changes, repository
from dunning_ingest.bulk import BulkImport, conflict_message
from dunning_ingest.idempotency import IdempotencyStore, Reply
from dunning_ingest.invoice_input import InvoicePatch
from dunning_ingest.invoice_output import invoice_detail_json, new_invoice_row
from dunning_ingest.messages import INVOICE_ISSUED, OutboxRow, current_traceparent, topic
from dunning_ingest.money_output import MoneyRows
from dunning_ingest.repository import fence, money
from dunning_ingest.stops import stops_of

log = get_logger(__name__)
JSON = "application/json"
Work = Callable[[asyncpg.Connection], Awaitable[Reply]]
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


async def _retrying(once: Callable[[], Awaitable[Reply]], attempts: int = 3) -> Reply:
    """once(), again after a deadlock or a serialization failure (each call is a fresh transaction)."""
    for attempt in range(1, attempts):
        try:
            return await once()
        except RETRYABLE as exc:
            log.warning("ingest.transaction.retry", error=repr(exc), attempt=attempt)
    return await once()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    media = PROBLEM if status >= 400 else JSON
    return Reply(status, {"content-type": media, **(headers or {})}, orjson.dumps(body))


def _invoice(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    """An invoice answer: its JSON with its ETag."""
    return _json(status, body, {"etag": etag(body["version"]), **(headers or {})})


class InvoiceService:
    def __init__(self, pool: asyncpg.Pool, idempotency: IdempotencyStore):
        self.pool = pool
        self.idempotency = idempotency

    async def run(self, tenant_id: str, key: str | None, fingerprint: bytes | None, work: Work) -> Reply:
        """Do `work` in one transaction, under the Idempotency-Key if one was sent."""
        if key is not None:
            assert fingerprint is not None, "a request with an Idempotency-Key always has a fingerprint"
            replay = await self.idempotency.claim(tenant_id, key, fingerprint)
            if replay is not None:
                log.info("ingest.idempotency.replayed", status=replay.status)
                return replay

        async def once() -> Reply:
            async with self.pool.acquire() as conn, conn.transaction():
                reply = await work(conn)
                if key is not None:
                    await IdempotencyStore.complete(conn, tenant_id, key, reply.status, reply.headers, reply.body)
            return reply

        try:
            return await _retrying(once)
        except BaseException:
            if key is not None:
                try:
                    await self.idempotency.release(tenant_id, key)
                except Exception:
                    log.exception("ingest.idempotency.release_failed")
            raise

    # --- one invoice --------------------------------------------------------------------------

    async def create(
        self, tenant_id: str, inv: Any, *, path: str, key: str | None = None, fingerprint: bytes | None = None
    ) -> Reply:
        """`inv`: an invoice_input.FastInvoiceIn (or an InvoiceIn). Without an Idempotency-Key this is one
        statement on one connection (atomic by itself: no BEGIN/COMMIT round trips)."""
        content_hash = inv.content_hash()

        async def work(conn: asyncpg.Connection):
            return await self._create_one(conn, tenant_id, inv, content_hash, path)

        if key is not None:
            return await self.run(tenant_id, key, fingerprint, work)

        async def once() -> Reply:
            async with self.pool.acquire() as conn:
                return await work(conn)

        return await _retrying(once)

    async def _create_one(
        self, conn: asyncpg.Connection, tenant_id: str, inv: Any, content_hash: bytes, path: str
    ) -> Reply:
        invoice_id, now = new_id("inv"), utcnow()
        event = OutboxRow(tenant_id, invoice_id, inv, isoformat(now), current_traceparent())
        row = await repository.create_one(
            conn,
            tenant_id,
            invoice_id=invoice_id,
            new_customer_id=new_id("cus"),
            inv=inv,
            content_hash=content_hash,
            created_at=now,
            event=event,
            topic=topic(),
            event_type=INVOICE_ISSUED,
        )
        if row["created_id"] is not None:
            # debug: a log line is a write(2) per request, a fifth of its CPU; the outbox event is the record.
            log.debug("ingest.invoice.created", invoice_id=invoice_id, external_id=inv.external_id)
            body = invoice_detail_json(
                new_invoice_row(invoice_id, row["customer_id"], inv, now, row["customer_extras"])
            )
            return _invoice(201, body, {"location": f"{path}/{invoice_id}"})
        existing_id, existing_hash = row["existing_id"], row["existing_hash"]
        if existing_id is None:  # created concurrently after this statement's snapshot
            existing = await repository.existing_by_external_id(conn, tenant_id, [inv.external_id])
            existing_id, existing_hash = existing[inv.external_id]
        if bytes(existing_hash) == content_hash:
            log.info("ingest.invoice.existing", invoice_id=existing_id, external_id=inv.external_id)
            existing_body = await self.detail(conn, tenant_id, existing_id)
            assert existing_body is not None, "invoices are never deleted"
            return _invoice(200, existing_body, {"location": f"{path}/{existing_id}"})
        log.info("ingest.invoice.conflict", invoice_id=existing_id, external_id=inv.external_id)
        problem = problem_body(
            409,
            conflict_message(existing_id),
            type_=PROBLEMS + "invoice-exists",
            title="Invoice already exists",
            instance=path,
            errors=[{"field": "external_id", "message": conflict_message(existing_id)}],
        )
        problem["invoice_id"] = existing_id
        return _json(409, problem)

    async def read_detail(self, tenant_id: str, invoice_id: str) -> dict[str, Any] | None:
        """The invoice with its payments and timeline, read from one snapshot; None if it is not the tenant's."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await self.detail(conn, tenant_id, invoice_id)

    async def detail(self, conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> dict[str, Any] | None:
        row = await repository.get_invoice(conn, tenant_id, invoice_id)
        if row is None:
            return None
        payments = await repository.payments_of(conn, invoice_id)
        credit_notes = await repository.credit_notes_of(conn, invoice_id)
        stages, history = await repository.timeline_of(conn, invoice_id)
        changed = await repository.changes_of(conn, invoice_id) if row["version"] > 1 else []
        stops = await stops_of(conn, invoice_id, row["customer_id"])
        money_rows = MoneyRows(await money.money_entries_of(conn, invoice_id), await money.pending_of(conn, invoice_id))
        return invoice_detail_json(
            row, payments, stages, history, credit_notes=credit_notes, changes=changed, stops=stops, money=money_rows
        )

    async def _locked(self, conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> Any:
        row = await repository.lock_invoice(conn, tenant_id, invoice_id)
        if row is None:
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id}.")
        return row

    async def _current(self, conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> Reply:
        body = await self.detail(conn, tenant_id, invoice_id)
        assert body is not None, "invoices are never deleted"
        return _invoice(200, body)

    # --- changes ------------------------------------------------------------------------------

    async def patch(
        self,
        tenant_id: str,
        invoice_id: str,
        patch: InvoicePatch,
        *,
        if_match: str | None,
        key: str | None = None,
        fingerprint: bytes | None = None,
    ) -> Reply:
        """Apply a merge patch to an open invoice: 200 with the invoice (a new version if anything changed)."""

        async def work(conn: asyncpg.Connection) -> Reply:
            row = await self._locked(conn, tenant_id, invoice_id)
            check_if_match(if_match, row["version"], what="invoice")
            if row["status"] != "open":
                raise changes.closed_problem(row)
            customer = None
            if "customer_external_id" in patch.model_fields_set:
                found = await repository.customer_by_external_id(conn, tenant_id, patch.customer_external_id)
                if found is None:
                    raise Problem.invalid(
                        "customer_external_id",
                        f"no customer {patch.customer_external_id!r} in this tenant",
                        "not_found",
                    )
                customer = changes.customer_of(found, prefix="", id_column="id")
            new = changes.patched(row, patch, customer)
            diff = changes.field_changes(row, new)
            if diff:
                update = changes.Update(row, new, diff, changes.content_hash(row, new))
                await changes.apply_updates(conn, tenant_id, [update], utcnow())
                log.info("ingest.invoice.updated", invoice_id=invoice_id, changed=[c["field"] for c in diff])
            return await self._current(conn, tenant_id, invoice_id)

        return await self.run(tenant_id, key, fingerprint, work)

    async def close(
        self,
        tenant_id: str,
        invoice_id: str,
        status: str,
        reason: str,
        *,
        if_match: str | None,
        key: str | None = None,
        fingerprint: bytes | None = None,
    ) -> Reply:
        """Void (`status` "void") or write off ("written_off") an open invoice. The same request again
        on an invoice it closed answers 200 with it as it is; another change to a closed one is a 409."""

        async def work(conn: asyncpg.Connection) -> Reply:
            acknowledged_at = await fence.acknowledge_time(conn)  # first: the stop's acknowledgement
            row = await self._locked(conn, tenant_id, invoice_id)
            if row["status"] == status and row["closed_reason"] == reason:
                return await self._current(conn, tenant_id, invoice_id)  # a repeat: done already
            check_if_match(if_match, row["version"], what="invoice")
            if row["status"] != "open":
                raise changes.closed_problem(row)
            await changes.close(conn, tenant_id, row, status, reason, acknowledged_at)
            log.info("ingest.invoice.closed", invoice_id=invoice_id, status=status)
            return await self._current(conn, tenant_id, invoice_id)

        return await self.run(tenant_id, key, fingerprint, work)

    # --- many invoices ------------------------------------------------------------------------

    async def create_many(
        self,
        tenant_id: str,
        items: list[Any],
        *,
        upsert: bool = False,
        key: str | None = None,
        fingerprint: bytes | None = None,
    ) -> Reply:
        async def work(conn: asyncpg.Connection):
            results = await BulkImport(conn, tenant_id, upsert=upsert).run(items)
            summary = {"created": 0, "updated": 0, "existing": 0, "failed": 0}
            for r in results:
                summary[r["status"] if r["status"] in summary else "failed"] += 1
            log.info("ingest.bulk.done", items=len(items), **summary)
            return _json(200, {"summary": summary, "results": results})

        return await self.run(tenant_id, key, fingerprint, work)
