"""The cancel guarantee, one failure mode at a time: reconciliation, invoice-ingest (its API, relay and
stops watermark) and the scheduler in this process, on the real PostgreSQL and the real broker, each
in its own schema, with their own consumer groups and their own invoices and watermarks topics (so no
other test's events or statements reach them). The gate requires both services' statements.

- a stalled reconciliation relay: reminders wait, then the paid one (by a payment, or by a settling
  credit note) is cancelled and the unpaid one fires (never the paid one);
- a scheduler that has a watermark statement but has not applied the payments below its offsets:
  nothing fires until it has;
- a payment that arrives before its invoice while reconciliation's consumer lags: the invoice's
  stage waits until reconciliation has matched it, then is cancelled;
- the acknowledgement fence: the watermark stays below a payment transaction still open;
- voids and write-offs: once the scheduler has applied one, the invoice's stage never fires,
  although it falls due with the gate open;
- every stop under the gate: a void acknowledged by invoice-ingest before a stage's time, stuck in
  ingest's stalled relay, keeps the stage from firing although it falls due; ingest's fence keeps
  its watermark below a stop transaction still open;
- issue 10: a stage deferred by a send window is cancelled by a payment acknowledged before its new
  time; a stage pulled into a consolidated notice takes the notice's time, and an invoice paid before
  that time (the payment stuck in the relay) is never pulled in.
"""

import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dunning import outbox, tenancy
from dunning.clock import utcnow
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import dumps, new_event, validate
from dunning.kafka import make_producer
from dunning_ingest import bootstrap as ingest_bootstrap
from dunning_ingest.repository import fence as ingest_fence
from dunning_ingest.settings import Settings as IngestSettings
from dunning_reconciliation import bootstrap as recon_bootstrap
from dunning_reconciliation import credit_notes as recon_credit_notes
from dunning_reconciliation import payments as recon_payments
from dunning_reconciliation.repository import acknowledge_time
from dunning_reconciliation.schemas import CreditNoteIn, PaymentIn
from dunning_reconciliation.settings import Settings as ReconSettings
from dunning_scheduler import bootstrap as sched_bootstrap
from dunning_scheduler import repository as sched_repo
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy
from dunning_scheduler.settings import Settings as SchedSettings
from dunning_tools.testing import events
from dunning_tools.testing.invoices import invoice_in
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


def invoice_issued(tenant_id: str, *, external_id: str | None = None) -> dict:
    return events.invoice_issued(tenant_id=tenant_id, external_id=external_id, amount_due="100.00")


def invoice_closed(issued: dict, kind: str) -> dict:
    """The InvoiceVoided or InvoiceWrittenOff (version 2) that invoice-ingest publishes for `issued`."""
    d = issued["data"]
    data = {"invoice_id": d["invoice_id"], "tenant_id": d["tenant_id"], "external_id": d["external_id"], "version": 2}
    if kind == "void":
        event_type, more = "dunning.InvoiceVoided.v1", {"reason": "issued in error", "voided_at": utcnow()}
    else:
        event_type = "dunning.InvoiceWrittenOff.v1"
        more = {"reason": "insolvent", "currency": d["currency"], "amount_written_off": d["amount_due"]}
        more["written_off_at"] = utcnow()
    envelope = new_event(
        event_type, {**data, **more}, source="/invoice-ingest", subject=d["invoice_id"], tenant_id=d["tenant_id"]
    )
    validate(envelope)
    return envelope


API_KEY = "dk_test_cancel_guarantee_0123456789abcdef"
# invoice-ingest writes its events to the catalogue's invoices topic; in this test's ingest schema a
# trigger moves them to the test's own (the fence, the outbox, the relay and the statements are
# ingest's own code, only the topic differs).
_REROUTE = """
CREATE FUNCTION reroute_invoices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.topic = 'dunning.invoices.v1' THEN NEW.topic := TG_ARGV[0]; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reroute_invoices BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION reroute_invoices('{topic}');
"""


