"""Fixtures for reconciliation's integration tests: a migrated schema with a tenant, its API key
and its Stripe endpoint secret; an HTTP client on the real app; helpers to speak Stripe."""

import time
from functools import partial

import httpx
import orjson
import pytest

from dunning import tenancy
from dunning.clock import utcnow
from dunning.db import create_pool, migrations_of
from dunning.events import decode, dumps, new_event, validate
from dunning.ids import new_id
from dunning_reconciliation import repository as repo
from dunning_reconciliation.api import Deps, create_app
from dunning_reconciliation.handlers import HANDLERS, on_invoice_issued
from dunning_reconciliation.settings import Settings
from dunning_reconciliation.stripe_signature import sign
from dunning_tools.testing import events
from dunning_tools.testing.handlers import apply_event
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


async def apply(pool, envelope: dict) -> bool:
    """Apply any event of the handler table as the consumer runner would (inbox, one transaction)."""
    return await apply_event(pool, envelope, handlers=HANDLERS)


def _change(event_type: str, issued: dict, version: int, **data) -> dict:
    """An invoice change of `issued` (an InvoiceIssued envelope) at `version`, checked against its schema."""
    invoice = issued["data"]
    body = {"invoice_id": invoice["invoice_id"], "tenant_id": invoice["tenant_id"], "version": version, **data}
    envelope = new_event(
        event_type, body, source="/invoice-ingest", subject=invoice["invoice_id"], tenant_id=invoice["tenant_id"]
    )
    validate(envelope)
    return envelope


def invoice_updated(issued: dict, version: int, *, previous: dict | None = None, **changes) -> dict:
    """InvoiceUpdated: `issued`'s state (or `previous`, an earlier InvoiceUpdated's) with `changes`."""
    before = (previous or issued)["data"]
    fields = ("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date")
    state = {k: before[k] for k in (*fields, "payment_url", "metadata")} | changes
    return _change(
        "dunning.InvoiceUpdated.v1",
        issued,
        version,
        **state,
        changed=sorted(k for k in changes if k in ("number", "customer", "amount_due", "due_date", "metadata")),
        previous_amount_due=before["amount_due"],
        previous_due_date=before["due_date"],
        updated_at=utcnow(),
    )


def invoice_voided(issued: dict, version: int, reason: str = "issued in error") -> dict:
    external_id = issued["data"]["external_id"]
    return _change(
        "dunning.InvoiceVoided.v1", issued, version, external_id=external_id, reason=reason, voided_at=utcnow()
    )


def invoice_written_off(
    issued: dict, version: int, amount: str, *, reason: str = "customer insolvent", at=None
) -> dict:
    data = issued["data"]
    return _change(
        "dunning.InvoiceWrittenOff.v1",
        issued,
        version,
        external_id=data["external_id"],
        reason=reason,
        currency=data["currency"],
        amount_written_off=amount,
        written_off_at=at or utcnow(),
    )


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


async def outbox_events(pool, invoice_id: str | None = None, event_type: str | None = None) -> list[dict]:
    return await shared_outbox_events(pool, event_type, invoice_id=invoice_id, topic="dunning.payments.v1")


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
        apply=apply,
        invoice_updated=invoice_updated,
        invoice_voided=invoice_voided,
        invoice_written_off=invoice_written_off,
        stripe_event=stripe_event,
        invoice_paid=invoice_paid,
        payment_intent=payment_intent,
        post_webhook=post_webhook,
        outbox_events=outbox_events,
        counts=counts,
    )
