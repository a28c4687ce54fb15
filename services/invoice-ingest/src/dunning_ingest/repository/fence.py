"""invoice-ingest's acknowledgement fence: every transaction that acknowledges a stop (void,
write-off, hold, dispute, promise, payment plan) calls `acknowledge_time` FIRST, and answers with
that instant as `acknowledged_at`. The stops watermark publisher reads the fence's holders to tell
which acknowledgements have committed without ever making one wait (see
docs/cancel-guarantee.md#every-stop-under-the-gate)."""

from datetime import datetime

import asyncpg

# Advisory lock keys (bigint) of invoice-ingest's stops watermark: "STOPACK" 01 and 02.
ACK_FENCE = 0x5354_4F50_4143_4B01
WATERMARK_PUBLISHER = 0x5354_4F50_4143_4B02
_ACKNOWLEDGE_TIME = "SELECT clock_timestamp() FROM pg_advisory_xact_lock_shared($1) AS fence"


async def acknowledge_time(conn: asyncpg.Connection) -> datetime:
    """Call first in a transaction that acknowledges a stop: join the fence (shared, so it never
    waits), then read the clock. The lock is held until the transaction ends."""
    return await conn.fetchval(_ACKNOWLEDGE_TIME, ACK_FENCE)
