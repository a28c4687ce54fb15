"""End to end: the four services as processes, driven through their public APIs only.

An accounting system posts invoices, reminders are planned, fire and reach a real SMTP server; a
payment processor's signed webhook settles one invoice and its pending reminders are cancelled; a
payment that arrives before its invoice is matched when the invoice comes.
"""

import json
import time
import uuid

import httpx
import pytest

from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.system import Ports, Stack
from dunning_tools.testing.story import invoice_body, post_stripe_webhook, seconds_policy, stripe_invoice_paid
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

POLICY = seconds_policy(3, 4, 5, 14, 16)  # seconds instead of days, so the story takes seconds


@pytest.fixture(scope="module")
def stack(infra, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("e2e"), Ports.free(), durable=False)
    stack.database_url = infra.database_url
    stack.kafka_bootstrap_servers = infra.kafka_bootstrap_servers
    stack.start_infrastructure()
    stack.start_services()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def tenant(stack):
    import asyncio

    from dunning_cli.tenants import create_tenant

    tenant = asyncio.run(create_tenant(stack.database_url, f"E2E {uuid.uuid4().hex[:6]}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = httpx.put(f"{stack.url('scheduler')}/v1/policy", json=POLICY, headers=auth)
    assert r.status_code == 200, r.text
    return tenant


def invoice(ext: str, currency: str, amount: str, email: str, locale: str, tz: str) -> dict:
    return invoice_body(
        ext,
        currency=currency,
        amount=amount,
        name=f"Customer {ext}",
        email=email,
        locale=locale,
        timezone=tz,
        customer_external_id=f"C-{ext}",
    )


def mails_to(stack: Stack, address: str) -> list[dict]:
    return messages_to(stack.mail_api, address)


def timeline(stack: Stack, tenant: dict, invoice_id: str) -> dict:
    r = httpx.get(
        f"{stack.url('invoice-ingest')}/v1/invoices/{invoice_id}",
        headers={"Authorization": f"Bearer {tenant['api_key']}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def states(invoice: dict) -> dict[str, str]:
    return {s["stage"]: s["state"] for s in invoice["timeline"]}


def test_reminders_are_emailed_and_a_paid_invoice_stops_being_chased(stack, tenant):
    run = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    ingest = stack.url("invoice-ingest")
    a_mail, b_mail = f"ap-a-{run}@example.com", f"ap-b-{run}@example.com"
    a = httpx.post(
        f"{ingest}/v1/invoices",
        headers=auth,
        json=invoice(f"A-{run}", "EUR", "1250.00", a_mail, "de-DE", "Europe/Berlin"),
    )
    b = httpx.post(
        f"{ingest}/v1/invoices",
        headers=auth,
        json=invoice(f"B-{run}", "JPY", "5000", b_mail, "ja-JP", "Asia/Tokyo"),
    )
    assert a.status_code == 201, a.text
    assert b.status_code == 201, b.text
    a_id, b_id = a.json()["id"], b.json()["id"]

    # The first three stages reach both inboxes, formatted for each customer's locale.
    wait_until(
        lambda: len(mails_to(stack, a_mail)) >= 3 and len(mails_to(stack, b_mail)) >= 3,
        timeout=60,
        what="three reminders each",
    )
    a_mails = mails_to(stack, a_mail)
    assert any("1.250,00" in m["text"] for m in a_mails), [m["text"] for m in a_mails]
    assert all(m["headers"].get("X-Dunning-Invoice-Id") == a_id for m in a_mails)
    assert any("5,000" in m["text"] or "5000" in m["text"] for m in mails_to(stack, b_mail))

    # The payment processor says invoice B is paid: a Stripe-signed invoice.paid webhook.
    payload = stripe_invoice_paid(
        f"evt_{run}", f"in_{run}", number=f"B-{run}", amount_paid=5000, currency="jpy", invoice_id=b_id
    )
    recon, client = stack.url("reconciliation"), httpx.Client()
    forged = post_stripe_webhook(client, recon, tenant["tenant_id"], payload, "whsec_wrong")
    assert forged.status_code == 400
    paid = post_stripe_webhook(client, recon, tenant["tenant_id"], payload, tenant["webhook_secret"])
    assert paid.status_code == 200, paid.text

    # B's remaining stages are cancelled in its timeline; A keeps going.
    wait_until(
        lambda: states(timeline(stack, tenant, b_id)).get("final") == "cancelled",
        timeout=30,
        what="B's final stage cancelled",
    )
    b_now = timeline(stack, tenant, b_id)
    assert b_now["status"] == "paid"
    assert b_now["balance"] in ("0", "0.00")
    assert states(b_now) == {
        "pre_due": "sent",
        "soft": "sent",
        "firm": "sent",
        "final": "cancelled",
        "collections": "cancelled",
    }

    wait_until(lambda: len(mails_to(stack, a_mail)) == 5, timeout=60, what="A's final and collections notices")
    a_now = timeline(stack, tenant, a_id)
    assert a_now["status"] == "open"
    assert set(states(a_now).values()) == {"sent"}
    assert len(mails_to(stack, b_mail)) == 3, "no reminder after the payment"

    # A replayed webhook changes nothing.
    again = post_stripe_webhook(client, recon, tenant["tenant_id"], payload, tenant["webhook_secret"])
    assert again.status_code == 200
    payments = httpx.get(f"{stack.url('reconciliation')}/v1/payments", params={"invoice_id": b_id}, headers=auth).json()
    items = payments["data"] if isinstance(payments, dict) else payments
    assert len(items) == 1


def test_a_payment_before_its_invoice_means_no_reminder_at_all(stack, tenant):
    run = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    email = f"ap-early-{run}@example.com"
    paid = httpx.post(
        f"{stack.url('reconciliation')}/v1/payments",
        headers=auth,
        json={
            "invoice_external_id": f"E-{run}",
            "amount": "99.90",
            "currency": "GBP",
            "received_at": "2026-11-20T10:00:00+01:00",
            "reference": f"BANK-{run}",
        },
    )
    assert paid.status_code in (201, 202), paid.text
    created = httpx.post(
        f"{stack.url('invoice-ingest')}/v1/invoices",
        headers=auth,
        json=invoice(f"E-{run}", "GBP", "99.90", email, "en-GB", "Europe/London"),
    )
    assert created.status_code == 201, created.text
    invoice_id = created.json()["id"]
    wait_until(lambda: timeline(stack, tenant, invoice_id)["status"] == "paid", timeout=30, what="late match")
    wait_until(lambda: len(timeline(stack, tenant, invoice_id)["timeline"]) == 5, timeout=30, what="plan")
    assert set(states(timeline(stack, tenant, invoice_id)).values()) == {"cancelled"}
    time.sleep(6)  # past the first three offsets: nothing may have fired
    assert mails_to(stack, email) == []
    assert set(states(timeline(stack, tenant, invoice_id)).values()) == {"cancelled"}


def test_every_service_has_the_same_metrics_and_the_same_json_log_lines(stack):
    """One /metrics in all four (latency by route template, outbox, relay, consumer positions and lag),
    and one log format: every line JSON, the standard library's records (uvicorn's) included."""
    for name in ("invoice-ingest", "scheduler", "notifier", "reconciliation"):
        assert httpx.get(f"{stack.url(name)}/healthz").status_code == 200
        text = httpx.get(f"{stack.url(name)}/metrics").text
        assert 'dunning_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text, name
        for family in (
            "dunning_outbox_depth ",
            "dunning_outbox_oldest_age_seconds ",
            "dunning_outbox_published_total ",
            "dunning_consumer_position{",
            "dunning_consumer_lag{",
        ):
            assert family in text, (name, family)
    for sp in stack.procs:
        lines = [json.loads(line) for line in sp.log_path.read_text().splitlines()]  # each one JSON
        assert any(line.get("logger", "").startswith("uvicorn") for line in lines), sp.name
        assert all(line["service"] == lines[0]["service"] and "timestamp" in line for line in lines), sp.name


def test_every_service_drains_and_exits_cleanly_on_sigterm(stack):
    """What Kubernetes does at a rollout: SIGTERM, then the pod must finish in-flight work and exit 0."""
    import signal

    for sp in stack.procs:
        sp.proc.send_signal(signal.SIGTERM)
    for sp in stack.procs:
        assert sp.proc.wait(timeout=60) == 0, f"{sp.name} exited with {sp.proc.returncode}"
        log = sp.log_path.read_text()
        assert '"service.draining"' in log and '"service.stopped"' in log, sp.name
