"""The scheduler side of the model: its consumer (positions, inbox, committed offsets, crashes), the
watermark statements it keeps, pauses and resumes, deadlines, and the firing query with the gate of
every acknowledging service. Each method names the real statement or handler it models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .acknowledgers import (
    CUSTOMER_OF,
    CUSTOMERS,
    INVOICES,
    INVOICES_OF,
    PAYMENTS,
    RECONCILIATION,
    SOURCES,
    WATERMARKS,
    Event,
    World,
)

# Stage times of each invoice's policy (the late invoice i2 is planned when its InvoiceIssued is applied).
STAGES = {"i1": (4, 12, 24), "i2": (10, 22), "i3": (6, 18)}


class Violation(AssertionError):
    """A promise of the cancel guarantee broken in the model."""


class StopOvertaken(Violation):
    """A stage scheduled at or after an active stop's acknowledgement fired."""


class FiredTwice(Violation):
    pass


class StageLost(Violation):
    pass


class WrongVerdict(Violation):
    """A promise judged broken although it was paid by its deadline."""


@dataclass
class Timer:
    scheduled_at: int
    state: str = "scheduled"  # scheduled | paused | fired | cancelled


@dataclass
class Invoice:
    """The scheduler's invoices row and its timers."""

    known: bool = False  # its InvoiceIssued is applied (planned)
    closed: bool = False  # void, written off
    settled: bool = False
    last_payment_at: int | None = None
    payments: list[tuple[int, int]] = field(default_factory=list)  # (acknowledged_at, amount)
    pauses: set[str] = field(default_factory=set)
    timers: dict[str, Timer] = field(default_factory=dict)


@dataclass
class Promise:
    invoice: str
    amount: int
    acknowledged_at: int
    deadline: int
    applied_from: int = 0  # payments of the invoice applied before this promise was
    status: str = "pending"  # pending | kept | broken


