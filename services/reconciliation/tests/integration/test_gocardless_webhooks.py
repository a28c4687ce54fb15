"""GoCardless webhooks against real PostgreSQL and the real app: signed example events move the
money (submitted pauses, confirmed pays, failed ends the pause, charged back reverses); forged ones
are refused 498, replayed ones change nothing; rotation keeps both secrets valid during the overlap."""

import hashlib
import hmac
import json
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

SECRET = "gc-endpoint-secret-0123456789abcdef"
REFERENCE = Path(__file__).resolve().parents[5] / "shared" / "reference-data" / "gocardless"


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event(action: str, invoice: dict | None, *, event_id: str, payment: str = "PM000260X9VKF4", **extra) -> dict:
    """A payments event shaped as GoCardless's API reference shows them; the payment's metadata (our
    contract: invoice_id, amount in minor units, currency) copied into resource_metadata."""
    metadata = {}
    if invoice is not None:
        minor = str(int(invoice["data"]["amount_due"].replace(".", "")))
        metadata = {"invoice_id": invoice["subject"], "amount": minor, "currency": invoice["data"]["currency"]}
    return {
        "id": event_id,
        "created_at": "2026-11-30T09:13:51.404Z",
        "resource_type": "payments",
        "action": action,
        "links": {"payment": payment},
        "details": {"origin": "gocardless", "cause": f"payment_{action}", "description": "As GoCardless says."},
        "metadata": {},
        "resource_metadata": metadata,
        **extra,
    }


async def post(client, h, events: list[dict] | bytes, *, secret: str = SECRET, signature: str | None = None):
    body = events if isinstance(events, bytes) else orjson.dumps({"events": events})
    return await client.post(
        f"/v1/webhooks/gocardless/{h.TENANT}",
        content=body,
        headers={"Webhook-Signature": signature or sign(body, secret), "Content-Type": "application/json"},
    )


async def state(pool) -> dict:
    return {
        t: await pool.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("payments", "outbox", "processor_events", "gocardless_payments")
    } | {"balances": [r["balance"] for r in await pool.fetch("SELECT balance FROM invoices ORDER BY invoice_id")]}


@pytest.fixture
async def endpoint(client, h):
    response = await client.post(
        "/v1/webhook-secrets", json={"processor": "gocardless", "secret": SECRET}, headers=h.AUTH
    )
    assert response.status_code == 201


@pytest.fixture
async def invoice(pool, h):
    issued = h.invoice_issued(amount_due="1250.00")
    await h.handle_invoice(pool, issued)
    return issued


async def test_a_confirmed_payment_settles_its_invoice(pool, client, h, endpoint, invoice):
    response = await post(client, h, [event("confirmed", invoice, event_id="EV001")])

    assert response.status_code == 200
    [result] = response.json()["events"]
    assert result["id"] == "EV001" and result["status"] == "applied"
    [received] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1")
    data = received["data"]
    assert (data["source"], data["source_reference"], data["amount_applied"], data["settled"]) == (
        "gocardless",
        "PM000260X9VKF4",
        "1250.00",
        True,
    )
    assert await pool.fetchval("SELECT status FROM invoices WHERE invoice_id = $1", invoice["subject"]) == "paid"


async def test_a_forged_signature_is_refused_498_and_changes_nothing(pool, client, h, endpoint, invoice):
    before = await state(pool)

    forged = await post(client, h, [event("confirmed", invoice, event_id="EV001")], secret="another-secret-0123456")

    assert forged.status_code == 498
    assert forged.json()["errors"][0]["field"] == "Webhook-Signature"
    assert await state(pool) == before


async def test_a_replayed_delivery_changes_nothing(pool, client, h, endpoint, invoice):
    body = orjson.dumps({"events": [event("confirmed", invoice, event_id="EV001")]})
    assert (await post(client, h, body)).json()["events"][0]["status"] == "applied"
    before = await state(pool)

    replay = await post(client, h, body)  # GoCardless signs no timestamp: only the event id stops it

    assert replay.status_code == 200 and replay.json()["events"][0]["status"] == "duplicate"
    assert await state(pool) == before


