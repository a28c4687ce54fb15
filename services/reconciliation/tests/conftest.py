"""Fixtures for reconciliation's integration tests: a migrated schema with a tenant, its API key
and its Stripe endpoint secret; an HTTP client on the real app; helpers to speak Stripe."""

import time
from functools import partial

import httpx
import orjson
import pytest

from dunning import tenancy
from dunning.db import create_pool, migrations_of
from dunning.events import decode, dumps
from dunning.ids import new_id
from dunning_reconciliation import repository as repo
from dunning_reconciliation.api import Deps, create_app
from dunning_reconciliation.handlers import on_invoice_issued
from dunning_reconciliation.settings import Settings
from dunning_reconciliation.stripe_signature import sign
from dunning_tools.testing import events
from dunning_tools.testing.outbox import outbox_events as shared_outbox_events

MIGRATIONS = migrations_of("dunning_reconciliation")
TENANT = "ten_test_reconciliation"
API_KEY = "dk_test_reconciliation_key_0123456789"
SECRET = "whsec_test_reconciliation_secret"


@pytest.fixture
async def pool(infra, migrated):
    schema = migrated(MIGRATIONS)
    pool = await create_pool(infra.database_url, schema, min_size=1, max_size=5)
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", API_KEY)
        await repo.add_webhook_secret(conn, TENANT, SECRET)
    yield pool
    await pool.close()


@pytest.fixture
def settings(infra, pool) -> Settings:
    return infra.settings(Settings, "unused", relay_poll_seconds=0.05)


@pytest.fixture
async def client(pool, settings):
    app = create_app(Deps(pool, settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


invoice_issued = partial(events.invoice_issued, tenant_id=TENANT)


async def handle_invoice(pool, envelope: dict) -> None:
    """Apply InvoiceIssued as the consumer runner would (inside a transaction)."""
    async with pool.acquire() as conn, conn.transaction():
        await on_invoice_issued(conn, decode(dumps(envelope)))


def stripe_event(type_: str, obj: dict, event_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": event_id or f"evt_{new_id('x')[2:]}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "type": type_,
            "data": {"object": obj},
        }
    )


def invoice_paid(invoice_id: str, amount_paid: int, currency: str = "eur", **extra) -> dict:
    return {
        "id": f"in_{new_id('x')[2:]}",
        "object": "invoice",
        "number": None,
        "amount_paid": amount_paid,
        "currency": currency,
        "metadata": {"dunning_invoice_id": invoice_id},
        "status_transitions": {"paid_at": int(time.time()) - 5},
        **extra,
    }


def payment_intent(metadata: dict, amount_received: int, currency: str = "eur") -> dict:
    return {
        "id": f"pi_{new_id('x')[2:]}",
        "object": "payment_intent",
        "amount": amount_received,
        "amount_received": amount_received,
        "currency": currency,
        "metadata": metadata,
        "created": int(time.time()) - 60,
        "invoice": None,
        "status": "succeeded",
    }


async def post_webhook(
    client, body: bytes, *, secret: str = SECRET, tenant_id: str = TENANT, header: str | None = None
):
    return await client.post(
        f"/v1/webhooks/stripe/{tenant_id}",
        content=body,
        headers={
            "Stripe-Signature": header if header is not None else sign(body, secret),
            "Content-Type": "application/json",
        },
    )


async def outbox_events(pool, invoice_id: str | None = None) -> list[dict]:
    return await shared_outbox_events(pool, invoice_id=invoice_id, topic="dunning.payments.v1")


async def counts(pool) -> dict:
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ("payments", "outbox", "stripe_events")}


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def h():
    """The helpers above, for test modules (conftest is not importable under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        TENANT=TENANT,
        API_KEY=API_KEY,
        SECRET=SECRET,
        AUTH=AUTH,
        invoice_issued=invoice_issued,
        handle_invoice=handle_invoice,
        stripe_event=stripe_event,
        invoice_paid=invoice_paid,
        payment_intent=payment_intent,
        post_webhook=post_webhook,
        outbox_events=outbox_events,
        counts=counts,
    )
