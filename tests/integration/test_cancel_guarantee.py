"""The cancel guarantee, one failure mode at a time: reconciliation and the scheduler in this process,
on the real PostgreSQL and the real broker, each in its own schema, with their own consumer groups
and their own invoices and watermarks topics (so no other test's events or statements reach them).

- a stalled reconciliation relay: reminders wait, then the paid one is cancelled and the unpaid one
  fires (never the paid one);
- a scheduler that has a watermark statement but has not applied the payments below its offsets:
  nothing fires until it has;
- a payment that arrives before its invoice while reconciliation's consumer lags: the invoice's
  stage waits until reconciliation has matched it, then is cancelled;
- the acknowledgement fence: the watermark stays below a payment transaction still open.
"""

import asyncio
import uuid
from datetime import timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dunning import outbox
from dunning.clock import utcnow
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import dumps
from dunning.kafka import make_producer
from dunning_reconciliation import bootstrap as recon_bootstrap
from dunning_reconciliation import payments as recon_payments
from dunning_reconciliation.repository import acknowledge_time
from dunning_reconciliation.schemas import PaymentIn
from dunning_reconciliation.settings import Settings as ReconSettings
from dunning_scheduler import bootstrap as sched_bootstrap
from dunning_scheduler import repository as sched_repo
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy
from dunning_scheduler.settings import Settings as SchedSettings
from dunning_tools.testing import events
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


def invoice_issued(tenant_id: str, *, external_id: str | None = None) -> dict:
    return events.invoice_issued(tenant_id=tenant_id, external_id=external_id, amount_due="100.00")


class Pair:
    """Reconciliation (consumer, watermark publisher, relay) and the scheduler (consumer, firing loop)."""

    def __init__(self, infra, stage_offset_seconds: int):
        run = uuid.uuid4().hex[:10]
        self.infra = infra
        self.tenant = f"ten_gate{run}"
        self.invoices_topic = f"t{run}.invoices"
        self.watermarks_topic = f"t{run}.watermarks"
        self.recon_schema, self.sched_schema = f"r_{run}", f"s_{run}"
        self.offset = stage_offset_seconds
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        infra = self.infra
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.invoices_topic, 6, 1), NewTopic(self.watermarks_topic, 1, 1)])
        finally:
            await admin.close()
        migrate(infra.database_url, self.recon_schema, migrations_of("dunning_reconciliation"))
        migrate(infra.database_url, self.sched_schema, migrations_of("dunning_scheduler"))
        common = dict(
            database_url=infra.database_url,
            kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
            invoices_topic=self.invoices_topic,
            watermarks_topic=self.watermarks_topic,
            relay_poll_seconds=0.05,
        )
        self.recon_settings = ReconSettings(
            db_schema=self.recon_schema,
            consumer_group=f"r-{self.recon_schema}",
            watermark_interval_seconds=0.1,
            **common,
        )
        self.sched_settings = SchedSettings(
            db_schema=self.sched_schema, consumer_group=f"s-{self.sched_schema}", **common
        )
        self.recon_pool = await create_pool(infra.database_url, self.recon_schema, max_size=8)
        self.sched_pool = await create_pool(infra.database_url, self.sched_schema, max_size=8)
        async with self.sched_pool.acquire() as conn:
            await save_policy(
                conn,
                self.tenant,
                parse_policy({"anchor": "issued_at", "stages": [{"name": "soft", "offset": f"PT{self.offset}S"}]}),
            )
        self.producer = make_producer(infra.kafka_bootstrap_servers, "gate-test")
        await self.producer.start()
        self.recon_consumer = recon_bootstrap.consumer_for(self.recon_settings, self.recon_pool)
        self.watermark = recon_bootstrap.watermark_for(self.recon_settings, self.recon_pool, self.producer)
        self.recon_relay = recon_bootstrap.relay_for(self.recon_settings, self.recon_pool, self.producer)
        self.sched_consumer = sched_bootstrap.consumer_for(self.sched_settings, self.sched_pool)
        self.firing = sched_bootstrap.firing_loop_for(self.sched_settings, self.sched_pool)
        self.workers = [self.recon_consumer, self.watermark, self.recon_relay, self.sched_consumer, self.firing]
        self.tasks = [asyncio.create_task(w.run()) for w in self.workers]

        async def warm():  # both consumers joined and a statement went through
            gate = await sched_repo.gate_state(self.sched_pool)
            return gate["watermark"] is not None and self.recon_consumer.processed > 0

        await self.issue(invoice_issued(self.tenant))  # a first invoice: both consumers take it
        await async_wait_until(warm, timeout=60, what="consumers joined, watermark flowing")

    async def stop(self) -> None:
        for w in self.workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), timeout=30)
        await self.producer.stop()
        await self.recon_pool.close()
        await self.sched_pool.close()

    async def issue(self, envelope: dict) -> None:
        await self.producer.send_and_wait(self.invoices_topic, dumps(envelope), key=envelope["subject"].encode())

    async def pay(self, invoice_id: str | None = None, *, external_id: str | None = None) -> dict:
        body = PaymentIn(
            invoice_id=invoice_id,
            invoice_external_id=external_id,
            amount="100.00",
            currency="EUR",
            received_at=utcnow(),
            reference=f"ref-{uuid.uuid4().hex[:12]}",
        )
        status, view = await recon_payments.record_payment(self.recon_pool, self.tenant, body)
        assert status == 201
        return view

    async def timers(self, invoice_id: str) -> list[str]:
        return [
            r["state"]
            for r in await self.sched_pool.fetch(
                "SELECT state FROM timers WHERE invoice_id = $1 ORDER BY sequence", invoice_id
            )
        ]

    async def wait_timers(self, invoice_id: str, states: list[str], timeout: float = 30) -> None:
        async def reached():
            return await self.timers(invoice_id) == states

        await async_wait_until(reached, timeout=timeout, what=f"{invoice_id} timers {states}")


