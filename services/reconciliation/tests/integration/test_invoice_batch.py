"""The InvoiceIssued batch handler ends where the per-event handler ends: the same events go through
the consumer runner's fast path once with the batch handler (one schema) and once without (another
schema); invoices, payments, outbox and inbox must be the same, and a rejected event is
dead-lettered alone."""

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from dunning import tenancy
from dunning.contracts import InvoiceIssued
from dunning.db import migrations_of
from dunning.events import decode, dumps, validate
from dunning_reconciliation import reconcile
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.handlers import HANDLERS, on_invoice_issued
from dunning_tools.testing.events import invoice_issued
from dunning_tools.testing.runner import both_ways, feed, records, runner_on

pytestmark = pytest.mark.integration

MIGRATIONS = migrations_of("dunning_reconciliation")
TENANT, OTHER = "ten_recbatch000000001", "ten_recbatch000000002"
ISSUED = "dunning.InvoiceIssued.v1"
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)


def issued(
    invoice_id: str,
    *,
    external_id: str | None = None,
    number: str | None = None,
    amount: str = "100.00",
    tenant_id: str = TENANT,
) -> dict:
    return invoice_issued(
        tenant_id=tenant_id,
        invoice_id=invoice_id,
        external_id=external_id or f"EXT-{invoice_id}",
        number=number or f"N-{invoice_id}",
        amount_due=amount,
        issued_at=T0,
        metadata={"po": invoice_id},
    )


def counting(fn, calls: list):
    async def wrapper(conn, event):
        calls.append(event.id)
        await fn(conn, event)

    return wrapper


async def apply_all(pool, batches: list[list[dict]], *, batch: bool) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        await tenancy.provision(conn, TENANT, "Acme", None)
        await tenancy.provision(conn, OTHER, "Globex", None)
        # known before: invoice k1 (its InvoiceIssued comes again), and two payments waiting
        # for invoices that the batch announces (by external id, by number).
        await on_invoice_issued(conn, _decoded(issued("inv_recbatch0k1")))
        for pid, keys, amount in (
            ("pay_recbatch0early1", MatchKeys.of(None, ("EXT-EARLY",), ()), "40.00"),
            ("pay_recbatch0early2", MatchKeys.of(None, (), ("N-inv_recbatch0n3",)), "100.00"),
        ):
            await reconcile.receive(
                conn,
                IncomingPayment(
                    tenant_id=TENANT,
                    source="api",
                    source_reference=pid,
                    currency="EUR",
                    amount=Decimal(amount),
                    received_at=T0,
                    keys=keys,
                    payment_id=pid,
                    acknowledged_at=T0,
                ),
            )
        await conn.execute("DELETE FROM outbox")
    per_event_calls: list[list[str]] = []
    calls: list[str] = []
    spec = HANDLERS[InvoiceIssued]
    runner = runner_on(pool, {InvoiceIssued: replace(spec, each=counting(spec.each, calls))}, batch=batch)
    offset = 0
    for events in batches:
        calls.clear()
        await feed(runner, records(events, first_offset=offset), len(events))
        offset += len(events)
        per_event_calls.append(list(calls))
    outbox = await pool.fetch("SELECT topic, key, event_type, payload FROM outbox ORDER BY id")
    for row in outbox:
        if row["topic"] != "dunning.deadletter.v1":
            validate(orjson.loads(bytes(row["payload"])))
    return {
        "invoices": [
            dict(r)
            for r in await pool.fetch(
                "SELECT invoice_id, tenant_id, external_id, number, currency, amount_due, balance, metadata,"
                " status, issued_at FROM invoices ORDER BY invoice_id"
            )
        ],
        "payments": [
            dict(r)
            for r in await pool.fetch(
                "SELECT payment_id, tenant_id, invoice_id, status, amount, amount_applied, unapplied_amount,"
                " balance_remaining, settled, acknowledged_at, applied_at IS NOT NULL AS applied"
                " FROM payments ORDER BY payment_id"
            )
        ],
        "outbox": [(r["topic"], r["key"], r["event_type"]) for r in outbox],
        "received": [orjson.loads(bytes(r["payload"])) for r in outbox if r["topic"] == "dunning.payments.v1"],
        "inbox": [tuple(r) for r in await pool.fetch("SELECT event_id::text, status FROM inbox ORDER BY event_id")],
        "dead_lettered": runner.dead_lettered,
        "per_event_calls": per_event_calls,
    }


def _decoded(envelope: dict):
    return decode(dumps(envelope))


async def test_invoice_batch_ends_where_event_by_event_ends(infra):
    first = [
        issued("inv_recbatch0n1"),
        issued("inv_recbatch0n2", external_id="EXT-EARLY"),  # the early 40.00 payment names it
        issued("inv_recbatch0k1"),  # already known
        issued("inv_recbatch0n3"),  # the early 100.00 payment names its number: settles it
        issued("inv_recbatch0n4", amount="0.00"),
        issued("inv_recbatch0n1", external_id="EXT-OTHER"),  # the same invoice again in the batch
        issued("inv_recbatch0n5", tenant_id=OTHER),
    ]
    rejected = issued("inv_recbatch0bad")
    rejected["data"]["tenant_id"] = OTHER  # data disagrees with the envelope: never applicable
    second = [issued("inv_recbatch0m1"), rejected, issued("inv_recbatch0m2")]

    expected, got = await both_ways(
        infra.database_url, MIGRATIONS, lambda pool, batch: apply_all(pool, [first, second], batch=batch)
    )

    for key in ("invoices", "payments", "outbox", "inbox", "dead_lettered"):
        assert got[key] == expected[key], key
    assert got["per_event_calls"][0] == []  # the first batch went through the batch handler
    assert len(got["per_event_calls"][1]) == 3  # the rejected event made the second go one by one

    invoices = {i["invoice_id"]: i for i in got["invoices"]}
    assert "inv_recbatch0bad" not in invoices and {"inv_recbatch0m1", "inv_recbatch0m2"} <= set(invoices)
    assert invoices["inv_recbatch0n1"]["external_id"] == "EXT-inv_recbatch0n1"
    assert (invoices["inv_recbatch0n2"]["balance"], invoices["inv_recbatch0n2"]["status"]) == (Decimal("60.00"), "open")
    assert (invoices["inv_recbatch0n3"]["balance"], invoices["inv_recbatch0n3"]["status"]) == (Decimal("0.00"), "paid")
    assert invoices["inv_recbatch0n4"]["status"] == "paid"
    assert invoices["inv_recbatch0n5"]["tenant_id"] == OTHER
    assert {(p["payment_id"], p["invoice_id"], p["status"]) for p in got["payments"]} == {
        ("pay_recbatch0early1", "inv_recbatch0n2", "applied"),
        ("pay_recbatch0early2", "inv_recbatch0n3", "applied"),
    }
    assert [(e["type"], e["subject"], e["data"]["amount_applied"], e["data"]["settled"]) for e in got["received"]] == [
        ("dunning.PaymentReceived.v1", "inv_recbatch0n2", "40.00", False),
        ("dunning.PaymentReceived.v1", "inv_recbatch0n3", "100.00", True),
    ]
    assert got["dead_lettered"] == 1
    assert [o for o in got["outbox"] if o[0] == "dunning.deadletter.v1"] == [
        ("dunning.deadletter.v1", "inv_recbatch0bad", ISSUED)
    ]
