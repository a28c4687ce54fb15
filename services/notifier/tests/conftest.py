"""Notifier test helpers: StageEscalated and CustomerUpdated payloads, a migrated schema with a pool,
settings, an SMTP server inside the test (aiosmtpd) that records every message it accepts, notifier
processes."""

import asyncio
import contextlib
import copy
import email
import email.policy
import mailbox
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from functools import partial

import asyncpg
import httpx
import orjson
import pytest
from aiosmtpd.smtp import SMTP

from dunning import events
from dunning.db import create_pool, migrations_of
from dunning.events import schemas_dir
from dunning.handler_table import topics_of
from dunning.ids import new_id
from dunning_notifier.bootstrap import build_dispatcher
from dunning_notifier.handlers import HANDLERS
from dunning_notifier.settings import Settings
from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.service import ServiceProc, service_env
from dunning_tools.testing import outbox
from dunning_tools.testing.fixtures import MailServer
from dunning_tools.testing.handlers import apply_event
from dunning_tools.testing.kafka import commit_group_at_end
from dunning_tools.testing.waits import async_wait_until

MIGRATIONS = migrations_of("dunning_notifier")
EXAMPLES = schemas_dir() / "examples" / "StageEscalated" / "1"


def example_data(name: str = "eur-soft-after-partial-payment") -> dict:
    return copy.deepcopy(orjson.loads((EXAMPLES / f"{name}.json").read_bytes())["data"])


def _stage_data(
    *,
    tenant_id: str = "ten_test_notifier",
    stage: str = "soft",
    channel: str = "email",
    email: str | None = None,
    locale: str = "en-US",
    currency: str = "USD",
    amount: str = "1250.00",
    payment_url: str | None = "https://pay.example.com/i/abc",
    name: str = "Acme Widgets Inc.",
    invoice_id: str | None = None,
    due_date: str = "2026-11-16",
) -> dict:
    data = example_data()
    data.update(
        stage_id=new_id("stg"),
        invoice_id=invoice_id or new_id("inv"),
        tenant_id=tenant_id,
        stage=stage,
        template=stage,
        channel=channel,
        fired_at="2026-11-23T08:00:01.204Z",
    )
    data["invoice"].update(
        currency=currency,
        amount_due=amount,
        balance=amount,
        payment_url=payment_url,
        due_date=due_date,
        number=f"INV-{uuid.uuid4().hex[:6].upper()}",
    )
    data["customer"].update(
        name=name, email=email or f"ap+{uuid.uuid4().hex[:10]}@example.com", locale=locale, timezone="America/New_York"
    )
    return data


def _stage_escalated(data: dict) -> dict:
    envelope = events.new_event(
        "dunning.StageEscalated.v1", data, source="/scheduler", subject=data["invoice_id"], tenant_id=data["tenant_id"]
    )
    events.validate(envelope)
    return envelope


def _customer_updated(
    *,
    customer_id: str,
    version: int,
    email: str,
    cc: list[str] | tuple[str, ...] = (),
    name: str = "Acme Widgets Inc.",
    locale: str = "en-US",
    timezone: str = "America/New_York",
    tenant_id: str = "ten_test_notifier",
    **optional,
) -> dict:
    """A CustomerUpdated envelope (validated) for this customer's state at `version` (`optional`: e.g.
    phone, postal_address)."""
    example = schemas_dir() / "examples" / "CustomerUpdated" / "1" / "new-ap-contact-with-cc.json"
    data = orjson.loads(example.read_bytes())["data"]
    data.update(
        customer_id=customer_id,
        tenant_id=tenant_id,
        version=version,
        email=email,
        cc=list(cc),
        name=name,
        locale=locale,
        timezone=timezone,
        previous_timezone=timezone,
        changed=["email", "cc"],
        **optional,
    )
    envelope = events.new_event(
        "dunning.CustomerUpdated.v1", data, source="/invoice-ingest", subject=customer_id, tenant_id=tenant_id
    )
    events.validate(envelope)
    return envelope


