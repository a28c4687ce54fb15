"""Stripe webhooks against real PostgreSQL: signature, dedupe, matching, amounts, PaymentReceived."""

import asyncio
import time

import pytest

from dunning_reconciliation.stripe_signature import sign

pytestmark = pytest.mark.integration


async def test_invoice_paid_settles_a_known_invoice(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)

    body = h.stripe_event("invoice.paid", h.invoice_paid(invoice_id, 125000), event_id="evt_paid_1")
    response = await h.post_webhook(client, body)

    assert response.status_code == 200
    assert response.json()["status"] == "applied"
    [event] = await h.outbox_events(pool, invoice_id)
    data = event["data"]
    assert event["type"] == "dunning.PaymentReceived.v1" and event["source"] == "/reconciliation"
    assert (data["amount"], data["amount_applied"], data["balance_remaining"], data["settled"]) == (
        "1250.00",
        "1250.00",
        "0.00",
        True,
    )
    assert (data["source"], data["source_reference"], data["invoice_external_id"]) == (
        "stripe",
        "evt_paid_1",
        issued["data"]["external_id"],
    )
    invoice = await pool.fetchrow("SELECT balance, status FROM invoices WHERE invoice_id = $1", invoice_id)
    assert (invoice["balance"], invoice["status"]) == (0, "paid")


async def test_partial_payment_intent_leaves_a_balance(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)

    body = h.stripe_event("payment_intent.succeeded", h.payment_intent({"dunning_invoice_id": invoice_id}, 50000))
    response = await h.post_webhook(client, body)

    assert response.status_code == 200 and response.json()["settled"] is False
    [event] = await h.outbox_events(pool, invoice_id)
    assert (event["data"]["amount_applied"], event["data"]["balance_remaining"], event["data"]["settled"]) == (
        "500.00",
        "750.00",
        False,
    )
    assert await pool.fetchval("SELECT balance FROM invoices WHERE invoice_id = $1", invoice_id) == 750


async def test_replayed_event_is_a_duplicate_and_changes_nothing(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    await h.handle_invoice(pool, issued)
    body = h.stripe_event(
        "payment_intent.succeeded", h.payment_intent({"dunning_invoice_id": issued["subject"]}, 10000)
    )
    assert (await h.post_webhook(client, body)).json()["status"] == "applied"
    before = await h.counts(pool)

    replay = await h.post_webhook(client, body)

    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert await h.counts(pool) == before
    assert await pool.fetchval("SELECT balance FROM invoices") == 1150


async def test_same_stripe_object_under_another_event_id_is_not_paid_twice(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    await h.handle_invoice(pool, issued)
    intent = h.payment_intent({"dunning_invoice_id": issued["subject"]}, 10000)
    await h.post_webhook(client, h.stripe_event("payment_intent.succeeded", intent))

    again = await h.post_webhook(client, h.stripe_event("payment_intent.succeeded", intent))

    assert again.json()["status"] == "duplicate"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, h: {"header": sign(body, "whsec_forged")}, id="wrong-secret"),
        pytest.param(lambda body, h: {"header": sign(body.replace(b"50000", b"99999"), h.SECRET)}, id="tampered-body"),
        pytest.param(lambda body, h: {"header": sign(body, h.SECRET, int(time.time()) - 301)}, id="stale"),
        pytest.param(lambda body, h: {"header": "t=1,v0=abc"}, id="no-v1"),
        pytest.param(lambda body, h: {"header": "nonsense"}, id="garbage"),
        pytest.param(lambda body, h: {"tenant_id": "ten_does_not_exist"}, id="unknown-tenant"),
    ],
)
async def test_refused_requests_change_nothing(pool, client, h, tamper):
    issued = h.invoice_issued()
    await h.handle_invoice(pool, issued)
    intent = h.payment_intent({"dunning_invoice_id": issued["subject"]}, 50000)
    body = h.stripe_event("payment_intent.succeeded", intent)

    response = await h.post_webhook(client, body, **tamper(body, h))

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 0}


async def test_unknown_tenant_reads_like_a_bad_signature(pool, client, h):
    body = h.stripe_event("invoice.paid", h.invoice_paid("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", 100))
    unknown = await h.post_webhook(client, body, tenant_id="ten_nobody")
    forged = await h.post_webhook(client, body, secret="whsec_forged")
    assert unknown.status_code == forged.status_code == 400
    assert unknown.json()["detail"] == forged.json()["detail"] == "signature verification failed"


async def test_missing_signature_header_is_refused(client, h):
    response = await client.post(f"/v1/webhooks/stripe/{h.TENANT}", content=b"{}")
    assert response.status_code == 400 and "Missing" in response.json()["detail"]


