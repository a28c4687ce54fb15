"""End to end: the four services as processes, driven through their public APIs only.

An accounting system posts invoices, reminders are planned, fire and reach a real SMTP server; a
payment processor's signed webhook settles one invoice and its pending reminders are cancelled; a
payment that arrives before its invoice is matched when the invoice comes. Then the changes an
accounting system makes: a due date moved (only the pending stages re-planned), a void, a settling
credit note, a customer's new AP contact with a CC.
"""

import json
import time
import uuid
from datetime import date, datetime, timedelta

import httpx
import pytest

from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.system import Ports, Stack
from dunning_tools.testing.story import invoice_body, post_stripe_webhook, seconds_policy, stripe_invoice_paid
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

POLICY = seconds_policy(3, 4, 5, 14, 16)  # seconds instead of days, so the story takes seconds


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


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


# -- invoice changes, the way an accounting system makes them --------------------------------------


@pytest.fixture(scope="module")
def due_date_tenant(stack):
    """A tenant on the built-in policy: stages anchored to the due date (days around it)."""
    import asyncio

    from dunning_cli.tenants import create_tenant

    return asyncio.run(create_tenant(stack.database_url, f"E2E changes {uuid.uuid4().hex[:6]}"))


def test_a_due_date_move_replans_only_pending_stages_and_a_void_cancels_them(stack, due_date_tenant):
    run = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {due_date_tenant['api_key']}"}
    ingest = f"{stack.url('invoice-ingest')}/v1/invoices"
    body = invoice(f"M-{run}", "EUR", "800.00", f"ap-m-{run}@example.com", "en-GB", "Europe/London")
    created = httpx.post(ingest, headers=auth, json=body)
    assert created.status_code == 201, created.text
    invoice_id, etag = created.json()["id"], created.headers["etag"]
    tenant = due_date_tenant
    wait_until(lambda: len(timeline(stack, tenant, invoice_id)["timeline"]) == 5, timeout=30, what="the plan")
    before = {s["stage"]: s["scheduled_at"] for s in timeline(stack, tenant, invoice_id)["timeline"]}

    # The accounting system moves the due date by a week; a write with a stale version is refused.
    later = (date.fromisoformat(body["due_date"]) + timedelta(days=7)).isoformat()
    moved = httpx.patch(f"{ingest}/{invoice_id}", headers={**auth, "If-Match": etag}, json={"due_date": later})
    assert moved.status_code == 200, moved.text
    assert moved.json()["due_date"] == later and moved.headers["etag"] != etag
    stale = httpx.patch(
        f"{ingest}/{invoice_id}", headers={**auth, "If-Match": etag}, json={"due_date": body["due_date"]}
    )
    assert stale.status_code == 412, stale.text

    def rescheduled() -> dict | None:
        now = timeline(stack, tenant, invoice_id)
        return now if all(s["scheduled_at"] != before[s["stage"]] for s in now["timeline"]) else None

    now = wait_until(rescheduled, timeout=30, what="the stages re-planned")
    for stage in now["timeline"]:  # every stage moved by the week, and the timeline says from where and why
        old, new = (
            datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (before[stage["stage"]], stage["scheduled_at"])
        )
        assert new - old == timedelta(days=7), stage
        moves = [h for h in stage["history"] if h.get("previous_scheduled_at")]
        assert moves and moves[-1]["reason"] == "due_date_changed", stage["history"]

    # The invoice is voided: its pending stages are cancelled, and it can no longer be changed.
    voided = httpx.post(f"{ingest}/{invoice_id}/void", headers=auth, json={"reason": "issued in error"})
    assert voided.status_code == 200, voided.text
    wait_until(
        lambda: set(states(timeline(stack, tenant, invoice_id)).values()) == {"cancelled"},
        timeout=30,
        what="every stage cancelled",
    )
    final = timeline(stack, tenant, invoice_id)
    assert final["status"] == "void"
    assert {s["reason"] for s in final["timeline"]} == {"invoice_voided"}
    refused = httpx.patch(f"{ingest}/{invoice_id}", headers=auth, json={"amount_due": "1.00"})
    assert refused.status_code == 409, refused.text