@pytest.fixture
async def pair(infra):
    pair = Pair(infra, stage_offset_seconds=3)
    await pair.start()
    yield pair
    await pair.stop()


async def test_stalled_reconciliation_relay_makes_reminders_wait_and_never_fire_after_payment(pair):
    paid, unpaid = invoice_issued(pair.tenant), invoice_issued(pair.tenant)
    for envelope in (paid, unpaid):
        await pair.issue(envelope)
    await pair.wait_timers(paid["subject"], ["scheduled"])
    await pair.wait_timers(unpaid["subject"], ["scheduled"])
    async with pair.recon_pool.acquire() as conn:
        await outbox.set_paused(conn, True, by="test")
    await async_wait_until(lambda: _async(pair.recon_consumer.processed >= 3), timeout=30, what="recon has both")
    view = await pair.pay(paid["subject"])  # acknowledged before the stage's time; stuck in the outbox
    scheduled_at = await pair.sched_pool.fetchval(
        "SELECT scheduled_at FROM timers WHERE invoice_id = $1", paid["subject"]
    )
    assert view["settled"] is True

    # Past both stages' times (plus a margin): neither fired, the unpaid one waits too.
    async def past_due():
        return utcnow() > scheduled_at + timedelta(seconds=2)

    await async_wait_until(past_due, timeout=30, what="stage time passed")
    assert await pair.timers(paid["subject"]) == ["scheduled"]
    assert await pair.timers(unpaid["subject"]) == ["scheduled"]
    gate = await sched_repo.gate_state(pair.sched_pool)
    assert gate["watermark"] < scheduled_at  # held back at the waiting payment

    async with pair.recon_pool.acquire() as conn:
        await outbox.set_paused(conn, False, by="test")
    await pair.wait_timers(paid["subject"], ["cancelled"])
    await pair.wait_timers(unpaid["subject"], ["fired"])


