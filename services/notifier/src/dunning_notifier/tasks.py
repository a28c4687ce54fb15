"""Call tasks: a stage on the `call` channel asks a collector to phone the customer, instead of
sending a message (docs/collections.md).

The channel's send writes the task (one per delivery: a retried send finds it) and its TaskCreated in
one transaction, and the delivery is Sent at once with the task id as its provider message id. A
collector assigns and completes it (tasks_api.py); the completion publishes CallTaskCompleted, which
invoice-ingest turns into a promise or a dispute, and a `callback_requested` outcome makes one
follow-up task due at `callback_at`. A stop of the invoice (handlers.py) cancels its open tasks.
"""

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import CallTaskCompleted, TaskCancelled, TaskCreated
from dunning.db import create_pool
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import MoneyError, parse_amount
from dunning_notifier import tasks_repository as repo
from dunning_notifier.outcomes import Delivery, Outcome, Retry, Sent
from dunning_notifier.settings import Settings

log = get_logger(__name__)
HORIZON_DAYS = 365  # a promise or a callback further out than a year is refused, as ingest refuses it
Outcomes = Literal[
    "promised_to_pay", "disputed", "paid_already", "no_answer", "wrong_number", "callback_requested", "other"
]


class ChannelPool:
    """The database pool a channel writes through, opened at its first send (the channel registry
    builds channels from settings only) and closed when the last worker session closes; small, as
    the dispatcher's sends on these channels are few."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sessions = 0
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def release(self) -> None:
        """One worker session closed: the pool too, with the last one."""
        self.sessions -= 1
        async with self._lock:
            if self.sessions <= 0 and self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()

    async def get(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self.settings.database_url, self.settings.db_schema, min_size=0, max_size=4
                )
            return self._pool


def task_created(row: Any) -> TaskCreated:
    return TaskCreated(
        row["task_id"],
        row["tenant_id"],
        row["invoice_id"],
        row["customer_id"],
        row["stage"],
        row["due_at"],
        row["created_at"],
        stage_id=row["stage_id"],
        delivery_id=row["delivery_id"],
        follow_up_of=row["follow_up_of"],
    )


def call_task_completed(row: Any) -> CallTaskCompleted:
    return CallTaskCompleted(
        row["task_id"],
        row["tenant_id"],
        row["invoice_id"],
        row["customer_id"],
        row["outcome"],
        row["completed_by"],
        row["completed_at"],
        promised_amount=row["promised_amount"],
        promised_date=row["promised_date"],
        currency=row["currency"] if row["promised_amount"] is not None else None,
        dispute_reason=row["dispute_reason"],
        callback_at=row["callback_at"],
        note=row["note"] or None,
    )


class CallChannel:
    """The `call` channel: the delivery becomes a task for a collector (PROVIDERS in channels.py)."""

    name = "call"

    def __init__(self, settings: Settings, renderer: Any = None):
        self.db = ChannelPool(settings)

    def open_session(self) -> "CallChannel":
        self.db.sessions += 1
        return self

    async def close(self) -> None:
        await self.db.release()

    async def send(self, d: Delivery) -> Outcome:
        invoice = d.payload.get("invoice") or {}
        customer = d.payload.get("customer") or {}
        due = d.payload.get("fired_at") or d.payload.get("scheduled_at")
        try:
            pool = await self.db.get()
            async with pool.acquire() as conn, conn.transaction():
                row = await repo.insert_for_delivery(
                    conn,
                    task_id=new_id("tsk"),
                    tenant_id=d.tenant_id,
                    invoice_id=d.invoice_id,
                    customer_id=customer.get("customer_id"),
                    stage=d.stage,
                    stage_id=d.stage_id,
                    delivery_id=d.delivery_id,
                    due_at=dt.datetime.fromisoformat(due) if isinstance(due, str) else utcnow(),
                    currency=invoice.get("currency"),
                    balance=Decimal(invoice["balance"]) if invoice.get("balance") is not None else None,
                    customer_timezone=customer.get("timezone"),
                    phone=customer.get("phone"),
                )
                if row["created"]:
                    await outbox.add(conn, task_created(row))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return Retry("task_store", f"{type(exc).__name__}: {exc}")
        log.info("notifier.task.created", task_id=row["task_id"], created=row["created"], stage=d.stage)
        return Sent(provider_message_id=row["task_id"], sent_at=utcnow())


# --- the routes' work ----------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


class AssignIn(BaseModel):
    model_config = {"extra": "forbid"}
    assignee: Text = Field(description="Who makes the call (a user name or e-mail; at most 200 characters).")


class CompleteIn(BaseModel):
    """What came of the call; the fields an outcome needs (422 naming the field if missing or out of place)."""

    model_config = {"extra": "forbid"}
    outcome: Outcomes
    promised_amount: str | None = Field(
        None,
        description="promised_to_pay: a decimal string in the invoice's currency (its decimals), more than zero, "
        "at most the balance.",
        examples=["625.00"],
    )
    promised_date: dt.date | None = Field(
        None,
        description="promised_to_pay: the day promised, today or later in the customer's time zone, within a year.",
    )
    dispute_reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")] | None = Field(
        None, description="disputed: why the customer disputes the invoice."
    )
    callback_at: AwareDatetime | None = Field(
        None, description="callback_requested: when to call back (RFC 3339, in the future, within a year)."
    )
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None
    completed_by: Text | None = Field(None, description="Who made the call (default: the assignee, else `api`).")


_OWN_FIELDS = {
    "promised_amount": "promised_to_pay",
    "promised_date": "promised_to_pay",
    "dispute_reason": "disputed",
    "callback_at": "callback_requested",
}


def checked_completion(task: Any, body: CompleteIn, now: dt.datetime) -> dict[str, Any]:
    """The completion's values, or a 422 naming the field at fault."""
    for field, outcome in _OWN_FIELDS.items():
        if getattr(body, field) is not None and body.outcome != outcome:
            raise Problem.invalid(field, f"only with outcome {outcome}", "not_for_outcome")
    amount = None
    if body.outcome == "promised_to_pay":
        if body.promised_amount is None:
            raise Problem.invalid("promised_amount", "required for promised_to_pay", "missing")
        currency = task["currency"] or "EUR"
        try:
            amount = parse_amount(body.promised_amount, currency)
        except MoneyError as exc:
            raise Problem.invalid("promised_amount", str(exc), "amount") from None
        if task["balance"] is not None and amount > task["balance"]:
            message = f"must be at most the invoice's balance ({task['balance']} {currency})"
            raise Problem.invalid("promised_amount", message, "amount_too_large")
        if body.promised_date is None:
            raise Problem.invalid("promised_date", "required for promised_to_pay", "missing")
        zone = task["customer_timezone"] or "UTC"
        today = now.astimezone(ZoneInfo(zone)).date()
        if body.promised_date < today:
            raise Problem.invalid("promised_date", f"must be today or later ({zone}: {today})", "in_the_past")
        if body.promised_date > today + dt.timedelta(days=HORIZON_DAYS):
            raise Problem.invalid("promised_date", "must be within a year", "too_far")
    if body.outcome == "disputed" and body.dispute_reason is None:
        raise Problem.invalid("dispute_reason", "required for disputed", "missing")
    callback_at = None
    if body.outcome == "callback_requested":
        if body.callback_at is None:
            raise Problem.invalid("callback_at", "required for callback_requested", "missing")
        try:
            callback_at = body.callback_at.astimezone(dt.UTC)
        except OverflowError:  # year 9999 with a western offset: past the end of time in UTC
            raise Problem.invalid("callback_at", "must be within a year", "too_far") from None
        if callback_at <= now:
            raise Problem.invalid("callback_at", "must be in the future", "in_the_past")
        if callback_at > now + dt.timedelta(days=HORIZON_DAYS):
            raise Problem.invalid("callback_at", "must be within a year", "too_far")
    return {
        "outcome": body.outcome,
        "promised_amount": amount,
        "promised_date": body.promised_date,
        "dispute_reason": body.dispute_reason,
        "callback_at": callback_at,
        "note": body.note,
        "completed_by": body.completed_by or task["assignee"] or "api",
        "completed_at": now,
    }


