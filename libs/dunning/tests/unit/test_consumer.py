"""The consumer runner's decisions, with fakes: what is applied, retried or dead-lettered."""

import contextlib
import json
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from dunning.consumer import ConsumerRunner
from dunning.contracts import InvoiceIssued, PaymentReceived, PaymentsWatermark, StageEscalated
from dunning.dead_letters import DEAD_LETTER_TOPIC
from dunning.events import schemas_dir
from dunning.handler_table import HandlerSpec, Rejected, topics_of
from dunning_tools.testing.fakes import FakeConsumer

pytestmark = pytest.mark.unit
TP = TopicPartition("dunning.invoices.v1", 0)


class FakeConn:
    def __init__(self):
        self.inbox: dict[str, str] = {}
        self.outbox: list[dict] = []
        self.committed = False

    @contextlib.asynccontextmanager
    async def transaction(self):
        inbox, outbox = dict(self.inbox), list(self.outbox)
        try:
            yield
        except BaseException:
            self.inbox, self.outbox = inbox, outbox  # roll back
            raise

    async def fetchval(self, sql, event_id, event_type, topic, status):
        if event_id in self.inbox:
            return None
        self.inbox[event_id] = status
        return True

    async def fetch(self, sql, ids, types, topics):  # the batch inbox claim
        fresh = []
        for eid in ids:
            if eid not in self.inbox:
                self.inbox[eid] = "processed"
                fresh.append((eid,))
        return fresh

    async def execute(self, sql, lane, topic, key, event_id, event_type, headers, payload):
        self.outbox.append({"topic": topic, "key": key, "headers": headers, "payload": payload})


class FakePool:
    def __init__(self, conn):
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self.conn


def record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(TP.topic, 0, offset, 0, 0, b"inv_1", value, None, 0, len(value), [])


def event(eid: str, behaviour: str = "ok") -> bytes:
    env = json.loads((schemas_dir() / "examples/InvoiceIssued/1/eur-invoice.json").read_text())
    env["id"] = eid
    env["data"]["metadata"] = {"behaviour": behaviour}
    return orjson.dumps(env)


async def run_batch(records, handler, batch=None):
    """One poll's records through a runner whose InvoiceIssued handler is `handler` (and `batch`,
    its batch variant, if given), on a fake connection; returns it and the fake consumer."""
    conn = FakeConn()
    runner = ConsumerRunner(
        name="t",
        pool=FakePool(conn),
        bootstrap_servers="unused",
        group_id="g",
        topics=[TP.topic],
        handlers={InvoiceIssued: HandlerSpec(handler, batch=batch)},
        handler_attempts=2,
    )
    consumer = FakeConsumer()
    await runner.process_batch(consumer, {TP: records})
    return conn, consumer


def dead_reasons(conn):
    return [o["headers"]["x-dlq-reason"] for o in conn.outbox if o["topic"] == DEAD_LETTER_TOPIC]


E1, E2, E3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))


@pytest.mark.parametrize(
    "values,applied,reasons",
    [
        pytest.param([event(E1), event(E2)], [E1, E2], [], id="all-good"),
        pytest.param([event(E1), event(E1)], [E1], [], id="duplicate-applied-once"),
        pytest.param([b"\x00garbage", event(E1)], [E1], ["invalid"], id="poison-does-not-block"),
        pytest.param([event(E1, "rejected"), event(E2)], [E2], ["rejected"], id="rejected"),
        pytest.param([event(E1, "bug"), event(E2)], [E2], ["handler_error"], id="repeated-bug"),
        pytest.param([event(E1, "flaky"), event(E2)], [E1, E2], [], id="flaky-retried"),
    ],
)
async def test_batch_outcomes(values, applied, reasons):
    seen, flaky = [], {"failed": False}

    async def handler(conn, ev):
        behaviour = ev.data.metadata["behaviour"]
        if behaviour == "rejected":
            raise Rejected("customer unknown")
        if behaviour == "bug":
            raise ZeroDivisionError()
        if behaviour == "flaky" and not flaky["failed"]:
            flaky["failed"] = True
            raise RuntimeError("once")
        seen.append(ev.id)

    conn, consumer = await run_batch([record(i, v) for i, v in enumerate(values)], handler)
    assert seen == applied
    assert dead_reasons(conn) == reasons
    assert consumer.commits == [{TP: len(values)}]


async def test_infrastructure_errors_are_retried_never_dead_lettered():
    calls = []

    async def handler(conn, ev):
        calls.append(ev.id)
        if len(calls) < 3:
            raise ConnectionRefusedError("db down")

    conn, consumer = await run_batch([record(0, event(E3))], handler)
    assert calls == [E3, E3, E3]
    assert dead_reasons(conn) == []
    assert conn.inbox == {E3: "processed"}
    assert consumer.commits == [{TP: 1}]