def _notice_item(
    *,
    stage: str | None = "soft",
    currency: str = "EUR",
    amount: str = "1000.00",
    balance: str | None = None,
    invoice_id: str | None = None,
    due_date: str = "2026-11-02",
    charges: dict | None = None,
    payment_url: str | None = None,
) -> dict:
    """One item of a NoticeComposed: an invoice with a stage firing in the notice, or (stage None) one
    listed because it is overdue."""
    number = f"INV-{uuid.uuid4().hex[:6].upper()}"
    item = {
        "invoice_id": invoice_id or new_id("inv"),
        "stage_id": new_id("stg") if stage else None,
        "stage": stage,
        "sequence": {"soft": 1, "firm": 2, "final": 3}.get(stage or "", 1) if stage else None,
        "template": stage,
        "invoice": {
            "external_id": f"ext-{number}",
            "number": number,
            "currency": currency,
            "amount_due": amount,
            "balance": balance or amount,
            "issue_date": "2026-10-03",
            "due_date": due_date,
            "payment_url": payment_url or f"https://pay.example.com/i/{number}",
        },
    }
    if charges is not None:
        item["charges"] = charges
    return item


def _notice_data(
    items: list[dict],
    *,
    tenant_id: str = "ten_test_notifier",
    email: str | None = None,
    locale: str = "en-US",
    channel: str = "email",
    composed_at: str = "2026-11-30T09:00:00.000Z",
) -> dict:
    """A NoticeComposed payload for a fresh customer (the StageEscalated example's, renamed)."""
    customer = dict(example_data()["customer"])
    customer.update(
        customer_id=new_id("cus"),
        email=email or f"ap+{uuid.uuid4().hex[:10]}@example.com",
        locale=locale,
        timezone="America/New_York",
    )
    return {
        "notice_id": new_id("ntc"),
        "tenant_id": tenant_id,
        "customer_id": customer["customer_id"],
        "channel": channel,
        "composed_at": composed_at,
        "customer": customer,
        "items": items,
    }


def _notice_composed(data: dict) -> dict:
    envelope = events.new_event(
        "dunning.NoticeComposed.v1", data, source="/scheduler", subject=data["customer_id"], tenant_id=data["tenant_id"]
    )
    events.validate(envelope)
    return envelope


_CAUSE_PREFIX = {"hold": "hld", "dispute": "dsp", "promise": "prm", "payment_plan": "pln", "settled": "rev"}


def _stop_event(kind: str, invoice_id: str, *, tenant_id: str = "ten_test_notifier", **fields) -> dict:
    """A validated stop of an invoice as the scheduler publishes it, with no stage left (the notifier
    reads only the invoice and the reason): `stopped` (StagesCancelled, `reason`), `paused`
    (DunningPaused, `cause`) or `resumed` (DunningResumed, `cause`, `reason`)."""
    now = "2026-11-30T10:00:00.000Z"
    common = dict(invoice_id=invoice_id, tenant_id=tenant_id, stages=[])
    if kind == "stopped":
        event_type = "dunning.StagesCancelled.v1"
        data = dict(common, reason="invoice_settled", cause_event_id=str(uuid.uuid4()), cancelled_at=now)
    else:
        cause = fields.get("cause", "hold")
        common.update(cause=cause, cause_id=new_id(_CAUSE_PREFIX[cause]))
        if kind == "paused":
            event_type = "dunning.DunningPaused.v1"
            data = dict(common, cause_event_id=str(uuid.uuid4()), paused_at=now)
        else:
            event_type = "dunning.DunningResumed.v1"
            data = dict(common, reason="hold_released", resume_mode="spaced", resumed_at=now)
    data.update(fields)
    envelope = events.new_event(event_type, data, source="/scheduler", subject=invoice_id, tenant_id=tenant_id)
    events.validate(envelope)
    return envelope


@pytest.fixture
async def notifier_pool(infra, migrated):
    """A pool on a fresh schema migrated with the plumbing tables and the notifier's."""
    pool = await create_pool(infra.database_url, migrated(MIGRATIONS), min_size=1, max_size=8)
    yield pool
    await pool.close()


def _notifier_settings(**overrides) -> Settings:
    base = dict(
        dispatch_concurrency=4,
        poll_seconds=0.02,
        retry_base_seconds=0.05,
        retry_max_seconds=0.5,
        lease_seconds=30,
        smtp_timeout=5,
        smtp_send_timeout=10,
        relay_enabled=False,
    )
    base.update(overrides)
    return Settings(**base)


