"""Importing a bank statement file: parse it whole (a bad file changes nothing), then, statement by
statement, turn each new credit line into a payment and hand them to matching in chunks.

Idempotent three ways: the same file (tenant + sha256) answers the first result with
`duplicate: true`; a statement the tenant already has (account + the bank's statement id) is
counted a duplicate; a line seen in an overlapping statement (its key) is skipped as a duplicate.

Each chunk (CHUNK lines) is one transaction: the watermark fence first (one acknowledgement time for
the chunk, docs/cancel-guarantee.md), then the statement's row locked, its line keys claimed, the new
credits matched and allocated (matching is batch-friendly: one candidate query per chunk), the lines
and the statement's progress written. A retry after a crash resumes after the last chunk committed.
The file is read in a thread, and its first statement's first chunk imported meanwhile (_first_chunk,
PostgreSQL's work on it overlapping the reading of the rest), in a transaction that claims the
statement too and commits only once the whole file is read valid: a bad file still changes nothing."""

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import MISSING, fields
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any

import asyncpg

from dunning.clock import utcnow
from dunning.ids import new_id, new_ids
from dunning.logging import get_logger
from dunning_reconciliation import match_service
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import APPLIED, IncomingPayment, MatchKeys, Outcome
from dunning_reconciliation.overlap import meanwhile
from dunning_reconciliation.repository import statements as statement_repo
from dunning_reconciliation.statements import Statement, StatementLine, parse
from dunning_reconciliation.statements.collector import collector_paused
from dunning_reconciliation.statements_view import import_view
from dunning_reconciliation.stopwatch import step

log = get_logger(__name__)

CHUNK = 5000
MATCHED = frozenset({APPLIED, "partially_allocated"})
SKIPPED, DUPLICATE = "skipped", "duplicate"

Matcher = Callable[[asyncpg.Connection, Sequence[IncomingPayment]], Awaitable[Sequence[Outcome]]]


