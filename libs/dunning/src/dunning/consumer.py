"""The consumer runner: one implementation of the Kafka consumer loop for every service.

decode -> batch -> apply in one DB transaction (a savepoint per message, inbox dedupe) -> commit
the DB -> commit offsets. Offsets are committed only after the database has committed, so a crash
anywhere means redelivery, never loss; the inbox makes redelivery harmless.

A service hands the runner ONE handler table (`dunning.handler_table`; the topics come from it).
`each` is the reference whenever a batch has to be taken apart; a parity test per service holds a
`batch` variant equal to it. `inbox=False` handlers skip the inbox (idempotent by construction).
- `track_positions` (runner option, for consumers whose progress others rely on): the next offset
  of each partition applied is written to `consumer_positions` in the batch's transaction, so it
  never runs ahead of the state (reconciliation publishes it in its payments watermark; the
  scheduler compares it with the watermark's offsets).

Two kinds of failure, told apart (arroyo's rule):
- infrastructure (database or broker unreachable, serialization conflicts): the whole batch is
  rolled back and retried with exponential backoff, a bounded number of times; then the process
  exits and its orchestrator restarts it. Never dead-lettered.
- the message itself (not JSON, invalid against its schema, rejected by the handler, or a handler
  error that repeats): the message goes to the dead-letter topic with a reason header, through the
  outbox and in the same transaction, so a poison message never blocks its partition.
"""

import asyncio
import contextlib

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from opentelemetry.trace import SpanKind

from dunning import inbox
from dunning.dead_letters import dead_letter
from dunning.events import Event, InvalidEvent, decode
from dunning.group_leave import leave_on_stop
from dunning.handler_table import BatchHandler, Handler, HandlerTable, Rejected, topics_of
from dunning.idle_fetch import IdleFetch
from dunning.logging import bind_context, clear_context, get_logger
from dunning.naps import Naps
from dunning.positions import record_positions
from dunning.tracing import context_from_traceparent, tracer

log = get_logger(__name__)

INFRA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    KafkaError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,
)


class _NeedsCare(Exception):
    """The fast path met a message that fails: redo the batch message by message."""