async def test_statement_does_not_open_the_gate_before_the_payments_below_it_are_applied(pair):
    envelope = invoice_issued(pair.tenant)
    await pair.issue(envelope)
    await pair.wait_timers(envelope["subject"], ["scheduled"])
    pair.sched_consumer.paused = True  # the scheduler's consumer lags from here on
    await asyncio.sleep(0.5)  # let a batch in flight finish
    applied = dict(
        await pair.sched_pool.fetch(
            "SELECT partition::text, next_offset FROM consumer_positions WHERE topic = 'dunning.payments.v1'"
        )
    )
    # A statement far in the future, naming payments offsets one past what the scheduler applied.
    ahead = {p: n + 1 for p, n in applied.items()} or {"0": 1}
    positions = dict(
        await pair.recon_pool.fetch(
            "SELECT partition::text, next_offset FROM consumer_positions WHERE topic = $1", pair.invoices_topic
        )
    )
    statement = {
        "watermark": (utcnow() + timedelta(hours=1)).isoformat(),
        "payments_offsets": ahead,
        "invoice_positions": positions,
        "computed_at": utcnow().isoformat(),
    }
    async with pair.sched_pool.acquire() as conn:
        await conn.execute("DELETE FROM payment_watermarks")
        await sched_repo.store_watermarks(conn, [(str(uuid.uuid4()), statement)])
        scheduled_at = await conn.fetchval("SELECT scheduled_at FROM timers WHERE invoice_id = $1", envelope["subject"])

    async def past_due():
        return utcnow() > scheduled_at + timedelta(seconds=1)

    await async_wait_until(past_due, timeout=30, what="stage time passed")
    assert await pair.timers(envelope["subject"]) == ["scheduled"]
    assert (await sched_repo.gate_state(pair.sched_pool))["watermark"] is None

    async with pair.sched_pool.acquire() as conn:  # the scheduler catches up to the statement's offsets
        await conn.execute(
            "UPDATE consumer_positions SET next_offset = next_offset + 1 WHERE topic = 'dunning.payments.v1'"
        )
        if not applied:
            await conn.execute(
                "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ('dunning.payments.v1', 0, 1)"
            )
    await pair.wait_timers(envelope["subject"], ["fired"])


async def test_payment_before_its_invoice_while_reconciliation_lags_is_never_chased(pair):
    external_id = f"ERP-{uuid.uuid4().hex[:10]}"
    pair.recon_consumer.paused = True
    await asyncio.sleep(0.5)
    view = await pair.pay(external_id=external_id)  # no such invoice yet: kept for a late match
    assert view["status"] == "unmatched" or view.get("invoice_id") is None
    envelope = invoice_issued(pair.tenant, external_id=external_id)
    await pair.issue(envelope)
    await pair.wait_timers(envelope["subject"], ["scheduled"])  # the scheduler planned it
    scheduled_at = await pair.sched_pool.fetchval(
        "SELECT scheduled_at FROM timers WHERE invoice_id = $1", envelope["subject"]
    )

    async def past_due():
        return utcnow() > scheduled_at + timedelta(seconds=2)

    await async_wait_until(past_due, timeout=30, what="stage time passed")
    # Watermarks keep coming, but reconciliation has not applied this invoice: the stage waits.
    assert (await sched_repo.gate_state(pair.sched_pool))["watermark"] > scheduled_at
    assert await pair.timers(envelope["subject"]) == ["scheduled"]

    pair.recon_consumer.paused = False  # the late match publishes the payment; the plan is cancelled
    await pair.wait_timers(envelope["subject"], ["cancelled"])


async def test_the_watermark_stays_below_a_payment_transaction_still_open(pair):
    async with pair.recon_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        acknowledged_at = await acknowledge_time(conn)
        before = pair.watermark.published
        # Statements keep coming (no acknowledgement waits for the publisher, nor it for them)...
        await async_wait_until(lambda: _async(pair.watermark.published >= before + 3), timeout=10, what="statements")
        # ...but none covers the open transaction's acknowledgement.
        assert pair.watermark.last["watermark"] < acknowledged_at
        await tx.commit()
    await async_wait_until(
        lambda: _async(pair.watermark.last["watermark"] > acknowledged_at),
        timeout=10,
        what="watermark past the committed acknowledgement",
    )


async def _async(value):
    return value