def not_open(task: Any) -> Problem:
    message = f"task {task['task_id']} is {task['state']}: only an open or assigned task can change"
    return Problem(409, message, errors=[{"field": "task_id", "message": message, "code": f"task_{task['state']}"}])


Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]]


def fingerprint(method: str, path: str, body: BaseModel | None) -> str:
    raw = orjson.dumps([method, path, body.model_dump(mode="json") if body is not None else None])
    return hashlib.sha256(raw).hexdigest()


async def once(pool: asyncpg.Pool, tenant_id: str, key: str | None, print_: str, work: Work) -> tuple[int, Any]:
    """Run `work` in one transaction; under an Idempotency-Key, the first answer is stored with it and
    a repeat gets it back (the same key with another request: 422 naming Idempotency-Key)."""
    async with pool.acquire() as conn, conn.transaction():
        if key is not None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{tenant_id}/{key}")
            seen = await repo.replay(conn, tenant_id, key)
            if seen is not None:
                if seen["fingerprint"] != print_:
                    raise Problem.invalid("Idempotency-Key", "was used with another request", "idempotency_key_reused")
                return seen["status"], seen["body"]
        status, body = await work(conn)
        if key is not None:
            await repo.remember(conn, tenant_id, key, print_, status, body)
        return status, body


async def assign_task(conn: asyncpg.Connection, tenant_id: str, task_id: str, body: AssignIn) -> Any:
    task = await repo.get_task(conn, tenant_id, task_id, lock=True)
    if task is None:
        raise Problem.not_found("task_id", f"No task {task_id!r} for this tenant.")
    if task["state"] not in ("open", "assigned"):
        raise not_open(task)
    row = await repo.assign(conn, tenant_id, task_id, body.assignee)
    log.info("notifier.task.assigned", task_id=task_id, assignee=body.assignee)
    return row


