"""Fixtures for the scheduler's integration tests: a migrated schema with a tenant, event builders,
and helpers to apply events through the handlers and read the outbox."""

from functools import partial

import orjson
import pytest

from dunning import tenancy
from dunning.db import create_pool, migrations_of
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


async def timers(pool, invoice_id: str) -> list:
    return await pool.fetch("SELECT * FROM timers WHERE invoice_id = $1 ORDER BY sequence, channel", invoice_id)


async def read_topic(bootstrap: str, topic: str, want, timeout: float = 20.0) -> list[dict]:
    """The envelopes on `topic`, read from the start until `want(envelopes)` holds."""
    return await kafka.read_topic(bootstrap, topic, want, timeout, decode=lambda r: orjson.loads(r.value))


class Helpers:
    invoice_issued = staticmethod(invoice_issued)
    payment_received = staticmethod(payment_received)
    apply = staticmethod(apply)
    outbox_events = staticmethod(outbox_events)
    timers = staticmethod(timers)
    read_topic = staticmethod(read_topic)
    TENANT = TENANT
    API_KEY = API_KEY


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
