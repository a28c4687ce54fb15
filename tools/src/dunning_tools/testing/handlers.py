"""Applying one event through a service's handler table, as its consumer runner does."""

from collections.abc import Mapping
from typing import Any

from dunning import inbox
from dunning.events import decode, dumps
from dunning.handler_table import HandlerSpec


async def apply_event(pool, envelope: dict, topic: str = "test", *, handlers: Mapping[Any, HandlerSpec]) -> bool:
    """Decode `envelope` (which validates it), claim it in the inbox and run the table's per-event
    handler, in one transaction. False when the inbox had it already (nothing ran)."""
    event = decode(dumps(envelope))
    spec = next(spec for record, spec in handlers.items() if record.TYPE == event.type)
    async with pool.acquire() as conn, conn.transaction():
        if not await inbox.claim(conn, event.id, event.type, topic):
            return False
        await spec.each(conn, event)
    return True
