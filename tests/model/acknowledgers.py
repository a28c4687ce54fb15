"""The acknowledging side of the model: reconciliation and invoice-ingest, their transactions under the
shared fence, their outboxes and relays, the broker's partitions, and the watermark publishers.

Time is an integer clock (one tick is the real code's 1 µs epsilon); every step of the real code that
matters to the argument is one method here, named after the statement it models. Mutants (a set of
names, see MUTANTS) switch single steps to a wrong version. docs/model-checking.md maps each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EPS = 1  # dunning_reconciliation.watermark._EPSILON
BALANCE = 2  # every invoice's amount due, in units
PAYMENTS, INVOICES, CUSTOMERS, WATERMARKS = "payments", "invoices", "customers", "watermarks"
RECONCILIATION, INGEST = "reconciliation", "invoice-ingest"
# The services that acknowledge stops and the topics each one's statement covers (SCHEDULER_GATE_SOURCES).
SOURCES: dict[str, tuple[str, ...]] = {RECONCILIATION: (PAYMENTS,), INGEST: (INVOICES, CUSTOMERS)}
CUSTOMER_OF = {"i1": "c1", "i2": "c1", "i3": "c2"}
INVOICES_OF = {"c1": ("i1", "i2"), "c2": ("i3",)}
# Keys to partitions (2 per topic) and to outbox lanes (2): fixed, deliberately not aligned.
PARTITION = {"i1": 0, "i2": 1, "i3": 0, "c1": 0, "c2": 1}
LANE = {"i1": 1, "i2": 1, "i3": 0, "c1": 1, "c2": 0}
# Kinds of acknowledged facts: the topic (and key) each travels on, and whether it is a stop (taken
# under the fence: every acknowledging POST calls acknowledge_time first).
TOPIC_OF = {
    "payment": PAYMENTS,
    "credit_note": PAYMENTS,
    "void": INVOICES,
    "write_off": INVOICES,
    "dispute_open": INVOICES,
    "dispute_resolve": INVOICES,
    "promise": INVOICES,
    "issue": INVOICES,
    "hold": CUSTOMERS,
    "release": CUSTOMERS,
}
UNFENCED = {"issue"}  # InvoiceIssued is no stop: ingest writes it without the fence
SERVICE_OF = {"payment": RECONCILIATION, "credit_note": RECONCILIATION}

MUTANTS = {
    "gate_off": "the firing query ignores the gate (SCHEDULER_PAYMENTS_GATE=false)",
    "payments_gate_only": "the gate reads reconciliation's statements only (the gate before issue 9)",
    "fence_skipped": "the publisher ignores the fence's holders: F = T",
    "clock_before_fence": "an acknowledging transaction reads the clock before it joins the fence",
    "outbox_unbounded": "W is not bounded by the oldest row still waiting in the outbox: W = F",
    "positions_unchecked": "a statement is usable before its offsets are applied",
    "deadline_ungated": "a promise's deadline is judged at the clock, not under the gate",
    "resume_early": "ending one pause resumes the invoice although another pause is active",
    "plan_under_hold": "an invoice planned after its customer's hold was applied gets scheduled timers",
    "fire_ignores_pauses": "the firing query does not check the live pauses (the timers' states only)",
    # Two rules as the scheduler has them today (issue 9), which the model shows wrong:
    "stale_settle_dropped": "apply_payment drops a settling payment acknowledged before the last one applied",
    "promise_paid_from_apply": "a promise counts only payments applied after PromiseMade was",
}


def service_of(kind: str) -> str:
    return SERVICE_OF.get(kind, INGEST)


@dataclass(eq=False)
class Event:
    """One event as written to an outbox (its id survives republishing: the inbox dedups by it)."""

    event_id: int
    kind: str
    key: str
    data: dict[str, Any]


@dataclass(eq=False)
class Row:
    """An outbox row: `created_at` is the writing transaction's start (DEFAULT now())."""

    id: int
    event: Event
    topic: str
    lane: int
    created_at: int
    committed: bool = False