class Pair:
    """Reconciliation (consumer, watermark publisher, relay), invoice-ingest (API, relay, stops
    watermark) and the scheduler (consumer, firing loop)."""

    def __init__(self, infra, stage_offset_seconds: int):
        run = uuid.uuid4().hex[:10]
        self.infra = infra
        self.tenant = f"ten_gate{run}"
        self.invoices_topic = f"dunning.gate{run}-invoices.v1"  # topic names as the catalogue's
        self.watermarks_topic = f"dunning.gate{run}-watermarks.v1"
        self.recon_schema, self.sched_schema, self.ingest_schema = f"r_{run}", f"s_{run}", f"i_{run}"
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
        migrate(infra.database_url, self.ingest_schema, migrations_of("dunning_ingest"))
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
        self.ingest_settings = IngestSettings(
            db_schema=self.ingest_schema, watermark_interval_seconds=0.1, auth_cache_seconds=0, **common
        )
        self.recon_pool = await create_pool(infra.database_url, self.recon_schema, max_size=8)
        self.sched_pool = await create_pool(infra.database_url, self.sched_schema, max_size=8)
        self.ingest_pool = await create_pool(infra.database_url, self.ingest_schema, max_size=8)
        async with self.ingest_pool.acquire() as conn:
            await conn.execute(_REROUTE.format(topic=self.invoices_topic))
            await tenancy.provision(conn, self.tenant, "Gate Test Ltd", API_KEY)
        self.ingest = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingest_bootstrap.build_app(self.ingest_settings, self.ingest_pool)),
            base_url="http://ingest",
            headers={"authorization": f"Bearer {API_KEY}"},
        )
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
        self.ingest_watermark = ingest_bootstrap.watermark_for(self.ingest_settings, self.ingest_pool, self.producer)
        self.ingest_relay = ingest_bootstrap.relay_for(self.ingest_settings, self.ingest_pool, self.producer)
        self.workers = [self.recon_consumer, self.watermark, self.recon_relay, self.sched_consumer, self.firing]
        self.workers += [self.ingest_watermark, self.ingest_relay]
        self.tasks = [asyncio.create_task(w.run()) for w in self.workers]

        async def warm():  # both consumers joined and both services' statements went through
            gate = await sched_repo.gate_state(self.sched_pool)
            return gate["watermark"] is not None and self.recon_consumer.processed > 0

        await self.issue(invoice_issued(self.tenant))  # a first invoice: both consumers take it
        await async_wait_until(warm, timeout=60, what="consumers joined, watermark flowing")

    async def stop(self) -> None:
        for w in self.workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), timeout=30)
        await self.producer.stop()
        await self.ingest.aclose()
        for pool in (self.recon_pool, self.sched_pool, self.ingest_pool):
            await pool.close()

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

    async def credit(self, invoice_id: str) -> dict:
        """A credit note for the whole amount (settles the invoice), through reconciliation's API path."""
        body = CreditNoteIn(
            invoice_id=invoice_id,
            reference=f"CN-{uuid.uuid4().hex[:12]}",
            amount="100.00",
            currency="EUR",
            reason="goods returned",
        )
        status, view = await recon_credit_notes.record_credit_note(self.recon_pool, self.tenant, body)
        assert status == 201
        return view

    async def ingest_invoice(self) -> str:
        """An invoice issued through invoice-ingest's API (issued now: its stage is `offset` s away)."""
        today = utcnow().date()
        body = invoice_in(
            external_id=f"in_{uuid.uuid4().hex[:12]}",
            amount_due="100.00",
            issue_date=today.isoformat(),
            due_date=(today + timedelta(days=14)).isoformat(),
        )
        r = await self.ingest.post("/v1/invoices", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def reasons(self, invoice_id: str) -> list[str | None]:
        return [
            r["reason"]
            for r in await self.sched_pool.fetch(
                "SELECT reason FROM timers WHERE invoice_id = $1 ORDER BY sequence", invoice_id
            )
        ]

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


@pytest.mark.parametrize(
    "settle, reason",
    [
        pytest.param("pay", "invoice_settled", id="payment"),
        pytest.param("credit", "invoice_credited", id="credit-note"),
    ],
)
async def test_stalled_reconciliation_relay_makes_reminders_wait_and_never_fire_after_payment(pair, settle, reason):
    paid, unpaid = invoice_issued(pair.tenant), invoice_issued(pair.tenant)
    for envelope in (paid, unpaid):
        await pair.issue(envelope)
    await pair.wait_timers(paid["subject"], ["scheduled"])
    await pair.wait_timers(unpaid["subject"], ["scheduled"])
    async with pair.recon_pool.acquire() as conn:
        await outbox.set_paused(conn, True, by="test")
    await async_wait_until(lambda: _async(pair.recon_consumer.processed >= 3), timeout=30, what="recon has both")
    view = await getattr(pair, settle)(paid["subject"])  # acknowledged before the stage's time; stuck in the outbox
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
    assert await pair.reasons(paid["subject"]) == [reason]


@pytest.mark.parametrize("kind, reason", [("void", "invoice_voided"), ("write_off", "invoice_written_off")])
async def test_a_void_or_write_off_the_scheduler_applied_is_never_followed_by_a_reminder(pair, kind, reason):
    closed, open_ = invoice_issued(pair.tenant), invoice_issued(pair.tenant)
    for envelope in (closed, open_):
        await pair.issue(envelope)
    await pair.wait_timers(closed["subject"], ["scheduled"])
    await pair.wait_timers(open_["subject"], ["scheduled"])
    await pair.issue(invoice_closed(closed, kind))  # on the invoices topic, after its InvoiceIssued
    await pair.wait_timers(closed["subject"], ["cancelled"])  # the scheduler applied the stop
    assert await pair.reasons(closed["subject"]) == [reason]
    scheduled_at = await pair.sched_pool.fetchval(
        "SELECT scheduled_at FROM timers WHERE invoice_id = $1", closed["subject"]
    )

    # The stage's time passes with the gate open: the open invoice's reminder fires, the closed one's never.
    await pair.wait_timers(open_["subject"], ["fired"])

    async def gate_past_due():
        gate = await sched_repo.gate_state(pair.sched_pool)
        return gate["watermark"] is not None and gate["watermark"] > scheduled_at + timedelta(seconds=1)

    await async_wait_until(gate_past_due, timeout=30, what="the gate past the stage's time")
    assert await pair.timers(closed["subject"]) == ["cancelled"]
    fired = await pair.sched_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'dunning.StageEscalated.v1'", closed["subject"]
    )
    assert fired == 0


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
    # invoice-ingest's part of the gate open far ahead (no offsets to wait for): only reconciliation's
    # statement is on trial.
    stops = {"service": "invoice-ingest", "watermark": statement["watermark"], "offsets": {}}
    stops["computed_at"] = statement["computed_at"]
    async with pair.sched_pool.acquire() as conn:
        await conn.execute("DELETE FROM watermark_statements")
        await sched_repo.store_watermarks(conn, [(str(uuid.uuid4()), statement)])
        await sched_repo.store_stops_watermarks(conn, [(str(uuid.uuid4()), stops)])
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


