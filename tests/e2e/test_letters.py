"""End to end: a policy whose stage goes by letter. The notifier renders the PDF, the print-and-mail
stand-in (Lob's API) receives and keeps it, and the notifier's API serves the very same bytes."""

import uuid
from datetime import date, timedelta

import httpx
import pytest

from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

POLICY = {"anchor": "issued_at", "stages": [{"name": "firm", "offset": "PT2S", "channels": ["letter"]}]}


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


@pytest.fixture(scope="module")
def tenant(stack):
    import asyncio

    from dunning_cli.tenants import create_tenant

    tenant = asyncio.run(create_tenant(stack.database_url, f"E2E letters {uuid.uuid4().hex[:6]}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = httpx.put(f"{stack.url('scheduler')}/v1/policy", json=POLICY, headers=auth)
    assert r.status_code == 200, r.text
    return tenant


def test_a_letter_stage_is_printed_and_its_pdf_served_as_sent(stack, tenant):
    run = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    body = {
        "external_id": f"L-{run}",
        "number": f"L-{run}",
        "currency": "EUR",
        "amount_due": "1234.50",
        "issue_date": date.today().isoformat(),
        "due_date": (date.today() + timedelta(days=14)).isoformat(),
        "payment_url": f"https://pay.example.com/L-{run}",
        "customer": {
            "external_id": f"C-{run}",
            "name": "Acme Widgets GmbH",
            "email": f"ap-{run}@example.com",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "postal_address": {
                "name": "Acme Widgets GmbH",
                "lines": ["Friedrichstraße 100"],
                "postal_code": "10117",
                "city": "Berlin",
                "country": "DE",
            },
        },
    }
    r = httpx.post(f"{stack.url('invoice-ingest')}/v1/invoices", json=body, headers=auth)
    assert r.status_code == 201, r.text
    invoice_id = r.json()["id"]

    def letter_delivery() -> dict | None:
        resp = httpx.get(f"{stack.url('notifier')}/v1/deliveries", params={"invoice_id": invoice_id}, headers=auth)
        sent = [d for d in resp.json()["data"] if d["channel"] == "letter" and d["state"] in ("sent", "failed")]
        return sent[0] if sent else None

    delivery = wait_until(letter_delivery, timeout=60, interval=0.5, what="the letter delivery to be sent")
    assert delivery["state"] == "sent", (delivery["last_error_code"], delivery["last_error"])
    letter_id = delivery["provider_message_id"]
    assert letter_id.startswith("ltr_")

    made = [x for x in httpx.get(f"{stack.providers_url}/_dev/letters").json()["data"] if x["id"] == letter_id]
    assert len(made) == 1
    assert made[0]["metadata"]["delivery_id"] == delivery["delivery_id"]
    assert made[0]["to"]["address_city"] == "Berlin" and made[0]["use_type"] == "operational"
    printed = httpx.get(f"{stack.providers_url}/_dev/letters/{letter_id}.pdf").content
    assert printed.startswith(b"%PDF-")

    served = httpx.get(f"{stack.url('notifier')}/v1/deliveries/{delivery['delivery_id']}/letter.pdf", headers=auth)
    assert served.status_code == 200 and served.headers["content-type"] == "application/pdf"
    assert served.content == printed