def test_a_settling_credit_note_stops_the_chase_and_new_contacts_get_the_next_reminder(stack, tenant):
    run = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    ingest = stack.url("invoice-ingest")
    old_mail, new_mail, cc = f"ap-c-{run}@example.com", f"payables-{run}@example.com", f"cfo-{run}@example.com"
    created = httpx.post(
        f"{ingest}/v1/invoices", headers=auth, json=invoice(f"C-{run}", "EUR", "300.00", old_mail, "en-GB", "UTC")
    )
    assert created.status_code == 201, created.text
    invoice_id, customer_id = created.json()["id"], created.json()["customer"]["id"]
    credited = httpx.post(
        f"{ingest}/v1/invoices",
        headers=auth,
        json=invoice(f"D-{run}", "EUR", "120.00", f"ap-d-{run}@example.com", "en-GB", "UTC"),
    )
    assert credited.status_code == 201, credited.text
    credited_id = credited.json()["id"]

    # The customer's AP contact changes before the later stages: they reach the new address, CFO copied.
    patched = httpx.patch(f"{ingest}/v1/customers/{customer_id}", headers=auth, json={"email": new_mail, "cc": [cc]})
    assert patched.status_code == 200, patched.text
    wait_until(lambda: len(mails_to(stack, new_mail)) >= 2, timeout=60, what="reminders to the new AP address")
    latest = mails_to(stack, new_mail)[-1]
    assert latest["headers"].get("X-Dunning-Invoice-Id") == invoice_id
    assert cc in latest["headers"].get("Cc", ""), latest["headers"]
    assert mails_to(stack, cc), "the CC is an envelope recipient too"

    # A credit note for the whole balance of the other invoice settles it: nothing more is sent.
    wait_until(lambda: len(mails_to(stack, f"ap-d-{run}@example.com")) >= 1, timeout=30, what="D's first reminder")
    note = httpx.post(
        f"{stack.url('reconciliation')}/v1/credit-notes",
        headers=auth,
        json={
            "invoice_id": credited_id,
            "reference": f"CN-{run}",
            "amount": "120.00",
            "currency": "EUR",
            "reason": "returned",
        },
    )
    assert note.status_code == 201, note.text
    assert note.json()["settled"] is True
    wait_until(lambda: timeline(stack, tenant, credited_id)["status"] == "paid", timeout=30, what="D settled")
    wait_until(
        lambda: "cancelled" in states(timeline(stack, tenant, credited_id)).values(), timeout=30, what="D cancelled"
    )
    sent = len(mails_to(stack, f"ap-d-{run}@example.com"))
    reasons = {s["reason"] for s in timeline(stack, tenant, credited_id)["timeline"] if s["state"] == "cancelled"}
    assert reasons == {"invoice_credited"}
    time.sleep(3)
    assert len(mails_to(stack, f"ap-d-{run}@example.com")) == sent, "no reminder after the credit note"


def test_every_service_drains_and_exits_cleanly_on_sigterm(tmp_path):
    """What Kubernetes does at a rollout: SIGTERM, then the pod must finish in-flight work and exit 0.
    On a stack of its own (its own embedded PostgreSQL and broker): the shared one's services, restarted,
    would spend the next module's first seconds rejoining their consumer groups."""
    import signal

    own = Stack(tmp_path, Ports.free(), durable=False)
    own.database_url = own.kafka_bootstrap_servers = ""  # embedded servers of its own, whatever the env says
    own.start_infrastructure()
    try:
        own.start_services()
        for sp in own.procs:
            sp.proc.send_signal(signal.SIGTERM)
        for sp in own.procs:
            assert sp.proc.wait(timeout=60) == 0, f"{sp.name} exited with {sp.proc.returncode}"
            log = sp.log_path.read_text()
            assert '"service.draining"' in log and '"service.stopped"' in log, sp.name
    finally:
        own.stop()