async def import_statement(
    pool: asyncpg.Pool,
    tenant_id: str,
    data: bytes,
    *,
    filename: str | None,
    format: str | None = None,
    match: Matcher | None = None,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Import the file's statements; the answer is the import's summary (see statements_view).
    Raises StatementError (nothing stored) for a file that cannot be read whole."""
    with step("parse"):
        sha256 = hashlib.sha256(data).hexdigest()
    with step("store"):
        seen = await statement_repo.statements_of_file(pool, tenant_id, sha256)
        if seen and all(s["status"] == "imported" for s in seen):
            log.info("reconciliation.statement.duplicate_file", tenant_id=tenant_id, sha256=sha256)
            return await import_view(pool, seen, duplicate=True, duplicate_ids=set())
    # in a thread, as a large file takes a second; its first chunk of lines imported meanwhile, in a
    # transaction that commits once the file is read whole (_first_chunk)
    loop = asyncio.get_running_loop()
    head: asyncio.Future[Statement] = loop.create_future()
    parsing = asyncio.ensure_future(
        asyncio.to_thread(
            parse, data, format, first=lambda s: loop.call_soon_threadsafe(_settle, head, s), first_lines=chunk
        )
    )
    parsing.add_done_callback(_retrieved)  # its error is raised where it is awaited, if it still is
    with step("parse"):
        await asyncio.wait((parsing, head), return_when=asyncio.FIRST_COMPLETED)
    match = match or match_service.match_and_allocate
    started = None
    if head.done():  # (a file read whole by now too takes the same path)
        started = await _first_chunk(pool, tenant_id, head.result(), parsing, sha256, filename, match, chunk)
    with step("parse"):
        statements = await parsing  # StatementError: refused whole, nothing stored (the first chunk rolled back)
    rows, duplicate_ids = [], set()
    for position, statement in enumerate(statements, 1):
        if position == 1 and started is not None:
            row, duplicate = started, False
        else:
            with step("store"):
                row, duplicate = await _claim(pool, tenant_id, statement, sha256, position, filename)
        if duplicate:
            duplicate_ids.add(row["statement_id"])
        else:
            await _import_lines(pool, row["statement_id"], tenant_id, statement, match, chunk)
        rows.append(row)
    with step("store"):
        return await import_view(pool, rows, duplicate=len(duplicate_ids) == len(rows), duplicate_ids=duplicate_ids)


def _retrieved(future: asyncio.Future) -> None:
    """Mark the future's error as seen (an import that failed meanwhile no longer awaits its file)."""
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


class _NotFirst(Exception):
    """The first chunk cannot be imported while the file is read: the statement was claimed before, or
    its first lines read whole differ from the ones read first."""


async def _first_chunk(
    pool: asyncpg.Pool,
    tenant_id: str,
    head: Statement,
    parsing: asyncio.Future[list[Statement]],
    sha256: str,
    filename: str | None,
    match: Matcher,
    chunk: int,
) -> dict[str, Any] | None:
    """The file's first statement claimed and its first chunk imported while the rest of the file is
    read (`head`: the statement with those lines), in one transaction that commits once the file is
    read whole and valid: a bad file rolls it back (and raises its StatementError), so it still
    changes nothing. The statement's row, or None when nothing was done (claimed before, by an earlier
    or a concurrent import: `_claim` sees to it; or the lines read whole differ from the first ones,
    which a bank reference used twice in the statement does to their keys)."""
    row = _statement_row(tenant_id, head, sha256, 1, filename)
    part = list(enumerate(head.lines, 1))
    try:
        async with pool.acquire() as conn, conn.transaction():
            acknowledged_at = await repo.acknowledge_time(conn)  # the fence first, before any lock
            with step("store"):
                if not await statement_repo.claim_statement(conn, row):
                    raise _NotFirst
            with step("store"), collector_paused():
                counts = await _chunk(conn, row["statement_id"], tenant_id, part, match, acknowledged_at)
            with step("parse"):
                s = (await parsing)[0]
            if (s.statement_ref, s.account, s.currency, s.lines[: len(part)]) != (
                head.statement_ref,
                head.account,
                head.currency,
                head.lines,
            ):
                raise _NotFirst
            with step("store"):
                await statement_repo.count_statement(conn, row["statement_id"], len(s.lines), len(s.credits))
                await statement_repo.advance_statement(conn, row["statement_id"], len(part), counts, utcnow())
    except _NotFirst:
        return None
    row.update(lines=len(s.lines), credits=len(s.credits))
    _claimed(row)
    log.info(
        "reconciliation.statement.chunk_imported", statement_id=row["statement_id"], lines_done=len(part), **counts
    )
    if len(part) >= len(s.lines):
        log.info("reconciliation.statement.imported", statement_id=row["statement_id"], tenant_id=tenant_id)
    return row


def _statement_row(tenant_id: str, s: Statement, sha256: str, position: int, filename: str | None) -> dict[str, Any]:
    return {
        "statement_id": new_id("stm"),
        "tenant_id": tenant_id,
        "format": s.format,
        "filename": filename,
        "file_sha256": sha256,
        "file_position": position,
        "account": s.account,
        "bank_statement_id": s.statement_ref,
        "currency": s.currency,
        "opening_balance": s.opening_balance,
        "closing_balance": s.closing_balance,
        "lines": len(s.lines),
        "credits": len(s.credits),
        "imported_at": utcnow(),
    }


def _claimed(row: dict[str, Any]) -> None:
    log.info(
        "reconciliation.statement.claimed",
        statement_id=row["statement_id"],
        tenant_id=row["tenant_id"],
        format=row["format"],
        account=row["account"],
        bank_statement_id=row["bank_statement_id"],
        lines=row["lines"],
        credits=row["credits"],
    )


async def _claim(
    pool: asyncpg.Pool, tenant_id: str, s: Statement, sha256: str, position: int, filename: str | None
) -> tuple[dict[str, Any] | asyncpg.Record, bool]:
    """The statement's row, new or found; True when an earlier import finished it (a duplicate)."""
    row = _statement_row(tenant_id, s, sha256, position, filename)
    if await statement_repo.claim_statement(pool, row):
        _claimed(row)
        return row, False
    found = await statement_repo.statement_by_bank_id(pool, tenant_id, s.account, s.statement_ref)
    duplicate = found["status"] == "imported"
    log.info(
        "reconciliation.statement.duplicate" if duplicate else "reconciliation.statement.resumed",
        statement_id=found["statement_id"],
        tenant_id=tenant_id,
        lines_done=found["lines_done"],
    )
    return found, duplicate


async def _import_lines(
    pool: asyncpg.Pool, statement_id: str, tenant_id: str, s: Statement, match: Matcher, chunk: int
) -> None:
    while True:
        with step("store"), collector_paused():  # see statements.collector: a chunk makes ~10^5 objects
            done = await _import_chunk(pool, statement_id, tenant_id, s, match, chunk)
        if done is None:  # imported meanwhile (another import of the same file)
            return
        if done:
            log.info("reconciliation.statement.imported", statement_id=statement_id, tenant_id=tenant_id)
            return


async def _import_chunk(
    pool: asyncpg.Pool, statement_id: str, tenant_id: str, s: Statement, match: Matcher, chunk: int
) -> bool | None:
    """The next chunk of lines, one transaction: True when it was the last, None if none was left."""
    async with pool.acquire() as conn, conn.transaction():
        acknowledged_at = await repo.acknowledge_time(conn)  # the fence first, before any lock
        row = await statement_repo.lock_statement(conn, statement_id)
        start = row["lines_done"]
        if row["status"] == "imported":
            return None
        part = list(enumerate(s.lines[start : start + chunk], start + 1))
        counts = dict.fromkeys(("matched", "unmatched", "skipped", "duplicates"), 0)
        if part:  # none: a statement without entries (balances only) is imported as it is
            counts = await _chunk(conn, statement_id, tenant_id, part, match, acknowledged_at)
        await statement_repo.advance_statement(conn, statement_id, start + len(part), counts, utcnow())
    log.info(
        "reconciliation.statement.chunk_imported", statement_id=statement_id, lines_done=start + len(part), **counts
    )
    return start + len(part) >= len(s.lines)


async def _chunk(
    conn: asyncpg.Connection,
    statement_id: str,
    tenant_id: str,
    part: list[tuple[int, StatementLine]],
    match: Matcher,
    acknowledged_at: datetime,
) -> dict[str, int]:
    claim = statement_repo.claim_line_keys(conn, tenant_id, statement_id, [ln.key for _, ln in part])
    async with meanwhile(claim) as claimed:  # the credit lines' payments built while their keys are claimed
        credits = [(n, line) for n, line in part if line.is_credit and line.amount > 0]
        built = {
            position: _payment(tenant_id, statement_id, line, acknowledged_at, payment_id)
            for (position, line), payment_id in zip(credits, new_ids("pay", len(credits)), strict=True)
        }
    new_keys = claimed.result()
    payments = {position: p for position, p in built.items() if p.source_reference in new_keys}
    with step("match"):
        outcomes = list(await match(conn, list(payments.values()))) if payments else []
    by_payment = {o.payment_id: o for o in outcomes}
    counts = {"matched": 0, "unmatched": 0, "skipped": 0, "duplicates": 0}
    rows, paid = [], []  # paid: (row, payment id, outcome), their invoice ids filled once read
    async with meanwhile(statement_repo.allocated_invoices(conn, list(by_payment))) as read:
        for position, line in part:  # the line rows built while the allocations are read
            payment, outcome, note = payments.get(position), None, line.note
            if line.key not in new_keys:
                status, note = DUPLICATE, "seen in an earlier statement"
                counts["duplicates"] += 1
            elif payment is None:
                status, note = SKIPPED, note or "zero amount"
                counts["skipped"] += 1
            else:
                outcome = by_payment.get(payment.payment_id)
                status = outcome.status if outcome else "unmatched"
                counts["matched" if status in MATCHED else "unmatched"] += 1
            row = _line_row(position, line, status, note, payment, None)
            if payment is not None:
                paid.append((row, payment.payment_id, outcome))
            rows.append(row)
    allocated = read.result()
    for row, payment_id, outcome in paid:
        row["invoice_ids"] = " ".join(allocated.get(payment_id) or _invoice_ids(outcome)) or None
    await statement_repo.insert_lines(conn, statement_id, tenant_id, rows)
    return counts


def _invoice_ids(outcome: Any) -> list[str]:
    """The invoices an outcome names: all of an allocation's (`invoice_ids`), or its one `invoice_id`."""
    if outcome is None:
        return []
    many = getattr(outcome, "invoice_ids", None)
    if many:
        return list(many)
    return [outcome.invoice_id] if getattr(outcome, "invoice_id", None) else []


_NO_KEYS = MatchKeys()  # a bank line names no invoice by key (immutable: one for all)


@lru_cache(maxsize=64)
def _midnight(day: date) -> datetime:
    """The day's start in UTC (a statement's lines share a few booking days)."""
    return datetime.combine(day, time(), UTC)


# IncomingPayment's defaults (payment_id's factory aside: a line's payment is given its id)
_PAYMENT_DEFAULTS = {f.name: f.default for f in fields(IncomingPayment) if f.default is not MISSING}


def _payment(
    tenant_id: str, statement_id: str, line: StatementLine, acknowledged_at: datetime, payment_id: str
) -> IncomingPayment:
    """The line's payment: `IncomingPayment(...)` of these fields at a fifth of its cost (a frozen
    dataclass without __post_init__: its fields are its __dict__; a statement makes one per credit
    line). tests/unit/test_statement_payment.py holds it equal to the constructor's."""
    day = line.booking_date or line.value_date
    received_at = _midnight(day) if day else acknowledged_at
    payment = object.__new__(IncomingPayment)
    payment.__dict__.update(
        _PAYMENT_DEFAULTS,
        payment_id=payment_id,
        tenant_id=tenant_id,
        source="bank_statement",
        source_reference=line.key,
        currency=line.currency,
        amount=line.amount,
        received_at=min(received_at, acknowledged_at),
        keys=_NO_KEYS,
        payer_name=line.payer_name,
        payer_account=line.payer_account,
        remittance=line.remittance,
        creditor_reference=line.creditor_reference,
        statement_id=statement_id,
        acknowledged_at=acknowledged_at,
    )
    return payment


def _line_row(
    position: int,
    line: StatementLine,
    status: str,
    note: str | None,
    payment: IncomingPayment | None,
    invoice_ids: str | None,
) -> dict[str, Any]:
    return {
        "position": position,
        "line_key": line.key,
        "kind": line.kind,
        "status": status,
        "amount": line.amount,
        "currency": line.currency,
        "booking_date": line.booking_date,
        "value_date": line.value_date,
        "payer_name": line.payer_name,
        "payer_account": line.payer_account,
        "remittance": line.remittance,
        "creditor_reference": line.creditor_reference,
        "end_to_end_id": line.end_to_end_id,
        "bank_reference": line.bank_reference,
        "note": note,
        "payment_id": payment.payment_id if payment else None,
        "invoice_ids": invoice_ids,
    }