async def test_a_batch_handler_gets_the_run_and_a_failing_run_is_taken_apart():
    calls = []

    async def one(conn, ev):
        calls.append(("one", ev.id))

    async def many(conn, evs):
        calls.append(("many", [e.id for e in evs]))
        if any(e.data.metadata["behaviour"] == "bug" for e in evs):
            raise ValueError("a bad row in the set")

    async def run(values):
        calls.clear()
        await run_batch([record(i, v) for i, v in enumerate(values)], one, batch=many)

    await run([event(E1), event(E2), event(E1)])
    assert calls == [("many", [E1, E2])]  # the duplicate is dropped by the inbox

    await run([event(E1), event(E2, "bug")])
    assert calls == [("many", [E1, E2]), ("one", E1), ("one", E2)]  # rolled back, then one by one


def test_the_handler_table_says_what_is_consumed_batched_and_inboxless():
    async def each(conn, event): ...

    async def batch(conn, events): ...

    table = {
        InvoiceIssued: HandlerSpec(each, batch=batch),
        PaymentReceived: HandlerSpec(each),
        PaymentsWatermark: HandlerSpec(each, batch=batch, inbox=False),
        StageEscalated: HandlerSpec(each),
    }
    runner = ConsumerRunner(name="t", pool=None, bootstrap_servers="unused", group_id="g", handlers=table)
    assert (
        runner.topics
        == topics_of(table)
        == ["dunning.invoices.v1", "dunning.payments.v1", "dunning.stages.v1", "dunning.watermarks.v1"]
    )
    assert set(runner.handlers) == {t.TYPE for t in table}
    assert set(runner.batch_handlers) == {InvoiceIssued.TYPE, PaymentsWatermark.TYPE}
    assert runner.inboxless_types == {PaymentsWatermark.TYPE}


def test_a_settings_field_names_another_topic_for_a_catalogue_topic():
    async def each(conn, event): ...

    table = {InvoiceIssued: HandlerSpec(each), PaymentReceived: HandlerSpec(each)}
    settings = SimpleNamespace(invoices_topic="t1.invoices")  # e.g. Settings(invoices_topic=...)
    assert topics_of(table, settings) == ["dunning.payments.v1", "t1.invoices"]
    assert topics_of(table) == ["dunning.invoices.v1", "dunning.payments.v1"]


@pytest.mark.parametrize(
    ("example", "key"),
    [
        ("CustomerUpdated/1/new-ap-contact-with-cc.json", "customer_id"),
        ("InvoiceIssued/1/eur-invoice.json", "invoice_id"),
    ],
)
def test_log_lines_name_the_subject_as_what_it_is(example, key):
    import structlog

    from dunning.consumer import _message_scope
    from dunning.events import decode

    raw = (schemas_dir() / "examples" / example).read_bytes()
    with _message_scope(record(0, raw), decode(raw)):
        bound = structlog.contextvars.get_contextvars()
        assert bound[key] == json.loads(raw)["subject"]
        other = "invoice_id" if key == "customer_id" else "customer_id"
        assert other not in bound
    assert key not in structlog.contextvars.get_contextvars()


@pytest.mark.parametrize(
    ("example", "key"),
    [
        ("CustomerUpdated/1/new-ap-contact-with-cc.json", "customer_id"),
        ("StageEscalated/1/eur-soft-after-partial-payment.json", "invoice_id"),
    ],
)
def test_an_event_whose_data_disagrees_with_its_envelope_is_rejected(example, key):
    from dunning.events import decode
    from dunning.handler_table import check_envelope

    env = json.loads((schemas_dir() / "examples" / example).read_text())
    check_envelope(decode(orjson.dumps(env)))  # agreeing: applied
    for field, value in (("tenantid", "ten_other"), ("subject", env["subject"][:4] + "01JA0000000000000000000000")):
        with pytest.raises(Rejected, match=f"data.tenant_id/{key} disagree"):
            check_envelope(decode(orjson.dumps({**env, field: value})))


class _Fetcher:
    _fetch_max_wait_ms = 50


class _Consumer:
    def __init__(self):
        self._fetcher = _Fetcher()


def test_an_idle_consumer_asks_the_broker_to_hold_its_fetches_longer_until_a_record_comes(monkeypatch):
    from dunning import idle_fetch as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    c = _Consumer()
    idle = module.IdleFetch(c, busy_ms=50, idle_ms=500, after_seconds=5)
    now[0] += 4.9
    idle.saw(False)
    assert c._fetcher._fetch_max_wait_ms == 50  # not quiet long enough
    now[0] += 0.2
    idle.saw(False)
    assert c._fetcher._fetch_max_wait_ms == 500
    idle.saw(True)
    assert c._fetcher._fetch_max_wait_ms == 50  # the first record wakes it
    now[0] += 3
    idle.saw(False)
    assert c._fetcher._fetch_max_wait_ms == 50  # quiet counts from that record


def test_idle_fetch_is_off_when_the_idle_wait_is_not_longer():
    from dunning import idle_fetch as module

    c = _Consumer()
    idle = module.IdleFetch(c, busy_ms=50, idle_ms=0, after_seconds=0)
    idle.saw(False)
    assert c._fetcher._fetch_max_wait_ms == 50


