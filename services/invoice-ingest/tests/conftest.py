"""Fixtures for invoice-ingest tests: a migrated schema with two tenants, the ASGI app on httpx,
invoice payloads, event builders (from the schema examples) and a helper that applies events the
way the consumer runner does."""

import copy
import uuid
from functools import partial
from types import SimpleNamespace

import httpx
import orjson
import pytest

from dunning import tenancy
from dunning.db import create_pool, migrations_of
from dunning.events import new_event, schemas_dir, validate
from dunning_ingest.bootstrap import build_app
from dunning_ingest.handlers import HANDLERS
from dunning_ingest.settings import Settings
from dunning_tools.testing.handlers import apply_event
from dunning_tools.testing.invoices import customer_in, invoice_in
from dunning_tools.testing.outbox import outbox_events

MIGRATIONS = migrations_of("dunning_ingest")
TENANT, OTHER_TENANT = "ten_test01INGEST", "ten_test02INGEST"
API_KEY, OTHER_KEY = "dk_testkey_ingest_0123456789", "dk_testkey_ingest_other_987654"


@pytest.fixture
def schema(migrated) -> str:
    return migrated(MIGRATIONS)


@pytest.fixture
def settings(infra, schema) -> Settings:
    return infra.settings(Settings, schema, auth_cache_seconds=0)


@pytest.fixture
async def pool(infra, schema):
    pool = await create_pool(infra.database_url, schema, max_size=8)
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", API_KEY)
        await tenancy.provision(conn, OTHER_TENANT, "Globex", OTHER_KEY)
    yield pool
    await pool.close()


@pytest.fixture
async def client(settings, pool):
    app = build_app(settings, pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as c:
        yield c


def invoice_payload(external_id: str | None = None, **overrides) -> dict:
    """invoice_in() from Brandt & Söhne in Berlin, with a payment URL, metadata and (unless given) a
    fresh external_id; `overrides` on top."""
    customer = customer_in(
        external_id="cus_brandt",
        name="Brandt & Söhne GmbH",
        email="ap@brandt-soehne.de",
        locale="de-DE",
        timezone="Europe/Berlin",
    )
    return invoice_in(
        **{
            "external_id": external_id or f"in_{uuid.uuid4().hex[:12]}",
            "number": "INV-2026-00412",
            "customer": customer,
            "payment_url": "https://invoice.example.com/i/412",
            "metadata": {"po_number": "PO-88213"},
            **overrides,
        }
    )


def example(name: str, file: str) -> dict:
    return orjson.loads((schemas_dir() / f"examples/{name}/1/{file}").read_bytes())


def event_like(name: str, file: str, *, tenant_id: str, invoice_id: str, **data) -> dict:
    """A fresh event built with new_event from a schema example, pointed at our invoice."""
    ex = example(name, file)
    payload = copy.deepcopy(ex["data"])
    payload.update(tenant_id=tenant_id, invoice_id=invoice_id, **data)
    envelope = new_event(ex["type"], payload, source=ex["source"], subject=invoice_id, tenant_id=tenant_id)
    validate(envelope)
    return envelope


apply = partial(apply_event, handlers=HANDLERS)


@pytest.fixture
def kit():
    """The helpers above for test modules (test dirs are not packages, so they cannot import conftest)."""
    return SimpleNamespace(
        TENANT=TENANT,
        OTHER_TENANT=OTHER_TENANT,
        API_KEY=API_KEY,
        OTHER_KEY=OTHER_KEY,
        invoice_payload=invoice_payload,
        outbox_events=outbox_events,
        example=example,
        event_like=event_like,
        apply=apply,
    )
