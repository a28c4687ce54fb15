"""Payment plans, the transactions: agree one (acknowledged under the fence, PaymentPlanAgreed to the
outbox), read and list them, cancel one (PaymentPlanCancelled); and the scheduler's verdicts on a
plan (InstalmentMissed, PaymentPlanBroken, PaymentPlanCompleted), which set its status here.

Agreeing a plan is a stop (the plan's invoices pause), so its transaction joins invoice-ingest's
acknowledgement fence first and answers with that instant as `acknowledged_at`
(docs/cancel-guarantee.md#every-stop-under-the-gate). The invoices are locked (in id order, as a
PATCH locks them) so their balances and states are read once: open, not in another active plan nor
under a pending promise to pay (409; a promise likewise refuses a planned invoice), one customer,
one currency. A plan's status changes once, from `active`: the first of a
cancellation here or the scheduler's verdict wins, and the other is then a no-op.
"""

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dunning import outbox
from dunning.clock import isoformat, utcnow
from dunning.contracts import (
    Instalment,
    InstalmentMissed,
    PaymentPlanAgreed,
    PaymentPlanBroken,
    PaymentPlanCancelled,
    PaymentPlanCompleted,
    PlanInvoice,
)
from dunning.events import Event, envelope
from dunning.handler_table import Rejected, check_envelope
from dunning.http import PROBLEM, PROBLEMS, Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import quantize
from dunning_ingest import plans, repository
from dunning_ingest.idempotency import Reply
from dunning_ingest.repository import fence
from dunning_ingest.repository import plans as repo
from dunning_ingest.repository import promises as promises_repo

log = get_logger(__name__)
Run = Callable[[str, str | None, bytes | None, Callable[[asyncpg.Connection], Awaitable[Reply]]], Awaitable[Reply]]


def _reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    media = PROBLEM if status >= 400 else "application/json"
    return Reply(status, {"content-type": media, **(headers or {})}, orjson.dumps(body))


def _conflict(field: str, message: str, code: str, **extensions: Any) -> Problem:
    return Problem(
        409,
        f"{field}: {message}",
        type_=PROBLEMS + code.replace("_", "-"),
        errors=[{"field": field, "message": message, "code": code}],
        extensions=extensions or None,
    )