@contextlib.asynccontextmanager
async def _running_dispatcher(pool: asyncpg.Pool, settings: Settings):
    dispatcher = build_dispatcher(pool, settings)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=30)


@dataclass
class Notifier:
    """The notifier in process on this test's schema: StageEscalated in, a dispatcher sending (to the
    test mail server unless told otherwise), and what came out read back: deliveries, mail, outbox."""

    pool: asyncpg.Pool
    mailserver: MailServer

    async def receive(self, data: dict) -> dict:
        """Apply the StageEscalated event of this payload as the consumer does; returns its envelope."""
        envelope = _stage_escalated(data)
        await self.redeliver(envelope)
        return envelope

    async def compose(self, data: dict) -> dict:
        """Apply the NoticeComposed event of this payload as the consumer does; returns its envelope."""
        envelope = _notice_composed(data)
        await self.redeliver(envelope)
        return envelope

    async def notice(self, notice_id: str):
        return await self.pool.fetchrow("SELECT * FROM notices WHERE notice_id = $1", notice_id)

    async def wait_notice(self, notice_id: str, state: str):
        async def check():
            row = await self.notice(notice_id)
            return row if row is not None and row["state"] == state else None

        return await async_wait_until(check, what=f"notice {state}")

    async def redeliver(self, envelope: dict) -> None:
        await apply_event(self.pool, envelope, topic="dunning.stages.v1", handlers=HANDLERS)

    async def stop(self, kind: str, invoice_id: str, **fields) -> dict:
        """Apply a stop of the invoice (see _stop_event) as the consumer does; returns its envelope."""
        envelope = _stop_event(kind, invoice_id, **fields)
        await self.redeliver(envelope)
        return envelope

    async def customer_updated(self, **customer) -> dict:
        """Apply a CustomerUpdated (see _customer_updated for the fields) as the consumer does."""
        envelope = _customer_updated(**customer)
        await apply_event(self.pool, envelope, topic="dunning.customers.v1", handlers=HANDLERS)
        return envelope

    def dispatching(self, smtp_port: int | None = None, **settings):
        """A dispatcher running for the block, sending to `smtp_port` (default: the mail server)."""
        port = self.mailserver.smtp_port if smtp_port is None else smtp_port
        return _running_dispatcher(self.pool, _notifier_settings(smtp_port=port, **settings))

    async def delivery(self, invoice_id: str, channel: str = "email"):
        return await self.pool.fetchrow(
            "SELECT * FROM deliveries WHERE invoice_id = $1 AND channel = $2", invoice_id, channel
        )

    async def leased(self, invoice_id: str, *, seconds_left: float) -> None:
        """As if a replica had claimed the delivery (one attempt) with a lease ending `seconds_left`
        from now (negative: it has expired)."""
        await self.pool.execute(
            "UPDATE deliveries SET state = 'sending', attempts = 1,"
            " claimed_until = now() + make_interval(secs => $2) WHERE invoice_id = $1",
            invoice_id,
            seconds_left,
        )

    async def wait_state(self, invoice_id: str, state: str, channel: str = "email"):
        async def check():
            row = await self.delivery(invoice_id, channel)
            return row if row is not None and row["state"] == state else None

        return await async_wait_until(check, what=f"delivery {state}")

    async def mail_to(self, address: str) -> list[dict]:
        return await asyncio.to_thread(messages_to, self.mailserver.api, address)

    async def mail_for(self, address: str) -> list[EmailMessage]:
        """Every message whose SMTP envelope had `address` among its recipients (To or Cc), as the
        server stored it (its X-Envelope-To trace header lists the envelope's recipients)."""
        async with httpx.AsyncClient(base_url=self.mailserver.api, timeout=10) as client:
            listed = (await client.get("/messages", params={"to": address})).json()["messages"]
        box = mailbox.Maildir(self.mailserver.directory, create=False)
        found = []
        for item in listed:
            if address.lower() in (a.lower() for a in item["to"].split(", ")):
                raw = await asyncio.to_thread(box.get_bytes, item["id"])
                found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found

    async def reported(self, invoice_id: str) -> list[dict]:
        """The events the notifier wrote to its outbox about this invoice."""
        return await outbox.outbox_events(self.pool, invoice_id=invoice_id)