async def test_payment_before_invoice_is_applied_when_the_invoice_arrives(pool, client, h):
    issued = h.invoice_issued(amount_due="300.00", external_id="ACC-2026-77")
    invoice_id = issued["subject"]
    body = h.stripe_event("payment_intent.succeeded", h.payment_intent({"invoice_external_id": "ACC-2026-77"}, 30000))

    early = await h.post_webhook(client, body)

    assert early.status_code == 200 and early.json()["status"] == "pending_match"
    assert await h.outbox_events(pool) == []
    acknowledged = await pool.fetchval("SELECT acknowledged_at FROM payments")

    await h.handle_invoice(pool, issued)

    [event] = await h.outbox_events(pool, invoice_id)
    assert (event["data"]["amount_applied"], event["data"]["settled"]) == ("300.00", True)
    assert event["data"]["acknowledged_at"].startswith(acknowledged.strftime("%Y-%m-%dT%H:%M:%S"))
    row = await pool.fetchrow("SELECT invoice_id, status FROM payments")
    assert (row["invoice_id"], row["status"]) == (invoice_id, "applied")


async def test_invoice_number_from_stripe_invoice_matches(pool, client, h):
    issued = h.invoice_issued(amount_due="99.00", number="ACME-2026-0099")
    await h.handle_invoice(pool, issued)
    obj = h.invoice_paid("", 9900, number="ACME-2026-0099", metadata={})

    response = await h.post_webhook(client, h.stripe_event("invoice.paid", obj))

    assert response.json()["status"] == "applied" and response.json()["invoice_id"] == issued["subject"]


async def test_jpy_minor_units_are_yen(pool, client, h):
    issued = h.invoice_issued(currency="JPY", amount_due="5000")
    await h.handle_invoice(pool, issued)

    body = h.stripe_event("invoice.paid", h.invoice_paid(issued["subject"], 5000, "jpy"))
    response = await h.post_webhook(client, body)

    assert response.json()["settled"] is True
    [event] = await h.outbox_events(pool, issued["subject"])
    assert (event["data"]["currency"], event["data"]["amount"], event["data"]["balance_remaining"]) == (
        "JPY",
        "5000",
        "0",
    )


async def test_currency_mismatch_is_recorded_not_applied(pool, client, h):
    issued = h.invoice_issued(currency="EUR", amount_due="100.00")
    await h.handle_invoice(pool, issued)

    response = await h.post_webhook(
        client, h.stripe_event("invoice.paid", h.invoice_paid(issued["subject"], 10000, "usd"))
    )

    assert response.status_code == 200 and response.json()["status"] == "rejected_currency_mismatch"
    assert await h.outbox_events(pool) == []
    assert await pool.fetchval("SELECT status FROM payments") == "rejected_currency_mismatch"
    assert await pool.fetchval("SELECT balance FROM invoices") == 100


async def test_overpayment_then_payment_on_a_paid_invoice(pool, client, h):
    issued = h.invoice_issued(amount_due="100.00")
    await h.handle_invoice(pool, issued)
    meta = {"dunning_invoice_id": issued["subject"]}

    await h.post_webhook(client, h.stripe_event("payment_intent.succeeded", h.payment_intent(meta, 12000)))
    late = await h.post_webhook(client, h.stripe_event("payment_intent.succeeded", h.payment_intent(meta, 500)))

    assert late.json()["status"] == "applied" and late.json()["settled"] is True
    rows = await pool.fetch("SELECT amount_applied, unapplied_amount FROM payments ORDER BY payment_id")
    assert [(r["amount_applied"], r["unapplied_amount"]) for r in rows] == [(100, 20), (0, 5)]
    [event] = await h.outbox_events(pool)  # the payment on a paid invoice publishes nothing
    assert (event["data"]["amount"], event["data"]["amount_applied"], event["data"]["settled"]) == (
        "120.00",
        "100.00",
        True,
    )


async def test_other_event_types_are_ignored_and_recorded(pool, client, h):
    body = h.stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    response = await h.post_webhook(client, body)
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 1}


async def test_signed_but_unreadable_event_is_a_400_naming_the_field(pool, client, h):
    body = h.stripe_event("invoice.paid", h.invoice_paid("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", 100, "zzz"))
    response = await h.post_webhook(client, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "data.object.currency"
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 0}


async def test_concurrent_deliveries_of_one_event_apply_it_once(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    await h.handle_invoice(pool, issued)
    intent = h.payment_intent({"dunning_invoice_id": issued["subject"]}, 10000)
    body = h.stripe_event("payment_intent.succeeded", intent)

    responses = await asyncio.gather(*(h.post_webhook(client, body) for _ in range(4)))

    assert sorted(r.json()["status"] for r in responses) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert len(await h.outbox_events(pool, issued["subject"])) == 1
    assert await pool.fetchval("SELECT balance FROM invoices") == 1150


async def test_another_processors_secret_does_not_verify_a_stripe_delivery(pool, client, h):
    """Secrets are per tenant AND processor: the tenant's GoCardless secret signs nothing for Stripe."""
    await pool.execute(
        "INSERT INTO webhook_secrets (secret_id, tenant_id, processor, secret)"
        " VALUES ('whs_gocardlessonly0001', $1, 'gocardless', 'gocardless-endpoint-secret')",
        h.TENANT,
    )
    body = h.stripe_event("invoice.paid", h.invoice_paid("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", 1000))

    response = await h.post_webhook(client, body, secret="gocardless-endpoint-secret")

    assert response.status_code == 400 and response.json()["detail"] == "signature verification failed"
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 0
