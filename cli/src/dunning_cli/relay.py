"""Pause, resume or show a service's outbox relay: the flag is in the service's schema, so it holds
every replica at once (`dunning.outbox`)."""

import os

from dunning import outbox
from dunning.db import connect
from dunning_cli.services import schema_of, service_name


async def relay(dsn: str, action: str, service: str) -> dict:
    service = service_name(service)
    conn = await connect(dsn, schema_of(service))
    try:
        if action != "status":
            await outbox.set_paused(conn, action == "pause", by=f"admin:{os.environ.get('USER', '?')}")
        state = await outbox.relay_state(conn)
    finally:
        await conn.close()
    return {
        "service": service,
        "paused": state["paused"],
        "changed_at": state["changed_at"].isoformat(),
        "changed_by": state["changed_by"],
        "outbox_rows_waiting": state["waiting"],
    }
