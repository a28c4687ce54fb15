"""End to end: a policy whose stage goes by SMS. The invoice's customer has a phone; the notifier
sends the stage through Twilio's Messages API (the stand-in), the stand-in's signed status callbacks
make the delivery `delivered`; a customer whose number the stand-in cannot reach ends `undelivered`;
a stage for a customer without a usable number fails clearly."""

import uuid
from datetime import date, timedelta

import httpx
import pytest

from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

POLICY = {"anchor": "issued_at", "stages": [{"name": "firm", "offset": "PT2S", "channels": ["sms"]}]}


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


@pytest.fixture(scope="module")
def tenant(stack):
    import asyncio

    from dunning_cli.tenants import create_tenant

    tenant = asyncio.run(create_tenant(stack.database_url, f"E2E sms {uuid.uuid4().hex[:6]}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = httpx.put(f"{stack.url('scheduler')}/v1/policy", json=POLICY, headers=auth)
    assert r.status_code == 200, r.text
    return tenant


def issue(stack, tenant, run: str, phone: str | None) -> str:
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    customer = {
        "external_id": f"C-{run}",
        "name": "Müller GmbH",
        "email": f"ap-{run}@example.com",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
    }
    if phone is not None:
        customer["phone"] = phone
    body = {
        "external_id": f"S-{run}",
        "number": f"S-{run}",
        "currency": "EUR",
        "amount_due": "1234.50",
        "issue_date": date.today().isoformat(),
        "due_date": (date.today() + timedelta(days=14)).isoformat(),
        "payment_url": f"https://pay.example.com/S-{run}",
        "customer": customer,
    }
    r = httpx.post(f"{stack.url('invoice-ingest')}/v1/invoices", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sms_delivery(stack, tenant, invoice_id: str, done) -> dict:
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}

    def found() -> dict | None:
        resp = httpx.get(f"{stack.url('notifier')}/v1/deliveries", params={"invoice_id": invoice_id}, headers=auth)
        mine = [d for d in resp.json()["data"] if d["channel"] == "sms" and done(d)]
        return mine[0] if mine else None

    return wait_until(found, timeout=60, interval=0.5, what="the sms delivery")


def test_an_sms_stage_reaches_the_stand_in_and_the_callbacks_make_it_delivered(stack, tenant):
    run = uuid.uuid4().hex[:8]
    phone = f"+49151{int(run, 16) % 10**8:08d}"
    invoice_id = issue(stack, tenant, run, phone.replace("+49151", "+49 151 "))  # stored in E.164
    delivered = sms_delivery(stack, tenant, invoice_id, lambda d: d["provider_status"] == "delivered")
    assert delivered["state"] == "sent" and delivered["recipient"] == phone
    assert delivered["sms_encoding"] in ("GSM-7", "UCS-2") and delivered["sms_segments"] >= 1

    [message] = httpx.get(f"{stack.providers_url}/_dev/sms", params={"to": phone}).json()["messages"]
    assert message["sid"] == delivered["provider_message_id"] and message["status"] == "delivered"
    assert f"S-{run}" in message["body"] and int(message["num_segments"]) == delivered["sms_segments"]


def test_an_unreachable_number_ends_undelivered(stack, tenant):
    run = uuid.uuid4().hex[:8]
    phone = "+4915112340000"  # the stand-in fails a To ending in 0000 (ErrorCode 30003)
    invoice_id = issue(stack, tenant, run, phone)
    undelivered = sms_delivery(stack, tenant, invoice_id, lambda d: d["provider_status"] == "undelivered")
    assert undelivered["state"] == "sent" and undelivered["recipient"] == phone


def test_a_customer_without_a_usable_number_fails_clearly(stack, tenant):
    run = uuid.uuid4().hex[:8]
    invoice_id = issue(stack, tenant, run, None)
    failed = sms_delivery(stack, tenant, invoice_id, lambda d: d["state"] == "failed")
    assert failed["last_error_code"] in ("invalid_recipient", "no_allowed_channel", "contact_invalid"), failed
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = httpx.post(
        f"{stack.url('invoice-ingest')}/v1/invoices",
        json={"customer": {"phone": "12345"}},
        headers=auth,
    )
    assert r.status_code == 422 and "customer.phone" in [e["field"] for e in r.json()["errors"]]
