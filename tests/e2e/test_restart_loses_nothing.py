"""The embedded default loses nothing: an event published before the whole local stack stops is
consumed after it starts again (what `make run`, Ctrl-C, `make run` does).

The stack here is the one `make run` starts (its own embedded PostgreSQL and a broker keeping its data
on disk), on free ports and a temporary directory, stopped whole and started again on the same state.
"""

import asyncio
import uuid

import httpx
import pytest

from dunning_tools.stack.procs import stop
from dunning_tools.stack.system import Ports, Stack
from dunning_tools.testing.story import invoice_body
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e


def outbox_depth(stack: Stack, schema: str) -> int:
    from dunning.db import connect

    async def depth() -> int:
        conn = await connect(stack.database_url, schema)
        try:
            return await conn.fetchval("SELECT count(*) FROM outbox")
        finally:
            await conn.close()

    return asyncio.run(depth())


def test_an_invoice_posted_while_the_scheduler_is_down_is_planned_after_the_whole_stack_restarts(tmp_path):
    from dunning_cli.tenants import create_tenant

    ports = Ports.free()
    stack = Stack(tmp_path, ports, durable=False, durable_broker=True)
    try:
        stack.start_infrastructure()
        stack.start_services()
        tenant = asyncio.run(create_tenant(stack.database_url, f"Restart {uuid.uuid4().hex[:6]}"))
        auth = {"Authorization": f"Bearer {tenant['api_key']}"}
        scheduler = next(sp for sp in stack.procs if sp.name == "scheduler")
        stop(scheduler.proc)

        run = uuid.uuid4().hex[:8]
        created = httpx.post(
            f"{stack.url('invoice-ingest')}/v1/invoices",
            headers=auth,
            json=invoice_body(
                f"R-{run}",
                currency="EUR",
                amount="80.00",
                name="Restart GmbH",
                email=f"ap-{run}@example.com",
                locale="de-DE",
                timezone="Europe/Berlin",
                customer_external_id=f"C-{run}",
            ),
        )
        assert created.status_code == 201, created.text
        invoice_url = f"{stack.url('invoice-ingest')}/v1/invoices/{created.json()['id']}"
        # The event has left the outbox (the relay deletes a row once the broker has it): from here on
        # the broker holds the only copy, and nobody has planned the invoice.
        wait_until(lambda: outbox_depth(stack, "ingest") == 0, timeout=30, what="the relay to publish")
        assert httpx.get(invoice_url, headers=auth).json()["timeline"] == []
    finally:
        stack.stop()

    again = Stack(tmp_path, ports, durable=False, durable_broker=True)
    try:
        again.start_infrastructure()
        again.start_services()
        timeline = wait_until(
            lambda: httpx.get(invoice_url, headers=auth).json()["timeline"],
            timeout=60,
            what="the invoice to be planned after the restart",
        )
        assert {stage["state"] for stage in timeline} == {"scheduled"}
    finally:
        again.stop()