@contextlib.contextmanager
def _message_scope(record: ConsumerRecord, event: Event):
    """A consumer span continuing the producer's trace, and the ids bound to every log line (the subject
    as what it names: the customer id of a customer event, else the invoice id)."""
    subject = "customer_id" if event.subject.startswith("cus_") else "invoice_id"
    bind_context(tenant_id=event.tenant_id, event_id=event.id, event_type=event.type, **{subject: event.subject})
    try:
        with tracer().start_as_current_span(
            f"{record.topic} process", context=context_from_traceparent(event.traceparent), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.message.id", event.id)
            span.set_attribute("messaging.destination.name", record.topic)
            yield
    finally:
        clear_context("tenant_id", subject, "event_id", "event_type")


def _located(event: Event, record: ConsumerRecord) -> Event:
    """The event with the partition and offset it was read at (handlers that gate on positions use them)."""
    object.__setattr__(event, "partition", record.partition)
    object.__setattr__(event, "offset", record.offset)
    return event


class ConsumerRunner:
    def __init__(
        self,
        *,
        name: str,
        pool: asyncpg.Pool,
        bootstrap_servers: str,
        group_id: str,
        handlers: HandlerTable,
        topics: list[str] | None = None,
        batch_max: int = 500,
        fetch_wait_ms: int = 50,
        idle_after_seconds: float = 2.0,
        idle_fetch_wait_ms: int = 500,
        idle_nap_seconds: float = 0.0,
        max_infra_retries: int = 8,
        handler_attempts: int = 3,
        client_id: str | None = None,
        session_timeout_ms: int = 6000,
        rebalance_timeout_ms: int = 1000,
        track_positions: bool = False,
    ):
        """`topics` defaults to the table's (tests point a runner at a topic of their own)."""
        self.name = name
        self.pool = pool
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topics = topics if topics is not None else topics_of(handlers)
        # By type string, as read from the envelope.
        self.handlers: dict[str, Handler] = {t.TYPE: spec.each for t, spec in handlers.items()}
        self.batch_handlers: dict[str, BatchHandler] = {
            t.TYPE: spec.batch for t, spec in handlers.items() if spec.batch is not None
        }
        self.inboxless_types = frozenset(t.TYPE for t, spec in handlers.items() if not spec.inbox)
        # the ce_type headers of the events that end an idle spell (IdleFetch): those handled here,
        # gate heartbeats (`wakes=False`) and other services' events on a shared topic aside
        self.waking_types = frozenset(t.TYPE.encode() for t, spec in handlers.items() if spec.wakes)
        self.batch_max = batch_max
        self.track_positions = track_positions
        self.fetch_wait_ms = fetch_wait_ms
        self.idle_after_seconds = idle_after_seconds
        self.idle_fetch_wait_ms = idle_fetch_wait_ms
        self.idle_nap_seconds = idle_nap_seconds  # 0: no naps (dunning.naps), the broker's wait only
        self.naps: Naps | None = None
        self.max_infra_retries = max_infra_retries
        self.handler_attempts = handler_attempts
        self.client_id = client_id or group_id
        # Short group timeouts: a replica that dies is replaced within seconds (Tansu, like Kafka,
        # waits for the session to expire before handing its partitions to another member).
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self._stopping = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.paused = False  # hold consumption (lag); offsets simply wait
        # For metrics (dunning.metrics.ConsumerCollector): the next offset to apply per partition, and
        # the running consumer, whose last fetches know each partition's high watermark.
        self.positions: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None

    @classmethod
    def from_settings(
        cls,
        settings,
        pool: asyncpg.Pool,
        *,
        name: str,
        handlers: HandlerTable,
        group_id: str | None = None,
        track_positions: bool = False,
    ) -> "ConsumerRunner":
        """A runner configured from a service's settings (CommonSettings plus its `consumer_group`)."""
        return cls(
            name=name,
            pool=pool,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id or getattr(settings, "consumer_group", settings.service_name),
            handlers=handlers,
            topics=topics_of(handlers, settings),
            batch_max=settings.consumer_batch_max,
            fetch_wait_ms=settings.consumer_fetch_wait_ms,
            idle_after_seconds=settings.consumer_idle_after_seconds,
            idle_fetch_wait_ms=settings.consumer_idle_fetch_wait_ms,
            idle_nap_seconds=settings.consumer_idle_nap_seconds,
            max_infra_retries=settings.consumer_max_infra_retries,
            handler_attempts=settings.consumer_handler_attempts,
            client_id=settings.service_name,
            session_timeout_ms=settings.consumer_session_timeout_ms,
            track_positions=track_positions,
        )

    def stop(self) -> None:
        """Stop taking work: the batch in flight finishes, commits, and the loop ends."""
        self._stopping.set()

    def lag_snapshot(self) -> dict[tuple[str, int], tuple[int | None, int | None]]:
        """(next offset to apply, high watermark) per partition assigned now, for metrics; None if unknown."""
        consumer = self.consumer
        if consumer is None:
            return {}
        return {
            (tp.topic, tp.partition): (self.positions.get(tp), consumer.highwater(tp)) for tp in consumer.assignment()
        }

    def make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_poll_records=self.batch_max,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 3, 100),
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            max_poll_interval_ms=120_000,
            consumer_timeout_ms=1000,  # the fetcher's fallback wake-up; a resume, a rebalance or data wake it at once
        )

    async def run(self) -> None:
        consumer = self.consumer = self.make_consumer()
        await consumer.start()
        leave_on_stop(consumer)  # from a Tansu group's first generation too
        log.info("consumer.started", consumer=self.name, topics=self.topics, group=self.group_id)
        idle = IdleFetch(consumer, self.fetch_wait_ms, self.idle_fetch_wait_ms, self.idle_after_seconds)
        naps = None
        if self.idle_nap_seconds > 0:
            naps = self.naps = Naps(self.pool, self.topics, nap_seconds=self.idle_nap_seconds)
        try:
            while not self._stopping.is_set():
                if self.paused:
                    await asyncio.sleep(0.05)
                    continue
                timeout_ms = 200
                if naps is not None:
                    await naps.keep_listening()  # (what it missed while not listening is fetched next)
                if naps is not None and idle.quiet and naps.may_nap():
                    await naps.nap(consumer, self._stopping)
                    timeout_ms = 2 * self.fetch_wait_ms + 20  # what the nap left; back to sleep if nothing
                batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.batch_max)
                idle.saw(self.wakes(batch), doze=naps is None or not naps.listening)
                if batch:
                    await self.process_batch(consumer, batch)
        finally:
            if naps is not None:
                await naps.close()
            await consumer.stop()
            log.info("consumer.stopped", consumer=self.name, processed=self.processed)

    def wakes(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Whether the batch holds work that ends an idle spell: an event of a type this runner handles
        with `wakes` (read from its ce_type header; a record without one counts)."""
        for records in batch.values():
            for record in records:
                ce_type = next((v for k, v in record.headers or () if k == "ce_type"), None)
                if ce_type is None or ce_type in self.waking_types:
                    return True
        return False

    async def process_batch(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """Apply a batch in one transaction, then commit its offsets.

        Fast path: one inbox statement for the whole batch and the handlers back to back. If any
        message fails (undecodable, rejected, a handler error), the transaction is rolled back and
        the batch is applied again message by message, each in its own savepoint, so the failure
        is retried or dead-lettered alone."""
        records = [record for records in batch.values() for record in records]
        for tp, tp_records in batch.items():
            self.positions.setdefault(tp, tp_records[0].offset)
        attempt = 0
        careful = False
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    if careful:
                        for record in records:
                            await self._apply(conn, record)
                    else:
                        await self._apply_fast(conn, records)
                    if self.track_positions:
                        await record_positions(conn, batch)
                break
            except _NeedsCare:
                careful = True
            except INFRA_ERRORS as exc:
                attempt += 1
                if attempt > self.max_infra_retries:
                    log.error("consumer.infra.giving_up", consumer=self.name, error=repr(exc))
                    raise
                delay = min(0.1 * 2**attempt, 10.0)
                log.warning(
                    "consumer.infra.retry", consumer=self.name, error=repr(exc), attempt=attempt, retry_in=delay
                )
                await asyncio.sleep(delay)
        self.processed += sum(len(r) for r in batch.values())
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        self.positions.update(offsets)
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The group rebalanced under us: whoever owns the partition now gets these messages
            # again, and the inbox drops them.
            log.warning("consumer.commit.failed", consumer=self.name, error=repr(exc))

    async def _apply_fast(self, conn: asyncpg.Connection, records: list[ConsumerRecord]) -> None:
        todo = []
        for record in records:
            try:
                event = decode(record.value)
            except InvalidEvent:
                raise _NeedsCare from None
            if event.type in self.handlers:
                todo.append((record, _located(event, record)))
        if not todo:
            return
        logged = [(r, e) for r, e in todo if e.type not in self.inboxless_types]
        fresh = {e.id for r, e in todo if e.type in self.inboxless_types}
        if logged:
            fresh.update(
                await inbox.claim_many(
                    conn, [e.id for _, e in logged], [e.type for _, e in logged], [r.topic for r, _ in logged]
                )
            )
        runs: list[list[tuple[ConsumerRecord, Event]]] = []  # consecutive fresh events, by type
        for record, event in todo:
            if event.id not in fresh:
                continue  # applied before (a redelivery), or twice in this batch
            fresh.discard(event.id)
            if runs and runs[-1][0][1].type == event.type and event.type in self.batch_handlers:
                runs[-1].append((record, event))
            else:
                runs.append([(record, event)])
        for run in runs:
            record, event = run[0]
            try:
                if len(run) > 1:
                    with tracer().start_as_current_span(
                        f"{record.topic} process batch", kind=SpanKind.CONSUMER
                    ) as span:
                        span.set_attribute("messaging.batch.message_count", len(run))
                        await self.batch_handlers[event.type](conn, [e for _, e in run])
                    continue
                with _message_scope(record, event):
                    await self.handlers[event.type](conn, event)
            except INFRA_ERRORS:
                raise
            except Exception:
                raise _NeedsCare from None

    async def _apply(self, conn: asyncpg.Connection, record: ConsumerRecord) -> None:
        try:
            event = decode(record.value)
        except InvalidEvent as exc:
            await self._dead_letter(conn, record, "invalid", str(exc), event_id=None)
            return
        handler = self.handlers.get(event.type)
        if handler is None:
            return  # another consumer's event on a shared topic
        event = _located(event, record)
        inboxless = event.type in self.inboxless_types
        with _message_scope(record, event):
            for attempt in range(1, self.handler_attempts + 1):
                try:
                    async with conn.transaction():  # a savepoint: one message's failure is its own
                        if inboxless or await inbox.claim(conn, event.id, event.type, record.topic):
                            await handler(conn, event)
                    return
                except INFRA_ERRORS:
                    raise
                except Rejected as exc:
                    await self._dead_letter(
                        conn, record, "rejected", str(exc), event_id=event.id, event_type=event.type
                    )
                    return
                except Exception as exc:
                    if attempt == self.handler_attempts:
                        log.exception("consumer.handler.failed", consumer=self.name)
                        await self._dead_letter(
                            conn, record, "handler_error", repr(exc), event_id=event.id, event_type=event.type
                        )
                        return
                    log.warning("consumer.handler.retry", consumer=self.name, error=repr(exc), attempt=attempt)
                    await asyncio.sleep(0.05 * attempt)

    async def _dead_letter(
        self,
        conn: asyncpg.Connection,
        record: ConsumerRecord,
        reason: str,
        error: str,
        *,
        event_id: str | None,
        event_type: str = "unknown",
    ) -> None:
        await dead_letter(
            conn, record, reason, error, self.name, self.group_id, event_id=event_id, event_type=event_type
        )
        self.dead_lettered += 1