class PlanService:
    """`run`: InvoiceService.run (one transaction, retried on a deadlock, under an Idempotency-Key)."""

    def __init__(self, pool: asyncpg.Pool, run: Run):
        self.pool = pool
        self.run = run

    async def agree(
        self,
        tenant_id: str,
        terms: plans.PlanTerms,
        *,
        invoice_ids: Sequence[str],
        fields: Sequence[str],
        customer_id: str | None = None,
        key: str | None = None,
        fingerprint: bytes | None = None,
    ) -> Reply:
        """Agree a plan over `invoice_ids` (`fields`: the request field naming each, for problems);
        `customer_id`: the customer the request names, if it does (else the invoice's)."""

        async def work(conn: asyncpg.Connection) -> Reply:
            acknowledged_at = await fence.acknowledge_time(conn)  # first: the stops watermark's fence
            customer = None
            if customer_id is not None:
                customer = await repo.customer(conn, tenant_id, customer_id)
                if customer is None:
                    raise Problem.not_found("customer_id", f"No customer {customer_id!r}.")
            rows = await repository.lock_invoices(conn, tenant_id, invoice_ids)
            for invoice_id, field in zip(invoice_ids, fields, strict=True):
                row = rows.get(invoice_id)
                if row is None:
                    raise Problem.not_found(field, f"No invoice {invoice_id!r}.")
                if customer is not None and row["customer_id"] != customer["id"]:
                    raise Problem.invalid(
                        field, f"invoice {invoice_id} is not customer {customer_id}'s", "other_customer"
                    )
                if row["currency"] != rows[invoice_ids[0]]["currency"]:
                    raise Problem.invalid(
                        field,
                        f"is in {row['currency']}, the plan in {rows[invoice_ids[0]]['currency']}",
                        "currency_mismatch",
                    )
                if row["status"] != "open" or row["balance"] <= 0:
                    status = row["status"] if row["status"] != "open" else "paid"
                    raise _conflict(
                        field,
                        f"invoice {invoice_id} is {status}: only open invoices",
                        "invoice_closed",
                        invoice_status=status,
                    )
            if in_plan := await repo.active_plans(conn, invoice_ids):
                invoice_id, plan_id = min(in_plan.items())
                raise _conflict(
                    fields[list(invoice_ids).index(invoice_id)],
                    f"invoice {invoice_id} is already in the active payment plan {plan_id}",
                    "payment_plan_active",
                    plan_id=plan_id,
                )
            for invoice_id, field in zip(invoice_ids, fields, strict=True):
                if (promise := await promises_repo.pending_promise_of(conn, invoice_id)) is not None:
                    promise_id = promise["promise_id"]
                    message = f"invoice {invoice_id} has a pending promise to pay ({promise_id})"
                    raise _conflict(field, message, "promise_pending", promise_id=promise_id)
            first = rows[invoice_ids[0]]
            currency, timezone = first["currency"], first["customer_timezone"]
            balances = [(i, quantize(rows[i]["balance"], currency)) for i in invoice_ids]
            total = sum((b for _, b in balances), Decimal(0))
            instalments = plans.instalments_of(terms, total, currency, plans.local_today(timezone, acknowledged_at))
            record = PaymentPlanAgreed(
                new_id("pln"),
                tenant_id,
                first["customer_id"],
                currency,
                total,
                tuple(PlanInvoice(i, b) for i, b in balances),
                tuple(Instalment(*n) for n in instalments),
                terms.agreed_by,
                acknowledged_at,
            )
            env = envelope(record, time=isoformat(acknowledged_at))
            await repo.insert_plan(
                conn,
                plan_id=record.plan_id,
                tenant_id=tenant_id,
                customer_id=record.customer_id,
                currency=currency,
                total=total,
                agreed_by=terms.agreed_by,
                acknowledged_at=acknowledged_at,
                event_id=env["id"],
                invoices=orjson.dumps(
                    [{"invoice_id": i, "position": n, "balance": str(b)} for n, (i, b) in enumerate(balances)]
                ).decode(),
                instalments=orjson.dumps(
                    [{"number": n, "due_date": d.isoformat(), "amount": str(a)} for n, d, a in instalments]
                ).decode(),
            )
            await outbox.add(conn, env)
            log.info("ingest.plan.agreed", plan_id=record.plan_id, invoices=len(balances), instalments=len(instalments))
            body = await self._view(conn, tenant_id, record.plan_id)
            return _reply(201, body, {"location": f"/v1/payment-plans/{record.plan_id}"})

        return await self.run(tenant_id, key, fingerprint, work)

    async def _view(self, conn: asyncpg.Connection, tenant_id: str, plan_id: str) -> dict[str, Any]:
        row = await repo.get_plan(conn, tenant_id, plan_id)
        if row is None:
            raise Problem.not_found("plan_id", f"No payment plan {plan_id}.")
        return plans.plan_view(row, utcnow())

    async def read(self, tenant_id: str, plan_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            return await self._view(conn, tenant_id, plan_id)

    async def list(
        self, tenant_id: str, *, customer_id: str | None, status: str | None, after_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await repo.list_plans(
                conn, tenant_id, customer_id=customer_id, status=status, after_id=after_id, limit=limit
            )
        now = utcnow()
        return [plans.plan_view(r, now) for r in rows]

    async def cancel(self, tenant_id: str, plan_id: str, *, cancelled_by: str, reason: str) -> Reply:
        """Cancel an active plan (PaymentPlanCancelled: dunning resumes on what is left). Cancelling a
        cancelled plan answers it as it is; a completed or broken one is a 409."""

        async def work(conn: asyncpg.Connection) -> Reply:
            plan = await repo.lock_plan(conn, tenant_id, plan_id)
            if plan is None:
                raise Problem.not_found("plan_id", f"No payment plan {plan_id}.")
            if plan["status"] in ("completed", "broken"):
                raise _conflict("plan_id", f"the plan is {plan['status']}: there is nothing to cancel", "plan_ended")
            if plan["status"] == "active":
                now = utcnow()
                await repo.end_plan(conn, tenant_id, plan_id, "cancelled", now, by=cancelled_by, reason=reason)
                record = PaymentPlanCancelled(
                    plan_id, tenant_id, plan["customer_id"], tuple(plan["invoice_ids"]), cancelled_by, reason, now
                )
                await outbox.add(conn, envelope(record, time=isoformat(now)))
                log.info("ingest.plan.cancelled", plan_id=plan_id)
            return _reply(200, await self._view(conn, tenant_id, plan_id))

        return await self.run(tenant_id, None, None, work)


# --- the scheduler's verdicts (handlers, in the consumer runner's transaction) --------------------


async def _known(conn: asyncpg.Connection, event: Event[Any]) -> None:
    """Rejected unless the envelope agrees with its data and the plan is this tenant's."""
    check_envelope(event)
    tenant = await repo.plan_tenant(conn, event.data.plan_id)
    if tenant != event.tenant_id:
        raise Rejected(f"unknown payment plan {event.data.plan_id} for tenant {event.tenant_id}")


async def on_instalment_missed(conn: asyncpg.Connection, event: Event[InstalmentMissed]) -> None:
    m = event.data
    await _known(conn, event)
    recorded = await repo.record_missed(conn, m.tenant_id, m.plan_id, m.number, m.missed_at)
    log.info("ingest.plan.instalment_missed", plan_id=m.plan_id, number=m.number, recorded=recorded)


async def on_plan_broken(conn: asyncpg.Connection, event: Event[PaymentPlanBroken]) -> None:
    b = event.data
    await _known(conn, event)
    await repo.record_missed(conn, b.tenant_id, b.plan_id, b.missed_instalment, b.broken_at)
    ended = await repo.end_plan(conn, b.tenant_id, b.plan_id, "broken", b.broken_at)
    log.info("ingest.plan.broken", plan_id=b.plan_id, missed_instalment=b.missed_instalment, applied=ended)


async def on_plan_completed(conn: asyncpg.Connection, event: Event[PaymentPlanCompleted]) -> None:
    c = event.data
    await _known(conn, event)
    ended = await repo.end_plan(conn, c.tenant_id, c.plan_id, "completed", c.completed_at)
    log.info("ingest.plan.completed", plan_id=c.plan_id, applied=ended)