async def test_the_group_session_comes_from_the_settings_with_heartbeats_every_third_of_it():
    from dunning.settings import CommonSettings

    handlers = {InvoiceIssued: HandlerSpec(lambda conn, event: None)}

    def group_timings(settings: CommonSettings) -> tuple[int, int]:
        consumer = ConsumerRunner.from_settings(settings, None, name="t", handlers=handlers).make_consumer()
        return consumer._session_timeout_ms, consumer._heartbeat_interval_ms  # the client's, not started

    assert group_timings(CommonSettings()) == (6000, 2000)  # Kafka's floor
    assert group_timings(CommonSettings(consumer_session_timeout_ms=3000)) == (3000, 1000)  # the local Tansu


def test_the_local_stack_gives_its_tansu_consumers_a_shorter_session(tmp_path):
    from dunning_tools.stack.system import SERVICES, Ports, Stack
    from dunning_tools.stack.tansu import TANSU_SESSION_TIMEOUT_MS, TansuBroker

    stack = Stack(tmp_path, Ports())
    stack.database_url, stack.kafka_bootstrap_servers = "postgresql://x/y", "127.0.0.1:1"
    for name, (_, prefix, _) in SERVICES.items():
        assert f"{prefix}CONSUMER_SESSION_TIMEOUT_MS" not in stack.service_env(name, 1)  # someone else's broker
    stack.broker = TansuBroker(1)
    for name, (_, prefix, _) in SERVICES.items():
        assert stack.service_env(name, 1)[f"{prefix}CONSUMER_SESSION_TIMEOUT_MS"] == str(TANSU_SESSION_TIMEOUT_MS)


def test_only_the_events_a_runner_handles_and_that_wake_end_its_idle_spell():
    """A gate heartbeat (`wakes=False`) or another service's event on a shared topic leaves the
    consumer dozing; an event it handles, or a record without a ce_type header, wakes it."""
    from dunning.contracts import WatermarkWanted

    async def each(conn, event): ...

    runner = ConsumerRunner(
        name="t",
        pool=None,
        bootstrap_servers="unused",
        group_id="g",
        handlers={InvoiceIssued: HandlerSpec(each), WatermarkWanted: HandlerSpec(each, inbox=False, wakes=False)},
    )

    def batch(*types):
        headers = [[("ce_type", t.TYPE.encode()), ("ce_id", b"x")] if t else [] for t in types]
        return {TP: [ConsumerRecord(TP.topic, 0, n, 0, 0, b"k", b"{}", None, 0, 2, h) for n, h in enumerate(headers)]}

    assert runner.wakes(batch(WatermarkWanted)) is False
    assert runner.wakes(batch(PaymentReceived, WatermarkWanted)) is False  # not this runner's
    assert runner.wakes(batch(WatermarkWanted, InvoiceIssued)) is True
    assert runner.wakes(batch(None)) is True  # no header: counted
    assert runner.wakes({}) is False


def test_a_napping_consumer_keeps_the_brokers_wait_short_and_naps_only_away_from_a_hint(monkeypatch):
    """While naps are on (`doze=False`) the broker's wait stays the busy one; a consumer stays awake
    `grace` after a hint heard while awake (a fetch sent before it may have missed its records), and
    after a nap the next fetch covers every hint so far."""
    from dunning import idle_fetch, naps

    now = [1000.0]
    monkeypatch.setattr(idle_fetch.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(naps.time, "monotonic", lambda: now[0])
    c = _Consumer()
    idle = idle_fetch.IdleFetch(c, busy_ms=50, idle_ms=500, after_seconds=2)
    now[0] += 3
    idle.saw(False)
    assert idle.quiet and c._fetcher._fetch_max_wait_ms == 500
    idle.saw(False, doze=False)  # the naps' listener came up: short waits again
    assert idle.quiet and c._fetcher._fetch_max_wait_ms == 50

    n = naps.Naps(None, ["dunning.invoices.v1"], nap_seconds=5, grace_seconds=0.25)
    monkeypatch.setattr(naps.Naps, "listening", property(lambda self: True))
    assert n.may_nap()
    n.hinted()
    assert not n.may_nap()
    now[0] += 0.3
    assert n.may_nap()


async def test_naps_listen_again_after_a_lost_connection_at_most_every_few_seconds(monkeypatch):
    """While the LISTEN connection is down (PostgreSQL restarting) the consumer dozes on the broker's
    wait; it tries to listen again at most every RETRY_SECONDS, not at every fetch."""
    from dunning import naps

    now = [1000.0]
    monkeypatch.setattr(naps.time, "monotonic", lambda: now[0])
    n = naps.Naps(None, ["dunning.invoices.v1"], nap_seconds=5)
    tries = []

    class Down:
        listening = False

        async def ensure(self):
            tries.append(now[0])
            return False

    n.listener = Down()
    await n.keep_listening()
    await n.keep_listening()
    assert not n.may_nap() and tries == [1000.0]
    now[0] += n.RETRY_SECONDS + 0.1
    await n.keep_listening()
    assert len(tries) == 2
