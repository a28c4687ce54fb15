"""Notifier test helpers: StageEscalated payloads, a migrated schema with a pool, settings."""

import asyncio
import contextlib
import copy
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from dunning import events, inbox
from dunning.db import create_pool
from dunning.ids import new_id
from dunning_notifier.bootstrap import build_dispatcher
from dunning_notifier.handlers import record_delivery
from dunning_notifier.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples" / "StageEscalated" / "1"


def example_data(name: str = "eur-soft-after-partial-payment") -> dict:
    return copy.deepcopy(orjson.loads((EXAMPLES / f"{name}.json").read_bytes())["data"])


def _stage_data(*, tenant_id: str = "ten_test_notifier", stage: str = "soft", channel: str = "email",
               email: str | None = None, locale: str = "en-US", currency: str = "USD", amount: str = "1250.00",
               payment_url: str | None = "https://pay.example.com/i/abc", name: str = "Acme Widgets Inc.",
               invoice_id: str | None = None, due_date: str = "2026-11-16") -> dict:
    data = example_data()
    data.update(stage_id=new_id("stg"), invoice_id=invoice_id or new_id("inv"), tenant_id=tenant_id, stage=stage,
                template=stage, channel=channel, fired_at="2026-11-23T08:00:01.204Z")
    data["invoice"].update(currency=currency, amount_due=amount, balance=amount, payment_url=payment_url,
                           due_date=due_date, number=f"INV-{uuid.uuid4().hex[:6].upper()}")
    data["customer"].update(name=name, email=email or f"ap+{uuid.uuid4().hex[:10]}@example.com", locale=locale,
                            timezone="America/New_York")
    return data


def _stage_escalated(data: dict) -> dict:
    envelope = events.new_event("dunning.StageEscalated.v1", data, source="/scheduler",
                                subject=data["invoice_id"], tenant_id=data["tenant_id"])
    events.validate(envelope)
    return envelope


@pytest.fixture
async def notifier_pool(infra, migrated):
    """A pool on a fresh schema migrated with the plumbing tables and the notifier's."""
    pool = await create_pool(infra.database_url, migrated(MIGRATIONS), min_size=1, max_size=8)
    yield pool
    await pool.close()


def _notifier_settings(**overrides) -> Settings:
    base = dict(dispatch_concurrency=4, poll_seconds=0.02, retry_base_seconds=0.05, retry_max_seconds=0.5,
                lease_seconds=30, smtp_timeout=5, smtp_send_timeout=10, relay_enabled=False)
    base.update(overrides)
    return Settings(**base)


async def _outbox_events(conn: asyncpg.Connection | asyncpg.Pool, invoice_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", invoice_id)
    return [orjson.loads(bytes(r["payload"])) for r in rows]


async def _consume(pool: asyncpg.Pool, envelope: dict) -> None:
    """Apply a StageEscalated exactly as the consumer runner does (inbox + handler, one transaction)."""
    event = events.decode(events.dumps(envelope))
    async with pool.acquire() as conn, conn.transaction():
        if await inbox.claim(conn, event.id, event.type, "dunning.stages.v1"):
            await record_delivery(conn, event)


@contextlib.asynccontextmanager
async def _running_dispatcher(pool: asyncpg.Pool, settings: Settings):
    dispatcher = build_dispatcher(pool, settings)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=30)


async def _mail_to(api: str, address: str) -> list[dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(f"{api}/messages", params={"to": address})
        resp.raise_for_status()
        return [m for m in resp.json()["messages"] if m["to"].lower() == address.lower()]


# The helpers above, as fixtures (test modules cannot import conftest under --import-mode=importlib).
@pytest.fixture(scope="session")
def stage_data():
    return _stage_data


@pytest.fixture(scope="session")
def stage_escalated():
    return _stage_escalated


@pytest.fixture(scope="session")
def notifier_settings():
    return _notifier_settings


@pytest.fixture(scope="session")
def outbox_events():
    return _outbox_events


@pytest.fixture(scope="session")
def consume():
    return _consume


@pytest.fixture(scope="session")
def running_dispatcher():
    return _running_dispatcher


@pytest.fixture(scope="session")
def mail_to():
    return _mail_to
