"""invoice-ingest's acknowledgement fence: every transaction that acknowledges a stop (void,
write-off, hold, dispute, promise, payment plan) calls `acknowledge_time` FIRST, and answers with
that instant as `acknowledged_at`. The stops watermark publisher (dunning_ingest.watermark) reads the
fence's holders to tell which acknowledgements have committed without ever making one wait (see
docs/cancel-guarantee.md#every-stop-under-the-gate)."""

from datetime import datetime

import asyncpg

from dunning import watermark

# Advisory lock keys (bigint) of invoice-ingest's stops watermark: "STOPACK" 01 (the fence) and 02
# (the publisher election).
ACK_FENCE = 0x5354_4F50_4143_4B01
WATERMARK_PUBLISHER = 0x5354_4F50_4143_4B02
KEYS = watermark.Keys(ACK_FENCE, WATERMARK_PUBLISHER)


async def acknowledge_time(conn: asyncpg.Connection) -> datetime:
    """Call first in a transaction that acknowledges a stop, before any other lock: join the fence
    (shared, so it never waits), then read the clock. The lock is held until the transaction ends."""
    return await watermark.acknowledge_time(conn, KEYS)