@dataclass(eq=False)
class Txn:
    """An acknowledging transaction: BEGIN (start), acknowledge_time (fence, then clock: acknowledged_at),
    the handler's writes under row locks (outbox row), COMMIT."""

    id: int
    kind: str
    params: dict[str, Any]
    start: int
    phase: str = "begun"  # begun | fenced | written
    acknowledged_at: int | None = None
    holds_fence: bool = False
    locks: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)


@dataclass
class Publisher:
    """One replica's watermark publisher, between the statements of one publish_once."""

    phase: str = "idle"  # idle | clocked | fenced | snapshotted
    clock: int = 0
    fence: int = 0
    watermark: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class Broker:
    """Topics of two partitions each; `watermarks` has one. A message is an Event (or a statement)."""

    def __init__(self) -> None:
        topics = (PAYMENTS, INVOICES, CUSTOMERS)
        self.log: dict[tuple[str, int], list[Any]] = {(t, p): [] for t in topics for p in (0, 1)}
        self.log[(WATERMARKS, 0)] = []

    def append(self, topic: str, partition: int, message: Any) -> int:
        self.log[(topic, partition)].append(message)
        return len(self.log[(topic, partition)]) - 1


class Acknowledger:
    """One acknowledging service: its transactions, outbox, relay lanes, published offsets, publishers,
    and what it has acknowledged (its domain state)."""

    def __init__(self, name: str, world: World):
        self.name = name
        self.world = world
        self.outbox: list[Row] = []
        self.in_flight: dict[int, list[tuple[Row, str, int, int]]] = {}  # lane -> (row, topic, partition, offset)
        self.published: dict[tuple[str, int], int] = {}  # published_offsets
        # Three replicas (the election is not needed for safety; the third publishes in one go).
        self.publishers = [Publisher(), Publisher(), Publisher()]

    # --- the relay (dunning.outbox.OutboxRelay.publish_once) -------------------------------------------
    def lane_rows(self, lane: int) -> list[Row]:
        """SELECT ... FROM outbox WHERE lane = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED (committed rows)."""
        return sorted((r for r in self.outbox if r.committed and r.lane == lane), key=lambda r: r.id)

    def relay_send(self, lane: int, count: int) -> None:
        """producer.send for the first `count` rows of the lane, in id order; the acks are kept."""
        sent = []
        for row in self.lane_rows(lane)[:count]:
            partition = PARTITION[row.event.key]
            sent.append((row, row.topic, partition, self.world.broker.append(row.topic, partition, row.event)))
        self.in_flight[lane] = sent

    def relay_finish(self, lane: int) -> None:
        """DELETE FROM outbox ... and _record_offsets (greatest), in the transaction that claimed the lane."""
        for row, topic, partition, offset in self.in_flight.pop(lane):
            self.outbox.remove(row)
            self.published[(topic, partition)] = max(self.published.get((topic, partition), 0), offset + 1)

    def relay_crash(self, lane: int) -> None:
        """The relay dies before its commit: rows stay (published again later), messages stay on the topic."""
        del self.in_flight[lane]

    # --- the watermark publisher (WatermarkPublisher.publish_once) -------------------------------------
    def publisher_step(self, replica: int) -> None:
        p, mutants = self.publishers[replica], self.world.mutants
        if p.phase == "idle":  # before = repository.clock(conn)
            p.clock, p.phase = self.world.read_clock(), "clocked"
        elif p.phase == "clocked":  # held = repository.fence_holders(conn)
            starts = [t.start for t in self.world.txns.values() if t.holds_fence and service_of(t.kind) == self.name]
            p.fence = p.clock if not starts or "fence_skipped" in mutants else min(p.clock, min(starts) - EPS)
            p.phase = "fenced"
        elif p.phase == "fenced":  # snap = repository.watermark_snapshot(...): one statement, committed rows
            waiting = [r.created_at for r in self.outbox if r.committed]
            bounded = waiting and "outbox_unbounded" not in mutants
            p.watermark = min(p.fence, min(waiting) - EPS) if bounded else p.fence
            p.offsets, p.phase = dict(self.published), "snapshotted"
        else:  # producer.send(watermarks_topic, statement)
            self.world.broker.append(WATERMARKS, 0, (self.name, p.watermark, dict(p.offsets)))
            p.phase = "idle"

    def publisher_crash(self, replica: int) -> None:
        self.publishers[replica] = Publisher()


