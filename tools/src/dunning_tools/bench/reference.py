"""The references `make bench` measures its ingest figures against, on the same PostgreSQL, same run.

- bulk import vs `COPY`: the rows of the invoices just imported through POST /v1/invoices/bulk,
  copied (`COPY ... FROM STDIN`, binary, asyncpg's copy_records_to_table) into `bench_ref.copied`,
  a table made `LIKE ingest.invoices INCLUDING ALL` (same columns, defaults, checks, keys and
  indexes). The rows are built before the clock starts: the figure is the COPY alone.
- POST /v1/invoices vs a bare FastAPI route doing one INSERT (bench/bare_api.py) into
  `bench_ref.inserted`, shaped the same way, served with the same uvicorn settings, replicas, loop
  and connection pool as invoice-ingest, driven by the same load generator and concurrency.
"""

import hashlib
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import orjson

SCHEMA = "bench_ref"
COLUMNS = (
    "id",
    "tenant_id",
    "external_id",
    "number",
    "customer_id",
    "currency",
    "amount_due",
    "balance",
    "issue_date",
    "due_date",
    "payment_url",
    "metadata",
    "content_hash",
    "created_at",
)
INSERT = (
    f"INSERT INTO {SCHEMA}.inserted ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) RETURNING id"
)


async def prepare(database_url: str) -> None:
    """The two reference tables, shaped like ingest's invoices table (made once per stack)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for table in ("copied", "inserted"):
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{table} (LIKE ingest.invoices INCLUDING ALL)")
    finally:
        await conn.close()


def row(tenant_id: str, item: dict) -> tuple:
    """One invoice as a row of the reference tables (the columns ingest fills for a new invoice)."""
    amount = Decimal(item["amount_due"])
    return (
        f"inv_{uuid.uuid4().hex}",
        tenant_id,
        item["external_id"],
        item["number"],
        f"cus_{item['customer']['external_id']}",
        item["currency"],
        amount,
        amount,
        date.fromisoformat(item["issue_date"]),
        date.fromisoformat(item["due_date"]),
        item.get("payment_url"),
        orjson.dumps(item.get("metadata") or {}).decode(),
        hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).digest(),
        datetime.now(UTC),
    )


def rows(tenant_id: str, items: list[dict]) -> list[tuple]:
    return [row(tenant_id, item) for item in items]


async def copy_rows_per_s(conn: asyncpg.Connection, records: list[tuple]) -> float:
    """COPY these rows into `bench_ref.copied` in one statement; rows per second."""
    start = time.perf_counter()
    await conn.copy_records_to_table("copied", schema_name=SCHEMA, records=records, columns=COLUMNS)
    return len(records) / (time.perf_counter() - start)
