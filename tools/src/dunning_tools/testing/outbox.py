"""What a service left in its outbox, read the way tests assert on it."""

import orjson

from dunning.dead_letters import DEAD_LETTER_TOPIC
from dunning.events import validate


async def outbox_events(
    db, event_type: str | None = None, invoice_id: str | None = None, *, topic: str | None = None
) -> list[dict]:
    """The envelopes waiting in the outbox of `db`'s schema (a pool or a connection), oldest first:
    those of `event_type`, about `invoice_id` (their subject, which is also their key) and on `topic`,
    where given. Each one returned is checked against its contract, as every consumer reads it.
    Dead letters (the original bytes of what a consumer refused, maybe not JSON) are no envelopes: skipped."""
    found = []
    for row in await db.fetch("SELECT topic, payload FROM outbox ORDER BY id"):
        if topic not in (None, row["topic"]) or row["topic"] == DEAD_LETTER_TOPIC:
            continue
        envelope = orjson.loads(bytes(row["payload"]))
        if event_type in (None, envelope["type"]) and invoice_id in (None, envelope["subject"]):
            validate(envelope)
            found.append(envelope)
    return found