@dataclass
class Stop:
    """The ground truth of one acknowledged stop: what it covers, when it was acknowledged, whether
    and when (step number) it ended. Terminal stops never end."""

    name: str
    kind: str
    invoices: tuple[str, ...]
    acknowledged_at: int
    committed_seq: int
    ended_seq: int | None = None


@dataclass
class Payment:
    """A committed payment or credit note as reconciliation acknowledged it."""

    invoice: str
    amount: int
    acknowledged_at: int
    settled: bool


class World:
    """Everything but the scheduler: the clock, the broker, both acknowledging services, their
    transactions and domain state, and the ground truth the invariants are checked against."""

    def __init__(self, mutants: frozenset[str]):
        unknown = mutants - set(MUTANTS)
        assert not unknown, unknown
        self.mutants = mutants
        self.now = 0
        self.seq = 0  # a step counter: orders fires against stops ending
        self.broker = Broker()
        self.services = {name: Acknowledger(name, self) for name in SOURCES}
        self.txns: dict[int, Txn] = {}
        self.next_id = 1
        self.locks: dict[str, int] = {}
        # reconciliation
        self.balance = {"i1": BALANCE, "i3": BALANCE}
        self.payments: list[Payment] = []
        # invoice-ingest
        self.status = {"i1": "open", "i3": "open"}  # i2 is issued by a rule
        self.holds: dict[str, str] = {}  # hold id -> active | released
        self.disputes: dict[str, str] = {}  # invoice -> open | resolved
        self.promised: set[str] = set()  # one promise per invoice
        self.stops: dict[str, Stop] = {}

    def read_clock(self) -> int:
        """clock_timestamp() or a transaction's start: reads in causal order are strictly increasing
        (a statement takes at least a microsecond; the argument needs a clock that never steps back)."""
        self.now += 1
        return self.now - 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # --- acknowledging transactions --------------------------------------------------------------------
    def begin(self, kind: str, params: dict[str, Any]) -> Txn:
        """BEGIN: the transaction's start (xact_start, and now() for its outbox rows' created_at)."""
        txn = Txn(self.new_id(), kind, params, self.read_clock())
        if "clock_before_fence" in self.mutants and kind not in UNFENCED:
            txn.acknowledged_at = self.read_clock()  # the mutant reads the clock first
        self.txns[txn.id] = txn
        return txn

    def acknowledge_time(self, txn: Txn) -> None:
        """SELECT clock_timestamp() FROM pg_advisory_xact_lock_shared(ACK_FENCE): fence, then clock."""
        if txn.kind not in UNFENCED:
            txn.holds_fence = True
            if txn.acknowledged_at is None:
                txn.acknowledged_at = self.read_clock()
        txn.phase = "fenced"

    def lock_targets(self, txn: Txn) -> tuple[str, ...]:
        p = txn.params
        return tuple(sorted({p[k] for k in ("invoice", "customer") if p.get(k)}))

    def can_write(self, txn: Txn) -> bool:
        return all(self.locks.get(name, txn.id) == txn.id for name in self.lock_targets(txn))

    def write(self, txn: Txn) -> bool:
        """The handler's statements under row locks (held to the end): validate against committed state,
        then outbox.add. False: the request is refused (4xx) and the transaction rolls back."""
        txn.locks = self.lock_targets(txn)
        for name in txn.locks:
            self.locks[name] = txn.id
        data = self.event_data(txn)
        if data is None:
            self.end(txn)
            return False
        key = txn.params.get("invoice") if TOPIC_OF[txn.kind] != CUSTOMERS else txn.params["customer"]
        event = Event(self.new_id(), txn.kind, key, data)
        txn.rows.append(Row(self.new_id(), event, TOPIC_OF[txn.kind], LANE[key], txn.start))
        self.services[service_of(txn.kind)].outbox.append(txn.rows[-1])
        txn.phase = "written"
        return True

    def event_data(self, txn: Txn) -> dict[str, Any] | None:
        """The event a request writes, from the service's committed state (None: refused)."""
        p, a = txn.params, txn.acknowledged_at
        inv = p.get("invoice")
        if txn.kind in ("payment", "credit_note"):  # reconcile.apply_payment: balance under the invoice lock
            before = self.balance[inv]
            if before == 0:
                return None  # already paid: recorded, nothing published
            applied = min(before, p["amount"])
            return {"amount": applied, "balance": before - applied, "settled": before == applied, "at": a}
        if txn.kind == "issue":
            return {} if inv not in self.status else None
        if inv is not None and self.status.get(inv) != "open":
            return None  # 404 unknown, 409 not open
        if txn.kind in ("void", "write_off", "hold"):
            return {**p, "at": a}
        if txn.kind == "promise":
            return {**p, "at": a} if inv not in self.promised else None
        if txn.kind == "dispute_open":
            return {"at": a} if inv not in self.disputes else None
        if txn.kind == "dispute_resolve":
            return {"at": a} if self.disputes.get(inv) == "open" else None
        if txn.kind == "release":
            return {"hold": p["hold"]} if self.holds.get(p["hold"]) == "active" else None
        raise AssertionError(txn.kind)

    def commit(self, txn: Txn) -> None:
        """COMMIT: the rows become visible, the locks and the fence are released; 2xx."""
        for row in txn.rows:
            row.committed = True
        self.seq += 1
        self.apply_committed(txn, txn.rows[0].event.data)
        self.end(txn)

    def end(self, txn: Txn) -> None:
        """COMMIT or ROLLBACK: locks and the fence go (an aborted transaction's rows vanish)."""
        for row in txn.rows:
            if not row.committed:
                self.services[service_of(txn.kind)].outbox.remove(row)
        for name in txn.locks:
            del self.locks[name]
        del self.txns[txn.id]

    def apply_committed(self, txn: Txn, data: dict[str, Any]) -> None:
        p, kind, a, inv = txn.params, txn.kind, txn.acknowledged_at, txn.params.get("invoice")
        assert a is not None or kind in UNFENCED
        name = f"{kind}:{txn.rows[0].event.event_id}"
        if kind in ("payment", "credit_note"):
            self.balance[inv] = data["balance"]
            self.payments.append(Payment(inv, data["amount"], a, data["settled"]))
            if data["settled"]:
                self.stops[name] = Stop(name, kind, (inv,), a, self.seq)
        elif kind == "issue":
            self.status[inv] = "open"
            self.balance[inv] = BALANCE
        elif kind in ("void", "write_off"):
            self.status[inv] = "void" if kind == "void" else "written_off"
            self.stops[name] = Stop(name, kind, (inv,), a, self.seq)
        elif kind == "hold":
            self.holds[p["hold"]] = "active"
            covers = (inv,) if inv else INVOICES_OF[p["customer"]]
            self.stops[f"hold:{p['hold']}"] = Stop(f"hold:{p['hold']}", kind, covers, a, self.seq)
        elif kind == "release":
            self.holds[p["hold"]] = "released"
            self.end_stop(f"hold:{p['hold']}")
        elif kind == "dispute_open":
            self.disputes[inv] = "open"
            self.stops[f"dispute:{inv}"] = Stop(f"dispute:{inv}", kind, (inv,), a, self.seq)
        elif kind == "dispute_resolve":
            self.disputes[inv] = "resolved"
            self.end_stop(f"dispute:{inv}")
        elif kind == "promise":
            self.promised.add(inv)
            self.stops[f"promise:{inv}"] = Stop(f"promise:{inv}", kind, (inv,), a, self.seq)

    def end_stop(self, name: str) -> None:
        """A pause ends (released, resolved, kept, broken, expired): from this step on it covers nothing."""
        stop = self.stops.get(name)
        if stop is not None and stop.ended_seq is None:
            self.seq += 1
            stop.ended_seq = self.seq

    def paid_towards(self, invoice: str, since: int, until: int) -> int:
        """The ground truth of a promise: paid or credited on the invoice, acknowledged in [since, until]."""
        return sum(p.amount for p in self.payments if p.invoice == invoice and since <= p.acknowledged_at <= until)
