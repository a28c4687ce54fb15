"""Matching a batch of payments that name no invoice by key (a bank statement's credit lines, a
processor's payments with only a remittance): batch candidate queries per tenant (load_book: the
invoices the references name, then the customers of the rest), the rules of matching.py in memory,
then the matches allocated in runs of allocations_batch.allocate_many (the fast path of
allocations.allocate; a run is written while the next payments are decided), and the rest held in
the queue with suggestions in one statement (hold_unmatched_many).

Runs in the caller's transaction. Payments without an acknowledgement time get one, read once
inside the payments watermark's fence (call this first in the transaction, as reconcile.acknowledging
says). Within a batch, earlier payments consume the open balances later ones see (the book), so two
lines never both take the same open amount; allocation still locks each invoice and caps at its
real balance, so a concurrent payment elsewhere only ever shortens an allocation (and a credit it
leaves is seen by the decisions after its run).
"""

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

import asyncpg

from dunning.logging import get_logger
from dunning_reconciliation import allocations_batch
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import UNMATCHED, IncomingPayment, MatchKeys, Outcome
from dunning_reconciliation.matching import (
    Book,
    Decision,
    Named,
    OpenInvoice,
    References,
    compact,
    decide,
    is_creditor_reference,
    name_words,
    named_by_reference,
    names_open,
    normalise_token,
    references_in,
    suggest,
)
from dunning_reconciliation.repository import matching as match_repo
from dunning_reconciliation.stopwatch import step

log = get_logger(__name__)


def normalise_account(account: str | None) -> str | None:
    """An IBAN / account as stored in payer_accounts: upper case, no spaces."""
    text = "".join((account or "").split()).upper()
    return text or None


def _account_normalised(p: IncomingPayment) -> IncomingPayment:
    account = normalise_account(p.payer_account)
    return p if account == p.payer_account else replace(p, payer_account=account)


def _lower_name(name: str | None) -> str | None:
    """A payer name as the candidate query compares it with lower(customer_name)."""
    text = " ".join((name or "").lower().split())
    return text or None


def _structured(p: IncomingPayment) -> tuple[list[str], list[str]]:
    """A structured reference as (creditor reference bodies, tokens)."""
    if not p.creditor_reference:
        return [], []
    ref = compact(p.creditor_reference)
    if is_creditor_reference(ref):
        return [ref[4:]], []
    return [], [normalise_token(p.creditor_reference)]


async def load_book(
    conn: asyncpg.Connection, tenant_id: str, payments: Sequence[IncomingPayment], refs: Sequence[References]
) -> tuple[Book, list[Named | None]]:
    """The open invoices the tenant's payments may pay, and their payers' known accounts, read in two
    batch queries of one statement: first the invoices their references name, then, for the payments
    no reference decides, their customers' invoices (by account, customer id, name). (One query for
    both would read every named customer's invoices: the payer of a line with a reference is named
    too.) With the book, per payment: the invoices its references name (named_by_reference), or None
    when by_reference found none (so `decide` need not look again)."""
    tokens: set[str] = set()
    bodies: set[str] = set()
    for p, r in zip(payments, refs, strict=True):
        tokens.update(r.tokens)
        bodies.update(rf[4:] for rf in r.creditor_references)
        structured_bodies, structured_tokens = _structured(p)
        bodies.update(structured_bodies)
        tokens.update(structured_tokens)
    book = Book()
    if tokens or bodies:
        rows = await match_repo.candidates(conn, tenant_id, tokens=sorted(tokens), compact_numbers=sorted(bodies))
        book = Book.of([_open_invoice(r) for r in rows])
    referenced: list[Named | None] = []
    for p, r in zip(payments, refs, strict=True):
        named = named_by_reference(p, book, r) if r.tokens or r.creditor_references or p.creditor_reference else None
        referenced.append(named if named is not None and names_open(p, book, named) else None)
    rest = [p for p, named in zip(payments, referenced, strict=True) if named is None]
    if rest:
        rows = await match_repo.candidates(
            conn,
            tenant_id,
            customer_ids=sorted({p.customer_id for p in rest if p.customer_id}),
            names=sorted({n for p in rest if (n := _lower_name(p.payer_name))}),
            accounts=sorted({a for p in rest if (a := p.payer_account)}),
        )
        book.payer_accounts.update((r["account"], r["customer_id"]) for r in rows if r["account"] is not None)
        for r in rows:
            if r["account"] is None:
                book.add(_open_invoice(r), by_keys=False)
    return book, referenced


