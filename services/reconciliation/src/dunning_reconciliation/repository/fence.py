"""The payments watermark's lock keys and acknowledgement fence (the election and the snapshot are the
library's: dunning.watermark; see docs/cancel-guarantee.md#the-payments-watermark), and the
transaction-scoped advisory locks on names that serialise payments with their invoices."""

from datetime import datetime

import asyncpg

from dunning import watermark

# Advisory lock keys (bigint) of the payments watermark: the acknowledgement fence, and the publisher
# election (see dunning.watermark and docs/cancel-guarantee.md#the-payments-watermark).
ACK_FENCE = 0x5041_594D_454E_5401  # "PAYMENT" 01
WATERMARK_PUBLISHER = 0x5041_594D_454E_5402
KEYS = watermark.Keys(ACK_FENCE, WATERMARK_PUBLISHER)


async def acknowledge_time(conn: asyncpg.Connection) -> datetime:
    """Call first in a transaction that acknowledges a payment: join the fence, then read the clock.
    The shared lock is held until the transaction ends."""
    return await watermark.acknowledge_time(conn, KEYS)


_LOCK_NAMES = "SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name"


async def lock_names(conn: asyncpg.Connection, names: list[str] | set[str]) -> None:
    """Transaction-scoped advisory locks, taken in sorted order in one statement (so two takers
    cannot deadlock)."""
    await conn.execute(_LOCK_NAMES, sorted(set(names)))
