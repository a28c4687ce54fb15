"""Fixtures for the scheduler's integration tests: a migrated schema with a tenant, event builders,
and helpers to apply events through the handlers and read the outbox."""

from datetime import date, datetime
from decimal import Decimal
from functools import partial

import orjson
import pytest

from dunning import tenancy
from dunning.clock import utcnow
from dunning.db import create_pool, migrations_of
from dunning.events import new_event, validate
from dunning.ids import new_id
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.settings import Settings
from dunning_tools.testing import events, kafka
from dunning_tools.testing.handlers import apply_event
from dunning_tools.testing.outbox import outbox_events

MIGRATIONS = migrations_of("dunning_scheduler")
TENANT = "ten_test01SCHEDULER"
API_KEY = "dk_testkey_scheduler_0123456789"
HANDLERS = handlers_for(ActivePolicies())  # one policy cache, as in a service process


@pytest.fixture
def schema(migrated) -> str:
    return migrated(MIGRATIONS)


@pytest.fixture
def settings(infra, schema) -> Settings:
    # the scheduler alone; the gate has its own tests
    return infra.settings(Settings, schema, relay_poll_seconds=0.05, payments_gate=False)


@pytest.fixture
async def pool(infra, schema):
    pool = await create_pool(infra.database_url, schema, max_size=12)
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", API_KEY)
    yield pool
    await pool.close()


invoice_issued = partial(events.invoice_issued, tenant_id=TENANT)


payment_received = partial(events.payment_received, tenant_id=TENANT)


apply = partial(apply_event, handlers=HANDLERS)


def _change(event_type: str, source: str, data: dict, subject: str | None = None) -> dict:
    envelope = new_event(
        event_type, data, source=source, subject=subject or data["invoice_id"], tenant_id=data["tenant_id"]
    )
    validate(envelope)
    return envelope


def invoice_updated(
    issued: dict,
    *,
    version: int,
    due_date: date | None = None,
    amount_due: str | None = None,
    previous: dict | None = None,
    customer: dict | None = None,
) -> dict:
    """An InvoiceUpdated of the invoice `issued` (its InvoiceIssued envelope): its state with the given
    changes, as version `version`; `previous` is the state it changes (default: the issued one)."""
    before = previous or issued["data"]
    data = {k: v for k, v in issued["data"].items() if k != "issued_at"}
    data.update(customer=customer or before["customer"], version=version)
    data["due_date"] = due_date.isoformat() if due_date else before["due_date"]
    data["amount_due"] = amount_due or before["amount_due"]
    changed = [f for f in ("due_date", "amount_due", "customer") if data[f] != before[f]] or ["metadata"]
    data.update(
        changed=changed,
        previous_amount_due=before["amount_due"],
        previous_due_date=before["due_date"],
        updated_at=utcnow(),
    )
    return _change("dunning.InvoiceUpdated.v1", "/invoice-ingest", data)


def invoice_voided(issued: dict, *, version: int) -> dict:
    d = issued["data"]
    data = {
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "external_id": d["external_id"],
        "version": version,
        "reason": "issued in error",
        "voided_at": utcnow(),
    }
    return _change("dunning.InvoiceVoided.v1", "/invoice-ingest", data)


def invoice_written_off(issued: dict, *, version: int) -> dict:
    d = issued["data"]
    data = {
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "external_id": d["external_id"],
        "version": version,
        "reason": "customer insolvent",
        "currency": d["currency"],
        "amount_written_off": d["amount_due"],
        "written_off_at": utcnow(),
    }
    return _change("dunning.InvoiceWrittenOff.v1", "/invoice-ingest", data)


def credit_note_issued(
    issued: dict, *, amount: str, balance: str, settled: bool, acknowledged_at: datetime | None = None
) -> dict:
    d = issued["data"]
    data = {
        "credit_note_id": new_id("cn"),
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "invoice_external_id": d["external_id"],
        "reference": f"CN-{new_id('x')[-8:]}",
        "reason": "goods returned",
        "currency": d["currency"],
        "amount": amount,
        "amount_applied": amount,
        "balance_remaining": str(Decimal(balance)),
        "settled": settled,
        "acknowledged_at": acknowledged_at or utcnow(),
    }
    return _change("dunning.CreditNoteIssued.v1", "/reconciliation", data)


def customer_updated(customer: dict, *, tenant_id: str = TENANT, version: int, **changes) -> dict:
    """A CustomerUpdated of `customer` (an invoice's customer snapshot) with `changes` applied."""
    new = {**customer, **changes}
    data = {
        "customer_id": customer["customer_id"],
        "tenant_id": tenant_id,
        "external_id": new["external_id"],
        "version": version,
        "name": new["name"],
        "email": new["email"],
        "cc": changes.get("cc", []),
        "locale": new["locale"],
        "timezone": new["timezone"],
        "changed": sorted(k for k in changes if k in ("name", "email", "cc", "locale", "timezone")) or ["name"],
        "previous_timezone": customer["timezone"],
        "updated_at": utcnow(),
    }
    return _change("dunning.CustomerUpdated.v1", "/invoice-ingest", data, subject=customer["customer_id"])


async def timers(pool, invoice_id: str) -> list:
    return await pool.fetch("SELECT * FROM timers WHERE invoice_id = $1 ORDER BY sequence, channel", invoice_id)


async def read_topic(bootstrap: str, topic: str, want, timeout: float = 20.0) -> list[dict]:
    """The envelopes on `topic`, read from the start until `want(envelopes)` holds."""
    return await kafka.read_topic(bootstrap, topic, want, timeout, decode=lambda r: orjson.loads(r.value))


class Helpers:
    invoice_issued = staticmethod(invoice_issued)
    payment_received = staticmethod(payment_received)
    invoice_updated = staticmethod(invoice_updated)
    invoice_voided = staticmethod(invoice_voided)
    invoice_written_off = staticmethod(invoice_written_off)
    credit_note_issued = staticmethod(credit_note_issued)
    customer_updated = staticmethod(customer_updated)
    apply = staticmethod(apply)
    outbox_events = staticmethod(outbox_events)
    timers = staticmethod(timers)
    read_topic = staticmethod(read_topic)
    TENANT = TENANT
    API_KEY = API_KEY


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
