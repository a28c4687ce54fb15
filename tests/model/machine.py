"""The rule-based state machine: each rule is one step of one component, interleaved by hypothesis;
the invariant checks the cancel guarantee after every step, the teardown drives the system to
quiescence and checks that none is lost. See docs/model-checking.md."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .acknowledgers import INVOICES_OF, LANE, SOURCES, WATERMARKS, World
from .scheduler import Scheduler, StageLost, Violation

MAX_NOW = 40  # the clock the rules explore (stages at 4..24, deadlines and hold ends a few ticks on)
MAX_TXNS = 3  # requests in flight at once
ISSUE_AT = 6  # i2 is issued no earlier (its stages are at 10 and 22)
MAX_REQUESTS = 6  # requests per run: leaves most steps to the components racing them


def _alias(name: str) -> Any:
    """A second rule doing what rule `name` does: twice as likely to be picked."""

    def again(self: GateModel, **kwargs: Any) -> None:
        getattr(self, name)(**kwargs)

    again.__name__ = f"{name}_again"
    return again


class GateModel(RuleBasedStateMachine):
    mutants: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.world = World(self.mutants)
        self.scheduler = Scheduler(self.world)
        self.violated = False
        self.holds = 0
        self.requested = 0
        self.hold_customer: dict[str, str] = {}

    # --- requests to the acknowledging services (HTTP handlers) ----------------------------------------
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """What a client may ask now (the handler re-validates under its locks)."""
        w, out = self.world, []
        for inv, balance in sorted(w.balance.items()):
            if balance > 0:
                out += [(k, {"invoice": inv, "amount": a}) for k in ("payment", "credit_note") for a in (1, 2)]
        for inv, status in sorted(w.status.items()):
            if status != "open":
                continue
            out += [("void", {"invoice": inv}), ("write_off", {"invoice": inv})]
            out += [("hold", {"invoice": inv, "customer": _customer(inv), "ends_in": e}) for e in (None, 6)]
            if inv not in w.disputes:
                out.append(("dispute_open", {"invoice": inv}))
            if w.disputes.get(inv) == "open":
                out.append(("dispute_resolve", {"invoice": inv}))
            if inv not in w.promised:
                out += [("promise", {"invoice": inv, "amount": a, "days": d}) for a in (1, 2) for d in (4, 12)]
        out += [("hold", {"invoice": None, "customer": c, "ends_in": None}) for c in sorted(INVOICES_OF)]
        out += [("release", {"hold": h, "customer": c}) for h, (state, c) in sorted(self.hold_state().items())]
        return out

    @precondition(lambda self: "i2" not in self.world.status and ISSUE_AT <= self.world.now)
    @rule()
    def issue_late_invoice(self) -> None:
        """invoice-ingest issues i2 (InvoiceIssued, no fence) once the run is under way: a customer hold
        may reach the scheduler before it, and must still pause it when it is planned."""
        self.run("issue", {"invoice": "i2"})

    def hold_state(self) -> dict[str, tuple[str, str]]:
        return {h: ("active", self.hold_customer[h]) for h, state in self.world.holds.items() if state == "active"}

    @precondition(lambda self: len(self.world.txns) < MAX_TXNS and self.requested < MAX_REQUESTS)
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        """BEGIN of a request's transaction (invoice-ingest's or reconciliation's)."""
        kind, params = data.draw(st.sampled_from(self.requests()), label="request")
        self.world.begin(kind, self.named(kind, params))

    @precondition(lambda self: self.requested < MAX_REQUESTS)
    @rule(data=st.data())
    def request_answered(self, data: st.DataObject) -> None:
        """A whole request with nothing in between: BEGIN, acknowledge_time, writes, COMMIT."""
        kind, params = data.draw(st.sampled_from(self.requests()), label="request")
        self.run(kind, self.named(kind, params))

    @precondition(lambda self: self.requested < MAX_REQUESTS)
    @rule(customer=st.sampled_from(sorted(INVOICES_OF)))
    def customer_hold_answered(self, customer: str) -> None:
        """A hold on a whole customer (its invoices now and later), a whole request: the stop that
        covers invoices the scheduler may not have planned yet."""
        self.run("hold", self.named("hold", {"invoice": None, "customer": customer, "ends_in": None}))

    def named(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        self.requested += 1
        params = dict(params)
        if kind == "hold":
            self.holds += 1
            params["hold"] = f"h{self.holds}"
            self.hold_customer[params["hold"]] = params["customer"]
        return params

    def advanceable(self) -> list[int]:
        return [t.id for t in self.world.txns.values() if t.phase != "fenced" or self.world.can_write(t)]

    @precondition(lambda self: self.advanceable())
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """The request's next statement: acknowledge_time (fence, clock), its writes, COMMIT."""
        txn = self.world.txns[data.draw(st.sampled_from(self.advanceable()), label="txn")]
        if txn.phase == "begun":
            self.world.acknowledge_time(txn)
        elif txn.phase == "fenced":
            self.world.write(txn)
        else:
            self.world.commit(txn)

    @precondition(lambda self: self.world.txns)
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        """The request's process dies (or it fails validation) before COMMIT: a rollback, no 2xx."""
        self.world.end(self.world.txns[data.draw(st.sampled_from(sorted(self.world.txns)), label="txn")])

    # --- relays and publishers -------------------------------------------------------------------------
    def sendable(self) -> list[tuple[str, int]]:
        return [
            (name, lane)
            for name, svc in self.world.services.items()
            for lane in sorted(set(LANE.values()))
            if lane not in svc.in_flight and svc.lane_rows(lane)
        ]

    @precondition(lambda self: self.sendable())
    @rule(data=st.data(), count=st.integers(1, 3))
    def relay_send(self, data: st.DataObject, count: int) -> None:
        name, lane = data.draw(st.sampled_from(self.sendable()), label="lane")
        self.world.services[name].relay_send(lane, count)

    def in_flight(self) -> list[tuple[str, int]]:
        return [(name, lane) for name, svc in self.world.services.items() for lane in sorted(svc.in_flight)]

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data(), crash=st.booleans())
    def relay_finish(self, data: st.DataObject, crash: bool) -> None:
        """The relay's commit (rows deleted, published_offsets), or its death before it (republished)."""
        name, lane = data.draw(st.sampled_from(self.in_flight()), label="lane")
        svc = self.world.services[name]
        svc.relay_crash(lane) if crash else svc.relay_finish(lane)

    @rule(source=st.sampled_from(sorted(SOURCES)), replica=st.sampled_from([0, 1]), crash=st.booleans())
    def publisher_step(self, source: str, replica: int, crash: bool) -> None:
        """One statement of a publisher replica's publish_once (clock, holders, snapshot, send), or its
        death between two of them."""
        svc = self.world.services[source]
        svc.publisher_crash(replica) if crash else svc.publisher_step(replica)

    @rule(source=st.sampled_from(sorted(SOURCES)))
    def publish_statement(self, source: str) -> None:
        """A third replica's whole publish_once with nothing in between (one of the interleavings, and
        the common one: it lets the gate open often enough for firing to race the stops)."""
        for _ in range(4):
            self.world.services[source].publisher_step(2)

    @rule(source=st.sampled_from(sorted(SOURCES)))
    def relay_everything(self, source: str) -> None:
        """A healthy relay: every lane published and committed."""
        svc = self.world.services[source]
        for lane in sorted(set(LANE.values()) - set(svc.in_flight)):
            if svc.lane_rows(lane):
                svc.relay_send(lane, 100)
                svc.relay_finish(lane)

    # --- the scheduler ---------------------------------------------------------------------------------
    def behind(self) -> list[tuple[str, int]]:
        s = self.scheduler
        return [part for part in sorted(s.fetch) if s.fetch[part] < len(self.world.broker.log[part])]

    @precondition(lambda self: self.behind())
    @rule(data=st.data(), count=st.integers(1, 3))
    def consume(self, data: st.DataObject, count: int) -> None:
        self.scheduler.consume(data.draw(st.sampled_from(self.behind()), label="partition"), count)

    @rule()
    def catch_up(self) -> None:
        """A healthy consumer: everything on the broker applied, offsets committed."""
        for part in self.behind():
            self.scheduler.consume(part, 100)
        self.scheduler.commit_offsets()

    @rule(crash=st.booleans())
    def commit_offsets(self, crash: bool) -> None:
        """The consumer commits its offsets to Kafka, or dies and restarts from the committed ones."""
        self.scheduler.crash() if crash else self.scheduler.commit_offsets()

    @rule(limit=st.integers(1, 3))
    def fire(self, limit: int) -> None:
        self.scheduler.fire(limit)

    @rule()
    def deadlines(self) -> None:
        self.scheduler.expire_holds()
        self.scheduler.judge_deadlines()

    @precondition(lambda self: self.world.now < MAX_NOW)
    @rule(ticks=st.integers(1, 3))
    def tick(self, ticks: int) -> None:
        self.world.now += ticks

    # The components that make progress run more often than the rest (hypothesis picks rules uniformly).
    tick_more = precondition(lambda self: self.world.now < MAX_NOW)(rule(ticks=st.integers(1, 3))(_alias("tick")))
    fire_more = rule(limit=st.integers(1, 3))(_alias("fire"))
    request_more = precondition(lambda self: len(self.world.txns) < MAX_TXNS and self.requested < MAX_REQUESTS)(
        rule(data=st.data())(_alias("request"))
    )
    advance_more = precondition(lambda self: self.advanceable())(rule(data=st.data())(_alias("advance")))
    deadlines_more = rule()(_alias("deadlines"))
    consume_more = precondition(lambda self: self.behind())(
        rule(data=st.data(), count=st.integers(1, 3))(_alias("consume"))
    )
    publish_more = rule(source=st.sampled_from(sorted(SOURCES)))(_alias("publish_statement"))
    relay_more = rule(source=st.sampled_from(sorted(SOURCES)))(_alias("relay_everything"))

    @invariant()
    def guarantee(self) -> None:
        try:
            self.scheduler.check()
        except Violation:
            self.violated = True
            raise

    # --- quiescence ------------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Every request in flight dies, every pause still active is ended by its owner, and every
        component runs until nothing moves: then every owed stage has fired exactly once."""
        if self.violated:
            return
        w, s = self.world, self.scheduler
        for txn in list(w.txns.values()):
            w.end(txn)
        for svc in w.services.values():
            for lane in list(svc.in_flight):
                svc.relay_crash(lane)
        for hold, (_, customer) in sorted(self.hold_state().items()):
            self.run("release", {"hold": hold, "customer": customer})
        for inv, state in sorted(w.disputes.items()):
            if state == "open":
                self.run("dispute_resolve", {"invoice": inv})
        for _ in range(200):
            for svc in w.services.values():
                for lane in sorted(set(LANE.values())):
                    while svc.lane_rows(lane):
                        svc.relay_send(lane, 100)
                        svc.relay_finish(lane)
                for _ in range(4):
                    svc.publisher_step(2)
            for part in sorted(s.fetch, key=lambda part: part[0] == WATERMARKS):
                s.consume(part, 1000)
            s.commit_offsets()
            s.expire_holds()
            s.judge_deadlines()
            s.fire(1000)
            s.check()
            if self.quiet():
                break
            w.now += 1
        else:
            raise StageLost("no quiescence in 200 rounds")
        s.check_none_lost()

    def run(self, kind: str, params: dict[str, Any]) -> None:
        """A whole request with nothing in between (one that would wait for a row lock gives up)."""
        txn = self.world.begin(kind, params)
        self.world.acknowledge_time(txn)
        if self.world.can_write(txn) and self.world.write(txn):
            self.world.commit(txn)
        elif txn.id in self.world.txns:
            self.world.end(txn)

    def quiet(self) -> bool:
        s = self.scheduler
        moving = any(t.state in ("scheduled", "paused") for i in s.invoices.values() for t in i.timers.values())
        pending = any(p.status == "pending" for p in s.promises.values())
        return not (moving or pending or self.behind())


def _customer(inv: str) -> str:
    return next(c for c, invs in INVOICES_OF.items() if inv in invs)