# --- every stop under the gate: invoice-ingest's acknowledgements ------------------------------------


@pytest.fixture
async def slow_pair(infra):
    """A pair whose stages are 6 s after issue: time to stall a relay and acknowledge a stop first."""
    pair = Pair(infra, stage_offset_seconds=6)
    await pair.start()
    yield pair
    await pair.stop()


@pytest.mark.parametrize("path, reason", [("void", "invoice_voided"), ("write-off", "invoice_written_off")])
async def test_stalled_ingest_relay_keeps_a_stage_after_a_void_or_write_off_from_firing(slow_pair, path, reason):
    pair = slow_pair
    closed, open_ = await pair.ingest_invoice(), await pair.ingest_invoice()
    await pair.wait_timers(closed, ["scheduled"])
    await pair.wait_timers(open_, ["scheduled"])
    async with pair.ingest_pool.acquire() as conn:
        await outbox.set_paused(conn, True, by="test")
    r = await pair.ingest.post(f"/v1/invoices/{closed}/{path}", json={"reason": "issued in error"})
    assert r.status_code == 200, r.text
    acknowledged_at = await pair.ingest_pool.fetchval(
        "SELECT coalesce(voided_at, written_off_at) FROM invoices WHERE id = $1", closed
    )
    scheduled_at = await pair.sched_pool.fetchval("SELECT scheduled_at FROM timers WHERE invoice_id = $1", closed)
    assert acknowledged_at < scheduled_at  # the stop was acknowledged before the stage's time

    # Past the stage's time (plus a margin): it did not fire; the open invoice's waits too.
    async def past_due():
        return utcnow() > scheduled_at + timedelta(seconds=2)

    await async_wait_until(past_due, timeout=30, what="stage time passed")
    assert await pair.timers(closed) == ["scheduled"]
    assert await pair.timers(open_) == ["scheduled"]
    gate = await sched_repo.gate_state(pair.sched_pool)
    assert gate["watermark"] < acknowledged_at  # held back at the waiting stop
    # Payments alone would have let it go.
    assert datetime.fromisoformat(gate["sources"]["reconciliation"]) > scheduled_at

    async with pair.ingest_pool.acquire() as conn:
        await outbox.set_paused(conn, False, by="test")
    await pair.wait_timers(closed, ["cancelled"])
    await pair.wait_timers(open_, ["fired"])
    assert await pair.reasons(closed) == [reason]