async def complete_task(conn: asyncpg.Connection, tenant_id: str, task_id: str, body: CompleteIn) -> Any:
    """Completed with its outcome (CallTaskCompleted), a callback's follow-up task made (TaskCreated)."""
    task = await repo.get_task(conn, tenant_id, task_id, lock=True)
    if task is None:
        raise Problem.not_found("task_id", f"No task {task_id!r} for this tenant.")
    if task["state"] not in ("open", "assigned"):
        raise not_open(task)
    values = checked_completion(task, body, utcnow())
    row = await repo.complete(conn, tenant_id, task_id, **values)
    await outbox.add(conn, call_task_completed(row))
    if values["callback_at"] is not None:
        follow_up = await repo.insert_follow_up(conn, new_id("tsk"), task_id, values["callback_at"])
        if follow_up is not None:
            await outbox.add(conn, task_created(follow_up))
    log.info("notifier.task.completed", task_id=task_id, outcome=values["outcome"])
    return row


async def cancel_for_stop(
    conn: asyncpg.Connection, *, tenant_id: str, invoice_id: str, reason: str, cause_event_id: str, at: dt.datetime
) -> list[str]:
    """A stop of the invoice (handlers._apply_stop): its open tasks cancelled, TaskCancelled each."""
    rows = await repo.cancel_open(conn, tenant_id, invoice_id, reason, at)
    await outbox.add_many(
        conn,
        [TaskCancelled(r["task_id"], tenant_id, invoice_id, reason, str(cause_event_id), at) for r in rows],
    )
    if rows:
        log.info("notifier.task.cancelled", reason=reason, tasks=[r["task_id"] for r in rows])
    return [r["task_id"] for r in rows]
