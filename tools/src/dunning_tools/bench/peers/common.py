"""Pieces shared by both peers: the `sent` table, its upsert, database reset.

The handler of every reminder job does the same minimal realistic work: it
records that the reminder went out, in a table with a UNIQUE constraint on
(invoice_id, stage). The write is an upsert that counts deliveries, so a job
that runs twice leaves `deliveries = 2` instead of failing on the constraint:
duplicates are then counted from the `sent` table itself.

Vendored unchanged from the project's shared peers harness (shared/peers/, beside the repository).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

STAGE = "reminder_1"

SENT_DDL = """
CREATE TABLE sent (
    invoice_id  bigint      NOT NULL,
    stage       text        NOT NULL,
    deliveries  integer     NOT NULL DEFAULT 1,
    sent_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT sent_invoice_stage_key UNIQUE (invoice_id, stage)
);
CREATE TABLE paid (
    invoice_id  bigint PRIMARY KEY
);
"""

# Upsert, one row per (invoice, stage); placeholders differ per driver.
UPSERT_ASYNCPG = (
    "INSERT INTO sent (invoice_id, stage) VALUES ($1, $2) "
    "ON CONFLICT (invoice_id, stage) DO UPDATE SET deliveries = sent.deliveries + 1"
)
UPSERT_PSYCOPG = (
    "INSERT INTO sent (invoice_id, stage) VALUES (%s, %s) "
    "ON CONFLICT (invoice_id, stage) DO UPDATE SET deliveries = sent.deliveries + 1"
)


def dsn_for(server: str, database: str) -> str:
    """Same server and credentials as `server`, other database."""
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def recreate_database(admin_dsn: str, database: str) -> None:
    """Drop and create `database` so every run starts from an empty, unbloated one."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
        # Start each run with clean shared buffers/WAL state as far as we can.
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def create_bench_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SENT_DDL)
    finally:
        await conn.close()


async def record_paid(dsn: str, invoice_ids: list[int]) -> None:
    """Store the paid invoices (outside any timed phase) for the final check."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "paid", records=[(i,) for i in invoice_ids], columns=["invoice_id"]
        )
    finally:
        await conn.close()


async def sent_count(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM sent")


async def outcome(dsn: str) -> dict[str, object]:
    """Counts and first/last execution instants, from the `sent` table."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT count(*)                                   AS executed,
                   coalesce(sum(deliveries - 1), 0)           AS duplicates,
                   count(*) FILTER (WHERE deliveries > 1)     AS duplicated_invoices,
                   extract(epoch FROM min(sent_at))           AS first_at,
                   extract(epoch FROM max(sent_at))           AS last_at,
                   (SELECT count(*) FROM sent s JOIN paid p USING (invoice_id))
                                                              AS cancelled_but_sent
            FROM sent
            """
        )
        return dict(row)
    finally:
        await conn.close()