async def test_paid_out_after_confirmed_is_the_same_money(pool, client, h, endpoint, invoice):
    await post(client, h, [event("confirmed", invoice, event_id="EV001")])

    later = await post(client, h, [event("paid_out", invoice, event_id="EV002")])

    assert later.json()["events"][0]["status"] == "duplicate"
    assert len(await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1")) == 1


async def test_submitted_pauses_without_paying_then_confirmed_pays(pool, client, h, endpoint, invoice):
    first = await post(client, h, [event("submitted", invoice, event_id="EV001")])

    assert first.status_code == 200
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"]) == 1250
    [pending] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPending.v1")
    assert pending["data"]["kind"] == "processing"

    # GoCardless sends later events of a payment without needing its metadata again.
    await post(client, h, [event("confirmed", None, event_id="EV002")])

    [ended] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPendingEnded.v1")
    assert ended["data"]["outcome"] == "succeeded"
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"]) == 0


async def test_a_failed_debit_ends_the_pause_and_counts_nothing(pool, client, h, endpoint, invoice):
    await post(client, h, [event("submitted", invoice, event_id="EV001")])

    await post(client, h, [event("failed", invoice, event_id="EV002", details={"cause": "insufficient_funds"})])

    [ended] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentPendingEnded.v1")
    assert ended["data"]["outcome"] == "failed"
    assert await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReceived.v1") == []
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"]) == 1250


async def test_a_chargeback_reopens_the_paid_invoice(pool, client, h, endpoint, invoice):
    await post(client, h, [event("confirmed", invoice, event_id="EV001")])

    response = await post(client, h, [event("charged_back", None, event_id="EV002")])

    assert response.json()["events"][0]["status"] == "reversed"
    [reversed_] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReversed.v1")
    assert (reversed_["data"]["kind"], reversed_["data"]["amount"], reversed_["data"]["settled"]) == (
        "chargeback",
        "1250.00",
        False,
    )
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"]) == 1250


async def test_a_batch_applies_each_event_and_records_the_others(pool, client, h, endpoint, invoice):
    mandate = {**event("created", None, event_id="EV000"), "resource_type": "mandates", "links": {"mandate": "MD1"}}

    response = await post(client, h, [mandate, event("confirmed", invoice, event_id="EV001")])

    assert [(r["id"], r["status"]) for r in response.json()["events"]] == [("EV000", "ignored"), ("EV001", "applied")]
    assert await pool.fetchval("SELECT count(*) FROM processor_events WHERE processor = 'gocardless'") == 2


async def test_a_payment_without_invoice_metadata_is_recorded_and_ignored(pool, client, h, endpoint, invoice):
    response = await post(client, h, [event("confirmed", None, event_id="EV001")])

    assert response.json()["events"][0]["status"] == "ignored"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0


async def test_an_unreadable_delivery_is_refused_whole(pool, client, h, endpoint, invoice):
    good = event("confirmed", invoice, event_id="EV001")
    bad = event("confirmed", invoice, event_id="EV002", payment="PM2")
    bad["resource_metadata"]["amount"] = "12.50"
    before = await state(pool)

    response = await post(client, h, [good, bad])

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "events.1.resource_metadata.amount"
    assert await state(pool) == before


async def test_rotation_old_and_new_secret_valid_during_the_overlap_the_old_refused_after(
    pool, client, h, endpoint, invoice
):
    new = SECRET + "-rotated"
    created = await client.post(
        "/v1/webhook-secrets", json={"processor": "gocardless", "secret": new, "overlap_seconds": 600}, headers=h.AUTH
    )
    [previous] = created.json()["previous"]

    assert (await post(client, h, [event("created", None, event_id="EV1")], secret=SECRET)).status_code == 200
    assert (await post(client, h, [event("created", None, event_id="EV2")], secret=new)).status_code == 200

    await pool.execute(
        "UPDATE webhook_secrets SET expires_at = now() - interval '1 second' WHERE secret_id = $1",
        previous["secret_id"],
    )
    assert (await post(client, h, [event("created", None, event_id="EV3")], secret=SECRET)).status_code == 498
    assert (await post(client, h, [event("created", None, event_id="EV4")], secret=new)).status_code == 200


async def test_a_stripe_secret_does_not_sign_gocardless_deliveries(pool, client, h, endpoint):
    assert (await post(client, h, [], secret=h.SECRET)).status_code == 498


@pytest.mark.skipif(not (REFERENCE / "signature_vector.json").exists(), reason="reference data not present")
async def test_the_client_libraries_signed_example_is_accepted(pool, client, h):
    vector = json.loads((REFERENCE / "signature_vector.json").read_text())
    await client.post(
        "/v1/webhook-secrets", json={"processor": "gocardless", "secret": vector["secret"]}, headers=h.AUTH
    )

    response = await post(client, h, vector["body"].encode(), signature=vector["signature"])

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["events"]] == ["ignored", "ignored"]


async def test_a_late_failure_reverses_once_however_often_it_is_reported(pool, client, h, endpoint, invoice):
    await post(client, h, [event("confirmed", invoice, event_id="EV001")])

    response = await post(
        client, h, [event("failed", None, event_id="EV002"), event("late_failure_settled", None, event_id="EV003")]
    )

    assert [r["status"] for r in response.json()["events"]] == ["reversed", "ignored"]  # nothing left
    [reversed_] = await h.outbox_events(pool, invoice["subject"], "dunning.PaymentReversed.v1")
    assert (reversed_["data"]["kind"], reversed_["data"]["amount"]) == ("payment_failed", "1250.00")
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice["subject"]) == 1250