def _open_invoice(r: asyncpg.Record) -> OpenInvoice:
    """A candidate row (invoice_id, number, external_id, currency, balance, due_date, customer_id,
    customer_name: OpenInvoice's fields in order) as an OpenInvoice."""
    return OpenInvoice(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


def _payer_customer(p: IncomingPayment, decision: Decision, book: Book) -> str | None:
    """The customer an excess is credited to: the payment's own, else the one all its invoices share."""
    if p.customer_id:
        return p.customer_id
    customers = {book.invoices[a.invoice_id].customer_id for a in decision.allocations}
    return customers.pop() if len(customers) == 1 else None


def _with_customer(p: IncomingPayment, customer_id: str) -> IncomingPayment:
    """`dataclasses.replace(p, customer_id=customer_id)` at a sixth of its cost (a frozen dataclass
    without __post_init__: its fields are its __dict__); each matched line of a statement takes one."""
    payment = object.__new__(IncomingPayment)
    payment.__dict__.update(p.__dict__, customer_id=customer_id)
    return payment


def _whole(p: IncomingPayment, decision: Decision) -> bool:
    """The decision allocates all of p (no excess to become customer credit)."""
    return sum((a.amount for a in decision.allocations), Decimal(0)) == p.amount


Pending = list[tuple[int, IncomingPayment, Decision, str | None]]


class _Allocator:
    """The decided payments allocated in runs of allocate_many, in order, one run at a time on the
    connection: a run is written in the background while the next payments are decided (the book
    already counts what a decision takes), so PostgreSQL and the rules work at once. A payment that
    leaves an excess is allocated before the next is decided: its credit may pay more of its
    customer's invoices, and the book reads their balances again."""

    # payments per run: a statement chunk's matches (5,000 lines) make one run, written while the queue's
    # suggestions are worked out; on the statements bench, runs of 1,000 cost more in PostgreSQL and
    # Python (each run's locks, reads and four writes, planned again) than their overlap with the
    # decisions saved (median of 5: 4,360 lines/s and 4.4 CPU seconds against 4,000 and 5.0)
    RUN = 5000
    YIELD_EVERY = 250  # decisions between two chances for the running run to send its next statement

    def __init__(self, conn: asyncpg.Connection, outcomes: list[Outcome | None], book: Book) -> None:
        self.conn, self.outcomes, self.book = conn, outcomes, book
        self.pending: Pending = []
        self.running: asyncio.Future | None = None

    async def add(self, item: tuple[int, IncomingPayment, Decision, str | None], *, whole: bool) -> None:
        self.pending.append(item)
        if not whole:
            await self.start()
            await self.wait()
        elif len(self.pending) >= self.RUN:
            await self.start()
        elif self.running is not None and len(self.pending) % self.YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def start(self) -> None:
        """Start a run of the pending payments, once the run before it is written."""
        await self.wait()
        run, self.pending = self.pending, []
        if run:
            self.running = asyncio.ensure_future(self._run(run))
            await asyncio.sleep(0)  # its first statement is sent

    async def wait(self) -> None:
        """Until the running run is written (its error raised here)."""
        if self.running is not None:
            running, self.running = self.running, None
            with step("allocate"):
                await running

    async def _run(self, run: Pending) -> None:
        invoices = self.book.invoices  # every invoice a decision allocates to is in the book, with its customer
        customers = {c for _, _, d, _ in run for a in d.allocations if (c := invoices[a.invoice_id].customer_id)}
        items = [(p, d.allocations) for _, p, d, _ in run]
        results = await allocations_batch.allocate_many(self.conn, items, customers=customers)
        for (n, p, decision, customer), result in zip(run, results, strict=True):
            self.outcomes[n] = Outcome(result.status, p.payment_id, decision.allocations[-1].invoice_id, result.settled)
            if result.credited > 0 and customer:
                balances = await match_repo.customer_balances(self.conn, p.tenant_id, customer, p.currency)
                for invoice_id, balance in balances.items():
                    self.book.set_balance(invoice_id, balance)


async def _complete_book(conn: asyncpg.Connection, held: list[tuple[IncomingPayment, References]], book: Book) -> None:
    """The book completed, for the unmatched payments' suggestions, by the open invoices of their
    amounts and of customers whose name shares a word with a payer's. (Read before the batch's last
    run is written: that run pays only invoices the book has, and the book skips those it has.)"""
    tenant_id = held[0][0].tenant_id
    amounts = sorted({(p.currency, p.amount) for p, _ in held})
    rows = list(await match_repo.candidates(conn, tenant_id, amounts=amounts))
    if words := sorted(set().union(*(name_words(p.payer_name) for p, _ in held))):
        rows += await match_repo.suggestion_candidates(conn, tenant_id, " | ".join(words))
    for r in rows:
        if r[0] is not None:  # not a payer account's row
            book.add(_open_invoice(r))


def _waiting_for(p: IncomingPayment, refs: References) -> IncomingPayment:
    """p with the references of its remittance as its match keys (tokens of 3+ characters with a
    digit): an invoice issued later with such a number or external id takes it (reconcile's late
    match). Best effort: an invoice issued while this batch runs leaves it in the queue."""
    if p.keys.invoice_id or p.keys.external_ids or p.keys.numbers:
        return p
    named = [t for t in refs.tokens if len(t) >= 3 and any(c.isdigit() for c in t)]
    return replace(p, keys=MatchKeys.of(None, named, named)) if named else p


async def match_and_allocate(conn: asyncpg.Connection, payments: Sequence[IncomingPayment]) -> list[Outcome]:
    """Match each payment (in the order given) and allocate it, or hold it in the unmatched queue with
    suggestions. One Outcome per payment, in order."""
    if not payments:
        return []
    if any(p.acknowledged_at is None for p in payments):
        acknowledged_at = await repo.acknowledge_time(conn)
        payments = [p if p.acknowledged_at else replace(p, acknowledged_at=acknowledged_at) for p in payments]
    payments = [_account_normalised(p) for p in payments]
    outcomes: list[Outcome | None] = [None] * len(payments)
    by_tenant: dict[str, list[int]] = {}
    for n, p in enumerate(payments):
        by_tenant.setdefault(p.tenant_id, []).append(n)
    for tenant_id, positions in by_tenant.items():
        batch = [payments[n] for n in positions]
        refs = [references_in(p.remittance) for p in batch]
        book, referenced = await load_book(conn, tenant_id, batch, refs)
        rules: Counter[str] = Counter()
        held: list[tuple[IncomingPayment, References]] = []
        allocator = _Allocator(conn, outcomes, book)
        waiting: list[tuple[IncomingPayment, list[dict]]] = []
        try:
            for n, p, r, named in zip(positions, batch, refs, referenced, strict=True):
                decision = decide(p, book, r, suggestions=False, references=named is not None, named=named)
                rules[decision.rule or "unmatched"] += 1
                if decision.allocations:
                    customer = _payer_customer(p, decision, book)
                    if customer and not p.customer_id:
                        p = _with_customer(p, customer)
                    book.consume(decision.allocations)
                    await allocator.add((n, p, decision, customer), whole=_whole(p, decision))
                else:
                    held.append((p, r))
                    outcomes[n] = Outcome(UNMATCHED, p.payment_id)
            await allocator.wait()
            if held:
                await _complete_book(conn, held, book)
            await allocator.start()
            # the queue's suggestions worked out while the last run is written, then held in one statement
            waiting = [(_waiting_for(p, refs), suggest(p, book, refs)) for p, refs in held]
        finally:
            await allocator.wait()  # the connection is free again, even after an error
        if waiting:
            with step("allocate"):
                await allocations_batch.hold_unmatched_many(conn, waiting)
        log.info("reconciliation.match.batch", tenant_id=tenant_id, payments=len(batch), **dict(rules))
    return [o for o in outcomes if o is not None]