async def test_the_stops_watermark_stays_below_a_stop_transaction_still_open(pair):
    async with pair.ingest_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        acknowledged_at = await ingest_fence.acknowledge_time(conn)
        started_at = await conn.fetchval("SELECT now()")  # the transaction's start
        before = pair.ingest_watermark.published
        # Statements keep coming (no acknowledgement waits for the publisher, nor it for them)...
        await async_wait_until(
            lambda: _async(pair.ingest_watermark.published >= before + 3), timeout=10, what="statements"
        )
        # ...but none reaches the open transaction's start.
        assert pair.ingest_watermark.last["watermark"] < started_at <= acknowledged_at
        await tx.commit()
    await async_wait_until(
        lambda: _async(pair.ingest_watermark.last["watermark"] > acknowledged_at),
        timeout=10,
        what="the stops watermark past the committed acknowledgement",
    )


async def _async(value):
    return value


# -- issue 10: deferrals and consolidated notices under the gate -------------------------------------


async def _put_settings(pair: Pair, document: dict) -> None:
    """The tenant's settings, stored as PUT /v1/settings stores them."""
    from dunning_scheduler.repository import settings as settings_sql
    from dunning_scheduler.settings_store import put_document
    from dunning_scheduler.tenant_settings import parse_settings

    async with pair.sched_pool.acquire() as conn:
        await put_document(conn, settings_sql.SETTINGS, pair.tenant, parse_settings(document).document, "test")
    await asyncio.sleep(2.5)  # the settings cache's TTL (2 s) in the firing loop


async def _stage(pair: Pair, invoice_id: str):
    return await pair.sched_pool.fetchrow(
        "SELECT state, scheduled_at, reason FROM timers WHERE invoice_id = $1", invoice_id
    )