@pytest.fixture
def notifier(notifier_pool, mailserver) -> Notifier:
    return Notifier(notifier_pool, mailserver)


@dataclass(frozen=True)
class Received:
    """One message as the SMTP server accepted it."""

    message_id: str
    headers: dict[str, str]  # the X-Dunning-* headers
    helo: str  # the client's EHLO name: tells replicas apart

    @property
    def invoice_id(self) -> str:
        return self.headers.get("X-Dunning-Invoice-Id", "")

    @property
    def delivery_id(self) -> str:
        return self.headers.get("X-Dunning-Delivery-Id", "")


@dataclass
class SmtpCapture:
    """An aiosmtpd server on the test's own event loop, so that a test can act at the exact moment a
    message arrives. A message is stored (queued) as soon as its data is in, as a real server does
    before it replies; `on_data` then runs before the reply and may delay it (the message stays
    stored even if the client gives up waiting), return another reply (the message is refused and
    dropped), or arrange something (a kill) for after the 250."""

    port: int = 0
    accepted: list[Received] = field(default_factory=list)
    on_data: Callable[[Received], Awaitable[str | None]] | None = None

    async def handle_DATA(self, server, session, envelope):
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(
            envelope.original_content or envelope.content
        )
        received = Received(
            message_id=str(headers["Message-ID"]),
            helo=session.host_name or "",
            headers={k: str(v) for k, v in headers.items() if k.lower().startswith("x-dunning")},
        )
        self.accepted.append(received)
        queued_as = len(self.accepted)
        reply = await self.on_data(received) if self.on_data else None
        if reply is not None:
            self.accepted.remove(received)
            return reply
        return f"250 2.0.0 OK queued as q{queued_as}"

    def copies(self, invoice_ids) -> dict[str, int]:
        """Messages accepted per Message-ID, for these invoices only (a notifier process consumes
        the whole stages topic, which other tests share)."""
        counts: dict[str, int] = {}
        for m in self.accepted:
            if m.invoice_id in invoice_ids:
                counts[m.message_id] = counts.get(m.message_id, 0) + 1
        return counts


@pytest.fixture
async def smtp_capture():
    capture = SmtpCapture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(capture, hostname="localhost", loop=loop), "127.0.0.1", 0)
    capture.port = server.sockets[0].getsockname()[1]
    yield capture
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), timeout=5)


@pytest.fixture
async def notifier_process(infra, schema_name, notifier_pool, tmp_path):
    """A factory: start a notifier process on this test's schema (the one notifier_pool is bound to)
    with the given NOTIFIER_* settings; every process is stopped at the end of the test."""
    started: list[ServiceProc] = []
    group = f"notifier-{schema_name}"

    async def start(smtp_port: int, name: str = "replica-a", **settings) -> ServiceProc:
        if not started:  # the topics are shared by the whole session: this group starts at their end
            await commit_group_at_end(infra.kafka_bootstrap_servers, group, topics_of(HANDLERS))
        port = free_port()
        env = service_env(
            "NOTIFIER_",
            infra.database_url,
            infra.kafka_bootstrap_servers,
            port,
            db_schema=schema_name,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_local_hostname=name,
            consumer_group=group,  # replicas of one test share it
            relay_enabled="false",
            db_pool_min=1,
            **settings,
        )
        log_path = tmp_path / f"{name}-{len(started)}.log"
        proc = ServiceProc(name, "dunning_notifier", port, env, log_path)
        started.append(proc)
        proc.start()
        await proc.wait_ready_async()
        return proc

    yield start
    for p in started:
        await asyncio.to_thread(p.stop)


@pytest.fixture(scope="session")
def stage_data():
    return _stage_data


@pytest.fixture(scope="session")
def stage_escalated():
    return _stage_escalated


@pytest.fixture(scope="session")
def notice_item():
    return _notice_item


@pytest.fixture(scope="session")
def notice_data():
    return _notice_data


@pytest.fixture(scope="session")
def stop_event():
    return _stop_event


@pytest.fixture(scope="session")
def customer_updated():
    return _customer_updated


@pytest.fixture(scope="session")
def notifier_settings():
    return _notifier_settings


@pytest.fixture(scope="session")
def consume():
    return partial(apply_event, topic="dunning.stages.v1", handlers=HANDLERS)
