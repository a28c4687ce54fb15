"""Dead-lettering: a message that can never be applied goes, with why, to `dunning.deadletter.v1`
through the outbox, and its id is marked in the inbox so that a redelivery is not tried again."""

import uuid

import asyncpg
from aiokafka import ConsumerRecord

from dunning import inbox, outbox
from dunning.logging import get_logger

log = get_logger(__name__)

DEAD_LETTER_TOPIC = "dunning.deadletter.v1"


async def dead_letter(
    conn: asyncpg.Connection,
    record: ConsumerRecord,
    reason: str,
    error: str,
    consumer: str,
    group_id: str,
    *,
    event_id: str | None,
    event_type: str = "unknown",
) -> None:
    """Write the record to the dead-letter topic (its headers kept, the reason and origin added)."""
    log.error(
        "consumer.dead_letter",
        consumer=consumer,
        reason=reason,
        error=error[:500],
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    if event_id is not None:
        await inbox.claim(conn, event_id, event_type, record.topic, status="dead_lettered")
    headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
    headers.update(
        {
            "x-dlq-reason": reason,
            "x-dlq-error": error[:2000],
            "x-dlq-original-topic": record.topic,
            "x-dlq-original-partition": str(record.partition),
            "x-dlq-original-offset": str(record.offset),
            "x-dlq-consumer-group": group_id,
        }
    )
    await outbox.add_raw(
        conn,
        topic=DEAD_LETTER_TOPIC,
        key=(record.key or b"").decode(errors="replace"),
        payload=record.value or b"",
        event_id=event_id or str(uuid.uuid4()),
        event_type=event_type,
        headers=headers,
    )
