"""Standard Webhooks against real PostgreSQL and the real app: signed events of our vocabulary move
the money; forged, stale and replayed deliveries are refused or change nothing; a bad body is refused
naming the field; rotation keeps both secrets valid during the overlap."""

import asyncio
import time

import orjson
import pytest

from dunning_reconciliation.processors import standard_webhooks as sw

pytestmark = pytest.mark.integration


def body(type_: str, **data) -> bytes:
    return orjson.dumps({"type": type_, "timestamp": "2026-11-30T11:59:58Z", "data": data})


async def post(client, h, payload: bytes, secret: str, *, msg_id: str, timestamp: int | None = None, headers=None):
    signed = sw.sign(payload, secret, msg_id, int(time.time()) if timestamp is None else timestamp)
    return await client.post(
        f"/v1/webhooks/standard/{h.TENANT}",
        content=payload,
        headers={**signed, **(headers or {}), "Content-Type": "application/json"},
    )


async def state(pool) -> dict:
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ("payments", "outbox", "processor_events")} | {
        "balances": [r["balance"] for r in await pool.fetch("SELECT balance FROM invoices ORDER BY invoice_id")]
    }


@pytest.fixture
async def secret(client, h) -> str:
    response = await client.post("/v1/webhook-secrets", json={"processor": "standard_webhooks"}, headers=h.AUTH)
    assert response.status_code == 201
    return response.json()["secret"]


@pytest.fixture
async def invoice(pool, h):
    issued = h.invoice_issued(amount_due="1250.00")
    await h.handle_invoice(pool, issued)
    return issued


def succeeded(invoice, **extra) -> bytes:
    return body(
        "payment.succeeded",
        id="pay_proc_1",
        amount="1250.00",
        currency=invoice["data"]["currency"],
        invoice_id=invoice["subject"],
        payer={"name": "ACME GmbH", "account": "DE89 3704 0044 0532 0130 00"},
        **extra,
    )


async def balance(pool, invoice) -> int:
    return await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"])


async def test_a_signed_succeeded_payment_settles_its_invoice(pool, client, h, secret, invoice):
    response = await post(client, h, succeeded(invoice), secret, msg_id="msg_1")

    assert response.status_code == 200
    assert response.json()["status"] == "applied" and response.json()["id"] == "msg_1"
    [received] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1")
    assert (received["data"]["source"], received["data"]["source_reference"]) == ("standard_webhooks", "pay_proc_1")
    assert await balance(pool, invoice) == 0
    row = await pool.fetchrow("SELECT payer_name, payer_account FROM payments")
    assert (row["payer_name"], row["payer_account"]) == ("ACME GmbH", "DE89370400440532013000")


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        pytest.param("forged", "webhook-signature", id="forged"),
        pytest.param("stale", "webhook-timestamp", id="stale"),
        pytest.param("future", "webhook-timestamp", id="future"),
        pytest.param("unsigned", "webhook-signature", id="no-signature"),
    ],
)
async def test_refused_deliveries_change_nothing(pool, client, h, secret, invoice, kind, field):
    before = await state(pool)
    now = int(time.time())
    if kind == "forged":
        other = "whsec_" + "QUJD" * 8
        response = await post(client, h, succeeded(invoice), other, msg_id="msg_1")
    elif kind in ("stale", "future"):
        at = now - 301 if kind == "stale" else now + 301
        response = await post(client, h, succeeded(invoice), secret, msg_id="msg_1", timestamp=at)
    else:
        response = await client.post(
            f"/v1/webhooks/standard/{h.TENANT}",
            content=succeeded(invoice),
            headers={"webhook-id": "msg_1", "webhook-timestamp": str(now)},
        )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert await state(pool) == before


async def test_a_replayed_webhook_id_changes_nothing(pool, client, h, secret, invoice):
    assert (await post(client, h, succeeded(invoice), secret, msg_id="msg_1")).json()["status"] == "applied"
    before = await state(pool)

    replay = await post(client, h, succeeded(invoice), secret, msg_id="msg_1")

    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert await state(pool) == before


async def test_the_same_payment_under_another_webhook_id_is_not_paid_twice(pool, client, h, secret, invoice):
    await post(client, h, succeeded(invoice), secret, msg_id="msg_1")

    again = await post(client, h, succeeded(invoice), secret, msg_id="msg_2")

    assert again.json()["status"] == "duplicate"
    assert len(await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1")) == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(b"{not json", "(body)", id="not-json"),
        pytest.param(
            body("payment.succeeded", id="p", amount="12.345", currency="EUR", invoice_id="inv_x"),
            "data.amount",
            id="too-precise",
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="12.00", currency="XYZ", invoice_id="inv_x"),
            "data.currency",
            id="currency",
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="12.00", currency="EUR"), "data.invoice_id", id="no-invoice"
        ),
    ],
)
async def test_a_bad_body_is_refused_naming_the_field(pool, client, h, secret, invoice, payload, field):
    before = await state(pool)

    response = await post(client, h, payload, secret, msg_id="msg_bad")

    assert response.status_code == 400 and response.json()["errors"][0]["field"] == field
    assert await state(pool) == before