class Scheduler:
    def __init__(self, world: World):
        self.world = world
        self.mutants = world.mutants
        parts = [k for k in world.broker.log if k[0] in (PAYMENTS, INVOICES, CUSTOMERS, WATERMARKS)]
        self.fetch = {k: 0 for k in parts}  # the consumer's in-memory position
        self.committed = {k: 0 for k in parts}  # Kafka's committed offsets
        self.positions: dict[tuple[str, int], int] = {}  # consumer_positions (in the database)
        self.inbox: set[int] = set()
        self.statements: list[tuple[str, int, dict[tuple[str, int], int]]] = []  # payment_watermarks & co
        self.invoices = {inv: Invoice() for inv in CUSTOMER_OF}
        self.customer_holds: dict[str, set[str]] = {c: set() for c in INVOICES_OF}
        self.ended_holds: set[str] = set()
        self.holds: dict[str, tuple[tuple[str, ...], int | None]] = {}  # active: invoices covered, ends_at
        self.promises: dict[str, Promise] = {}
        self.fired: list[tuple[str, str, int, int]] = []  # (invoice, stage, scheduled_at, seq)
        for inv in ("i1", "i3"):  # issued and planned before the run
            self.plan(inv)

    # --- the consumer (dunning.consumer.ConsumerRunner._apply_batch) -----------------------------------
    def consume(self, part: tuple[str, int], count: int) -> None:
        """One batch in one transaction: inbox (dedup by event id), the handlers, consumer_positions."""
        start = self.fetch[part]
        for message in self.world.broker.log[part][start : start + count]:
            if part[0] == WATERMARKS:
                self.statements.append(message)  # the watermark handler skips the inbox
            elif message.event_id not in self.inbox:
                self.inbox.add(message.event_id)
                self.handle(message)
        self.fetch[part] = start + len(self.world.broker.log[part][start : start + count])
        if part[0] != WATERMARKS:
            self.positions[part] = max(self.positions.get(part, 0), self.fetch[part])

    def commit_offsets(self) -> None:
        """consumer.commit(offsets), after the database commit."""
        self.committed = dict(self.fetch)

    def crash(self) -> None:
        """A SIGKILL: the database keeps what was committed, the consumer restarts from Kafka's offsets."""
        self.fetch = dict(self.committed)

    # --- the handler table -----------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        d, kind = event.data, event.kind
        if kind in ("payment", "credit_note"):
            self.apply_payment(event.key, d)
        elif kind == "issue":
            self.plan(event.key)
        elif kind in ("void", "write_off"):
            self.stop(event.key, closed=True)
        elif kind == "hold":
            hold, invoice = d["hold"], d.get("invoice")
            if hold in self.ended_holds:
                return
            covers = (invoice,) if invoice else INVOICES_OF[d["customer"]]
            self.holds[hold] = (covers, None if d.get("ends_in") is None else d["at"] + d["ends_in"])
            if invoice:
                self.pause(invoice, f"hold:{hold}")
            else:  # a customer's pause row: its invoices now, and those planned later
                self.customer_holds[d["customer"]].add(hold)
                for inv in covers:
                    self.pause(inv, None)
        elif kind == "release":
            self.end_hold(d["hold"])
        elif kind == "dispute_open":
            self.pause(event.key, f"dispute:{event.key}")
        elif kind == "dispute_resolve":
            self.unpause(event.key, f"dispute:{event.key}")
        elif kind == "promise":
            self.promises[event.key] = Promise(
                event.key, d["amount"], d["at"], d["at"] + d["days"], len(self.invoices[event.key].payments)
            )
            self.pause(event.key, f"promise:{event.key}")
            self.check_promise(event.key)
        else:
            raise AssertionError(kind)

    def plan(self, inv: str) -> None:
        """planning.plan_invoice_row: timers for the policy's stages; paused under an active pause (a
        customer hold applied before the invoice), cancelled if the invoice is already stopped."""
        invoice = self.invoices[inv]
        invoice.known = True
        paused = self.paused(inv) and "plan_under_hold" not in self.mutants
        state = "cancelled" if invoice.closed or invoice.settled else "paused" if paused else "scheduled"
        for n, at in enumerate(STAGES[inv]):
            invoice.timers[f"s{n}"] = Timer(at, state)

    def apply_payment(self, inv: str, d: dict[str, Any]) -> None:
        """repository.invoices._APPLY_PAYMENT: a settling payment settles whatever its age (mutant
        `stale_settle_dropped`: the old rule, which skipped one older than the last applied); a
        settled invoice stays settled; the money is kept for promises (money_applied)."""
        invoice = self.invoices[inv]
        invoice.payments.append((d["at"], d["amount"]))
        last = invoice.last_payment_at
        newer = last is None or last < d["at"]
        if newer:
            invoice.last_payment_at = d["at"]
        if d["settled"] and (newer or "stale_settle_dropped" not in self.mutants):
            self.stop(inv, settled=True)
        self.check_promise(inv)

    def stop(self, inv: str, *, closed: bool = False, settled: bool = False) -> None:
        """repository.invoices.stop_statement: under the invoice's row lock, every timer not yet fired
        (scheduled or paused) is cancelled."""
        invoice = self.invoices[inv]
        invoice.closed |= closed
        invoice.settled |= settled
        for timer in invoice.timers.values():
            if timer.state in ("scheduled", "paused"):
                timer.state = "cancelled"

    # --- pauses and resumes ----------------------------------------------------------------------------
    def paused(self, inv: str) -> bool:
        """A live pause of the invoice, or of its customer (the pauses table)."""
        return bool(self.invoices[inv].pauses or self.customer_holds[CUSTOMER_OF[inv]])

    def pause(self, inv: str, reason: str | None) -> None:
        """A pause applied under the invoice's row lock: scheduled timers become paused. `reason`: the
        invoice's own pause (None: its customer's, kept in customer_holds)."""
        invoice = self.invoices[inv]
        if reason:
            invoice.pauses.add(reason)
        for timer in invoice.timers.values():
            if timer.state == "scheduled":
                timer.state = "paused"

    def unpause(self, inv: str, reason: str | None, *, first: str | None = None) -> None:
        """A pause ends; with none left the invoice resumes (`spaced`): the first owed stage at the resume
        instant, the others keep their spacing after it. `first`: a stage to send first (promise_broken)."""
        invoice = self.invoices[inv]
        invoice.pauses.discard(reason or "")
        if invoice.closed or invoice.settled or not invoice.known:
            return
        if self.paused(inv) and "resume_early" not in self.mutants:
            if first:
                invoice.timers[first] = Timer(self.world.now, "paused")
            return
        now = self.world.now
        paused = sorted((t for t in invoice.timers.values() if t.state == "paused"), key=lambda t: t.scheduled_at)
        shift = max(0, now - paused[0].scheduled_at) if paused else 0
        for timer in paused:
            timer.scheduled_at += shift
            timer.state = "scheduled"
        if first:
            invoice.timers[first] = Timer(now)

    def end_hold(self, hold: str) -> None:
        self.ended_holds.add(hold)
        covers, _ = self.holds.pop(hold, ((), None))
        customer = any(hold in holds for holds in self.customer_holds.values())
        for holds in self.customer_holds.values():
            holds.discard(hold)
        for inv in covers:
            self.unpause(inv, None if customer else f"hold:{hold}")

    def expire_holds(self) -> None:
        """A hold's ends_at passed: it ends by itself (reason hold_expired)."""
        for hold, (_, ends_at) in sorted(self.holds.items()):
            if ends_at is not None and ends_at <= self.world.now:
                self.world.end_stop(f"hold:{hold}")
                self.end_hold(hold)

    def check_promise(self, inv: str) -> None:
        """Paid at least the amount since the promise, acknowledged by its deadline: kept, the pause ends."""
        promise = self.promises.get(inv)
        if promise is None or promise.status != "pending":
            return
        payments = self.invoices[inv].payments
        if "promise_paid_from_apply" in self.mutants:  # pauses.paid: added only while the pause is active
            payments = payments[promise.applied_from :]
        paid = sum(a for at, a in payments if promise.acknowledged_at <= at <= promise.deadline)
        if paid >= promise.amount:
            promise.status = "kept"
            self.world.end_stop(f"promise:{inv}")
            self.unpause(inv, f"promise:{inv}")

    def judge_deadlines(self) -> None:
        """At a promise's deadline D, once the gate's watermark is at or past D (so every payment
        acknowledged by D is applied): not kept means broken; resume with a promise_broken stage."""
        gate = self.gate()
        for inv, promise in sorted(self.promises.items()):
            if promise.status != "pending" or promise.deadline > self.world.now:
                continue
            if "deadline_ungated" not in self.mutants and (gate is None or gate < promise.deadline):
                continue
            promise.status = "broken"
            self.world.end_stop(f"promise:{inv}")
            self.unpause(inv, f"promise:{inv}", first="promise_broken")

    # --- the firing query (repository.firing._GATE and _FIRE_DUE) --------------------------------------
    def gate(self) -> int | None:
        """Per source, the greatest watermark among its usable statements (offsets all applied); the gate
        is the least of them over SCHEDULER_GATE_SOURCES (None: a source has no usable statement)."""
        sources = [RECONCILIATION] if "payments_gate_only" in self.mutants else list(SOURCES)
        best: dict[str, int] = {}
        for source, watermark, offsets in self.statements:
            usable = "positions_unchecked" in self.mutants or all(
                self.positions.get(part, 0) >= end for part, end in offsets.items()
            )
            if usable and source in sources:
                best[source] = max(best.get(source, watermark), watermark)
        return min(best.values()) if len(best) == len(sources) else None

    def fire(self, limit: int) -> list[tuple[str, str, int]]:
        """Claim up to `limit` timers, earliest first: scheduled, due (at the transaction's now()), invoice
        open and not settled, no live pause of the invoice or its customer, and scheduled_at at or before
        the gate; each is set fired (StageEscalated to the outbox)."""
        gate, now = self.gate(), self.world.read_clock()
        check_pauses = "fire_ignores_pauses" not in self.mutants
        due = [
            (timer.scheduled_at, inv, stage)
            for inv, invoice in sorted(self.invoices.items())
            if not (invoice.closed or invoice.settled) and not (check_pauses and self.paused(inv))
            for stage, timer in sorted(invoice.timers.items())
            if timer.state == "scheduled"
            and timer.scheduled_at <= now
            and ("gate_off" in self.mutants or (gate is not None and timer.scheduled_at <= gate))
        ]
        fired = []
        for at, inv, stage in sorted(due)[:limit]:
            self.invoices[inv].timers[stage].state = "fired"
            self.world.seq += 1
            self.fired.append((inv, stage, at, self.world.seq))
            fired.append((inv, stage, at))
        return fired

    # --- what the model checks -------------------------------------------------------------------------
    def check(self) -> None:
        """No stage scheduled at or after an active stop's acknowledgement fired; none fired twice; no
        promise judged broken that was paid by its deadline."""
        seen = set()
        for inv, stage, at, seq in self.fired:
            if (inv, stage) in seen:
                raise FiredTwice(f"{inv}/{stage}")
            seen.add((inv, stage))
            for stop in self.world.stops.values():
                active = stop.ended_seq is None or seq < stop.ended_seq
                if inv in stop.invoices and stop.acknowledged_at <= at and active:
                    raise StopOvertaken(
                        f"{inv}/{stage} scheduled at {at} fired (step {seq}) under {stop.name}"
                        f" acknowledged at {stop.acknowledged_at} (step {stop.committed_seq})"
                    )
        for inv, promise in self.promises.items():
            paid = self.world.paid_towards(inv, promise.acknowledged_at, promise.deadline)
            if promise.status == "broken" and paid >= promise.amount:
                raise WrongVerdict(f"promise on {inv} judged broken, {paid} paid by {promise.deadline}")

    def check_none_lost(self) -> None:
        """At quiescence, every stage of an invoice with no terminal stop fired (exactly once: check())."""
        terminal = {inv for s in self.world.stops.values() if s.ended_seq is None for inv in s.invoices}
        for inv, invoice in sorted(self.invoices.items()):
            if inv in terminal or not invoice.known:
                continue
            for stage, timer in sorted(invoice.timers.items()):
                if timer.state != "fired":
                    raise StageLost(f"{inv}/{stage} {timer.state} at quiescence (pauses {sorted(invoice.pauses)})")
