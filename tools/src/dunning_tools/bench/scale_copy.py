"""The scale bench's pending timers, by COPY: copies of plans the real planning path wrote.

Each generated invoice is one of the template invoices (the snapshot planning stored, the timers it
wrote: stages, channels, templates, gate position) under ids of the planner's layout, due on another
day (7 to 127 days ahead, spread): its timers are the template's shifted by whole days (in UTC: a
daylight-saving change between the two dates leaves them an hour off, which nothing here reads).
20 invoices a customer. Then VACUUM ANALYZE, as after a night's import.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg
import orjson

from dunning.db import connect
from dunning.ids import new_ids

CHUNK = 20_000  # invoices per chunk sent
Shapes = Sequence[tuple[asyncpg.Record, list[asyncpg.Record]]]  # (invoice row, its timer rows) per template

# The columns COPY fills per generated invoice / timer besides the copied template values.
_INVOICE_VARYING = (
    "invoice_id",
    "external_id",
    "number",
    "issue_date",
    "due_date",
    "payment_url",
    "customer",
    "customer_id",
    "issued_event_id",
)
_INVOICE_COPIED = (
    "tenant_id",
    "currency",
    "amount_due",
    "balance",
    "issued_at",
    "policy_id",
    "policy_version",
    "planned_at",
    "customer_as_of",
    "policy_is_default",
    "policy_key",
    "segment_rule",
    "segment_reason",
)
_TIMER_COPIED = (
    "tenant_id",
    "stage",
    "sequence",
    "channel",
    "template",
    "state",
    "reason",
    "policy_version",
    "gate_partition",
    "gate_offset",
    "kind",
)


@dataclass(frozen=True)
class Copied:
    timers: int
    copy_seconds: float  # the two COPY statements
    seconds: float  # and VACUUM ANALYZE


async def copy_plans(dsn: str, schema: str, shapes: Shapes, timers: int) -> Copied:
    """COPY at least `timers` pending timers and their invoices, made on `shapes` (the templates'
    rows as `SELECT *` reads them), then VACUUM ANALYZE."""
    per_invoice = len(shapes[0][1])
    n = -(-timers // per_invoice)
    start = time.perf_counter()
    conn = await connect(dsn, schema)  # no command timeout: COPY and VACUUM of millions take minutes
    try:
        heads = _heads()
        await conn.copy_to_table(
            "invoices",
            source=_invoice_lines(shapes, n, heads),
            columns=[*_INVOICE_VARYING, *_INVOICE_COPIED],
            format="csv",
        )
        await conn.copy_to_table(
            "timers",
            source=_timer_lines(shapes, n, heads),
            columns=["stage_id", "invoice_id", "scheduled_at", *_TIMER_COPIED],
            format="csv",
        )
        copied = time.perf_counter() - start
        await conn.execute("DELETE FROM outbox")  # the templates' DunningPlanned: published long ago
        for table in ("invoices", "timers"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return Copied(n * per_invoice, copied, time.perf_counter() - start)


def _csv(value) -> str:
    """One value as PostgreSQL's CSV COPY reads it (empty unquoted: NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        value = orjson.dumps(value).decode()
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return '"' + text.replace('"', '""') + '"'


def day_of(i: int) -> int:
    return 7 + (i * 7919) % 120  # due 7 to 127 days from today, spread


def _heads() -> tuple[str, str]:
    """Invoice and stage id stems (+ 16 digits: the planner's layout, prefix and 26 characters; a stage
    adds two more), so the ids grow as a night's imports do."""
    head = new_ids("inv", 1)[0][4:14]
    return f"inv_{head}", f"stg_{head}"


async def _invoice_lines(shapes: Shapes, n: int, heads: tuple[str, str]) -> AsyncIterator[bytes]:
    today = date.today()
    tails = [",".join(_csv(row[c]) for c in _INVOICE_COPIED) for row, _ in shapes]
    customers = []
    for row, _ in shapes:
        customer = orjson.loads(row["customer"]) if isinstance(row["customer"], str) else dict(row["customer"])
        customer["customer_id"] = "CUSTOMER"
        customers.append(_csv(customer).split("CUSTOMER"))
    for lo in range(0, n, CHUNK):
        lines = []
        for i in range(lo, min(n, lo + CHUNK)):
            s = i % len(shapes)
            due = today + timedelta(days=day_of(i))
            customer_id = f"cus_SCALE{i // 20:021d}"  # 20 invoices a customer
            head, tail = customers[s]
            lines.append(
                f'{heads[0]}{i:016d},"x-{i}","S-{i}",{due - timedelta(days=14)},{due},"https://pay.example.com/i/{i}",'
                f"{head}{customer_id}{tail},{customer_id},{uuid.uuid4()},{tails[s]}\n"
            )
        yield "".join(lines).encode()
        await asyncio.sleep(0)


async def _timer_lines(shapes: Shapes, n: int, heads: tuple[str, str]) -> AsyncIterator[bytes]:
    today = date.today()
    stages = [
        [(t["scheduled_at"], ",".join(_csv(t[c]) for c in _TIMER_COPIED)) for t in timers] for _, timers in shapes
    ]
    for lo in range(0, n, CHUNK):
        lines = []
        for i in range(lo, min(n, lo + CHUNK)):
            s = i % len(shapes)
            shift = today + timedelta(days=day_of(i)) - shapes[s][0]["due_date"]  # whole days
            for k, (at, tail) in enumerate(stages[s]):
                lines.append(f"{heads[1]}{i:016d}{k:02d},{heads[0]}{i:016d},{(at + shift).isoformat()},{tail}\n")
        yield "".join(lines).encode()
        await asyncio.sleep(0)