async def test_a_payment_between_a_stage_time_and_its_deferred_time_keeps_it_from_ever_firing(pair):
    """A stage the send window defers (StageDeferred) is scheduled again at the opening: a payment
    acknowledged after the stage's planned time, before the opening, cancels it, though it was due."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")  # the test invoices' customer
    opening = (datetime.now(zone) + timedelta(seconds=10)).replace(microsecond=0)
    if opening.date() != (opening + timedelta(minutes=5)).date():
        pytest.skip("the window would cross midnight in Europe/Berlin")
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": opening.strftime("%H:%M:%S"),
        "end": (opening + timedelta(minutes=5)).strftime("%H:%M:%S"),
        "spread": "PT0S",
    }
    envelope = invoice_issued(pair.tenant)
    await pair.issue(envelope)  # planned with no window: its stage 3 s after issue
    await pair.wait_timers(envelope["subject"], ["scheduled"])
    planned = (await _stage(pair, envelope["subject"]))["scheduled_at"]
    await _put_settings(pair, {"send_window": window})

    async def deferred():
        row = await _stage(pair, envelope["subject"])
        return row["state"] == "scheduled" and row["scheduled_at"] > planned

    await async_wait_until(deferred, timeout=20, what="the stage deferred to the opening")
    row = await _stage(pair, envelope["subject"])
    assert row["scheduled_at"] == opening.astimezone(row["scheduled_at"].tzinfo)
    assert await pair.sched_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'dunning.StageDeferred.v1'", envelope["subject"]
    )
    view = await pair.pay(envelope["subject"])  # after the planned time, before the opening
    assert planned.timestamp() < datetime.fromisoformat(view["acknowledged_at"]).timestamp() < opening.timestamp()
    await pair.wait_timers(envelope["subject"], ["cancelled"])

    async def gate_past_opening():
        gate = await sched_repo.gate_state(pair.sched_pool)
        return gate["watermark"] is not None and gate["watermark"] > opening + timedelta(seconds=1)

    await async_wait_until(gate_past_opening, timeout=30, what="the gate past the opening")
    assert await pair.reasons(envelope["subject"]) == ["invoice_settled"]
    assert not await pair.sched_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'dunning.StageEscalated.v1'", envelope["subject"]
    )


@pytest.fixture
async def notice_pair(infra):
    # Time to pay before the first stage (the fixture's warm-up invoice's, this customer's), with the relay
    # stalled: 10 s was not always enough on a loaded machine (the warm-up's notice fired, rightly, before
    # the payment was acknowledged, pulling the invoice in before it was paid).
    pair = Pair(infra, stage_offset_seconds=16)
    await pair.start()
    yield pair
    await pair.stop()


async def test_a_stage_pulled_into_a_notice_takes_the_notice_time_and_a_paid_one_is_never_pulled(notice_pair):
    """Consolidation: the customer's first stage fires and pulls its other invoices' stages due later
    today into the same notice, at the notice's time (set on the pulled timers, so the gate's
    arithmetic holds); an invoice paid before that time (the payment stuck in reconciliation's relay:
    the gate holds the notice back) is cancelled, never pulled in."""
    pair = notice_pair
    await _put_settings(pair, {"consolidation": {"enabled": True}})
    first, paid = invoice_issued(pair.tenant), invoice_issued(pair.tenant)  # the same customer
    await pair.issue(first)
    await pair.issue(paid)
    await asyncio.sleep(4.0)
    later = invoice_issued(pair.tenant)  # issued (its stage due) 4 s after the first
    await pair.issue(later)
    for envelope in (first, paid, later):
        await pair.wait_timers(envelope["subject"], ["scheduled"])
    notice_at = (await _stage(pair, first["subject"]))["scheduled_at"]
    later_at = (await _stage(pair, later["subject"]))["scheduled_at"]
    assert later_at > notice_at + timedelta(seconds=2)
    async with pair.recon_pool.acquire() as conn:
        await outbox.set_paused(conn, True, by="test")
    await pair.pay(paid["subject"])  # acknowledged before the notice's time; stuck in the outbox

    async def past_notice():
        return utcnow() > notice_at + timedelta(seconds=1)

    await async_wait_until(past_notice, timeout=30, what="the notice's time passed")
    assert await pair.timers(first["subject"]) == ["scheduled"]  # the gate holds the notice back
    async with pair.recon_pool.acquire() as conn:
        await outbox.set_paused(conn, False, by="test")
    await pair.wait_timers(paid["subject"], ["cancelled"])
    await pair.wait_timers(first["subject"], ["fired"])
    await pair.wait_timers(later["subject"], ["fired"])
    # Pulled: at the notice's time, the earliest of the customer's triggering stages (the fixture's
    # warm-up invoice is this customer's too, and due first), never later than the first's own time.
    assert (await _stage(pair, later["subject"]))["scheduled_at"] <= notice_at < later_at
    rows = await pair.sched_pool.fetch("SELECT payload FROM outbox WHERE event_type = 'dunning.NoticeComposed.v1'")
    notices = [n for n in (orjson.loads(r["payload"])["data"] for r in rows) if later["subject"] in str(n["items"])]
    assert len(notices) == 1, notices
    items = notices[0]["items"]
    staged = [i["invoice_id"] for i in items if i["stage_id"]]
    assert first["subject"] in staged and later["subject"] in staged, items
    assert paid["subject"] not in [i["invoice_id"] for i in items]