async def test_rotation_old_and_new_secret_valid_during_the_overlap_the_old_refused_after(pool, client, h, secret):
    created = (
        await client.post(
            "/v1/webhook-secrets", json={"processor": "standard_webhooks", "overlap_seconds": 600}, headers=h.AUTH
        )
    ).json()
    new = created["secret"]
    unknown = body("subscription.created", id="x")

    assert (await post(client, h, unknown, secret, msg_id="m1")).status_code == 200
    assert (await post(client, h, unknown, new, msg_id="m2")).status_code == 200
    await pool.execute(
        "UPDATE webhook_secrets SET expires_at = now() - interval '1 second' WHERE secret_id = $1",
        created["previous"][0]["secret_id"],
    )
    assert (await post(client, h, unknown, secret, msg_id="m3")).status_code == 400
    assert (await post(client, h, unknown, new, msg_id="m4")).status_code == 200


async def test_processing_pauses_without_paying_and_failed_resumes(pool, client, h, secret, invoice):
    processing = body(
        "payment.processing", id="pay_ach_1", amount="1250.00", currency="EUR", invoice_id=invoice["subject"]
    )
    await post(client, h, processing, secret, msg_id="msg_1")

    assert await balance(pool, invoice) == 1250
    [pending] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPending.v1")
    assert pending["data"]["kind"] == "processing"

    await post(client, h, body("payment.failed", id="pay_ach_1"), secret, msg_id="msg_2")

    [ended] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPendingEnded.v1")
    assert ended["data"]["outcome"] == "failed"
    assert await balance(pool, invoice) == 1250


async def test_a_refund_reopens_the_paid_invoice(pool, client, h, secret, invoice):
    await post(client, h, succeeded(invoice), secret, msg_id="msg_1")

    refund = body("payment.refunded", id="pay_proc_1", refund_id="re_1", amount="250.00", currency="EUR")
    response = await post(client, h, refund, secret, msg_id="msg_2")

    assert response.json()["status"] == "reversed"
    [reversed_] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReversed.v1")
    assert (reversed_["data"]["kind"], reversed_["data"]["amount"]) == ("refund", "250.00")
    assert await balance(pool, invoice) == 250


async def test_a_lost_dispute_pauses_then_reverses(pool, client, h, secret, invoice):
    await post(client, h, succeeded(invoice), secret, msg_id="msg_1")

    await post(client, h, body("payment.disputed", id="pay_proc_1", dispute_id="dp_1"), secret, msg_id="msg_2")
    [pending] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPending.v1")
    assert pending["data"]["kind"] == "chargeback" and await balance(pool, invoice) == 0

    closed = body("payment.dispute_closed", id="pay_proc_1", dispute_id="dp_1", status="lost")
    await post(client, h, closed, secret, msg_id="msg_3")

    [ended] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPendingEnded.v1")
    assert ended["data"]["outcome"] == "lost"
    [reversed_] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReversed.v1")
    assert reversed_["data"]["kind"] == "chargeback" and await balance(pool, invoice) == 1250


async def test_a_remittance_alone_is_matched_across_the_invoices_it_names(pool, client, h, secret):
    first = h.invoice_issued(amount_due="100.00", number="INV-7001")
    second = h.invoice_issued(amount_due="50.00", number="INV-7002")
    for issued in (first, second):
        await h.handle_invoice(pool, issued)

    payload = body(
        "payment.succeeded", id="pay_sepa_9", amount="150.00", currency="EUR", remittance="Payment INV-7001 INV-7002"
    )
    response = await post(client, h, payload, secret, msg_id="msg_1")

    assert response.status_code == 200 and response.json()["status"] == "applied"
    assert await balance(pool, first) == 0 and await balance(pool, second) == 0
    rules = {e["data"]["invoice_id"]: e["data"]["match_rule"] for e in await h.outbox_events(pool)}
    assert rules == {first["subject"]: "reference", second["subject"]: "reference"}


async def test_concurrent_deliveries_of_one_webhook_id_apply_it_once(pool, client, h, secret, invoice):
    payload = succeeded(invoice)
    headers = sw.sign(payload, secret, "msg_race", int(time.time()))

    responses = await asyncio.gather(
        *(client.post(f"/v1/webhooks/standard/{h.TENANT}", content=payload, headers=headers) for _ in range(4))
    )

    assert sorted(r.json()["status"] for r in responses) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert len(await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1")) == 1
