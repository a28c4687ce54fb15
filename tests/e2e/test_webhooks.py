"""End to end, outbound webhooks: the services as processes (the shared e2e stack), the stand-in
receiver of the provider stand-ins, everything through public APIs.

A tenant subscribes two endpoints through the notifier's API, one answering 2xx and one failing; a
policy whose first stage goes on the `webhook` channel posts the reminder (`reminder.due`) to the
first; a payment settles the invoice and `payment.received` and `invoice.paid` arrive, verified with
the `standardwebhooks` package; the failing endpoint is retried and its attempts are visible; a
delivered message is replayed by hand and arrives again with the same `webhook-id`.
"""

import asyncio
import json
import uuid

import httpx
import pytest
from standardwebhooks import Webhook

from dunning_tools.testing.story import invoice_body, seconds_policy
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


class Tenant:
    def __init__(self, stack):
        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        tenant = asyncio.run(create_tenant(stack.database_url, f"Webhooks {self.run}"))
        self.client = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {tenant['api_key']}"})

    def call(self, method: str, service: str, path: str, body=None, ok=(200, 201, 202), **kwargs) -> dict:
        r = self.client.request(method, f"{self.stack.url(service)}{path}", json=body, **kwargs)
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def hook(self, kind: str) -> tuple[str, str]:
        name = f"{kind}-{self.run}"
        return name, f"{self.stack.providers_url}/hooks/{name}"

    def received(self, name: str, event_type: str | None = None) -> list[dict]:
        got = httpx.get(f"{self.stack.providers_url}/_dev/hooks/{name}").json()
        return [r for r in got if event_type is None or json.loads(r["body"])["type"] == event_type]


def test_events_and_webhook_reminders_reach_the_tenants_endpoints_signed(stack):
    t = Tenant(stack)
    ok_name, ok_url = t.hook("ok")
    fail_name, fail_url = t.hook("fail")
    ok = t.call(
        "POST",
        "notifier",
        "/v1/webhook-endpoints",
        {"url": ok_url, "event_types": ["reminder.due", "payment.received", "invoice.paid"], "description": "ERP"},
    )
    failing = t.call("POST", "notifier", "/v1/webhook-endpoints", {"url": fail_url, "event_types": ["invoice.paid"]})
    assert ok["secret"].startswith("whsec_") and ok["enabled"] is True

    policy = seconds_policy(3, 100000, 100001, 100002, 100003)  # only the first stage fires here
    policy["stages"][0]["channels"] = ["webhook"]
    t.call("PUT", "scheduler", "/v1/policy", policy)
    body = invoice_body(
        f"WH-{t.run}",
        currency="EUR",
        amount="250.00",
        name=f"Customer {t.run}",
        email=f"ap-{t.run}@example.com",
        locale="en-GB",
        timezone="UTC",
        customer_external_id=f"C-{t.run}",
    )
    invoice = t.call("POST", "invoice-ingest", "/v1/invoices", body)

    # The webhook-channel reminder, signed; its delivery sent.
    (due,) = wait_until(lambda: t.received(ok_name, "reminder.due"), timeout=60, what="reminder.due received")
    reminder = Webhook(ok["secret"]).verify(due["body"], due["headers"])
    assert reminder["data"]["invoice_id"] == invoice["id"]
    assert reminder["data"]["invoice"]["payment_url"] == body["payment_url"]
    assert reminder["data"]["invoice"]["balance"] == "250.00"
    assert due["headers"]["webhook-id"] == reminder["data"]["delivery_id"]

    def deliveries():
        found = t.call("GET", "notifier", "/v1/deliveries", params={"invoice_id": invoice["id"]})["data"]
        return [(d["channel"], d["state"]) for d in found if d["state"] != "sending"]

    assert wait_until(deliveries, timeout=30, what="the delivery recorded") == [("webhook", "sent")]

    # Paid: payment.received and invoice.paid arrive, verified.
    t.call(
        "POST",
        "reconciliation",
        "/v1/payments",
        {
            "invoice_external_id": body["external_id"],
            "amount": "250.00",
            "currency": "EUR",
            "received_at": "2026-11-30T10:00:00Z",
            "reference": f"BANK-{t.run}",
        },
    )
    (paid,) = wait_until(lambda: t.received(ok_name, "invoice.paid"), timeout=60, what="invoice.paid received")
    event = Webhook(ok["secret"]).verify(paid["body"], paid["headers"])
    assert event["data"]["invoice_id"] == invoice["id"] and event["data"]["reason"] == "invoice_settled"
    (payment,) = wait_until(lambda: t.received(ok_name, "payment.received"), timeout=30, what="payment.received")
    money = Webhook(ok["secret"]).verify(payment["body"], payment["headers"])
    assert money["data"]["amount"] == "250.00" and money["data"]["settled"] is True

    # The failing endpoint: retried (backoff), every attempt visible; its message still pending.
    def failed_twice():
        attempts = t.call("GET", "notifier", f"/v1/webhook-endpoints/{failing['endpoint_id']}/attempts")["data"]
        return attempts if len(attempts) >= 2 else None

    attempts = wait_until(failed_twice, timeout=60, interval=0.5, what="the failing endpoint retried")
    assert all(a["status_code"] == 500 and a["error"] == "HTTP 500" for a in attempts)
    assert len(t.received(fail_name)) >= 2
    (pending,) = t.call("GET", "notifier", "/v1/webhook-messages", params={"endpoint_id": failing["endpoint_id"]})[
        "data"
    ]
    assert pending["event_type"] == "invoice.paid" and pending["state"] == "pending" and pending["attempts"] >= 2
    assert pending["last_status_code"] == 500

    # Replay a delivered message by hand: the same webhook-id again, newly signed.
    delivered = t.call(
        "GET", "notifier", "/v1/webhook-messages", params={"event_type": "invoice.paid", "status": "delivered"}
    )["data"]
    (message,) = [m for m in delivered if m["endpoint_id"] == ok["endpoint_id"]]
    assert message["message_id"] == paid["headers"]["webhook-id"]
    replayed = t.call("POST", "notifier", f"/v1/webhook-messages/{message['message_id']}/replay")
    assert replayed["state"] == "pending"

    def received_twice():
        got = t.received(ok_name, "invoice.paid")
        return got if len(got) == 2 else None

    twice = wait_until(received_twice, timeout=30, what="the replay received")
    assert {r["headers"]["webhook-id"] for r in twice} == {message["message_id"]}
    Webhook(ok["secret"]).verify(twice[1]["body"], twice[1]["headers"])
    ok_attempts = t.call("GET", "notifier", f"/v1/webhook-endpoints/{ok['endpoint_id']}/attempts")["data"]
    assert {a["trigger"] for a in ok_attempts} == {"reminder", "scheduled", "replay"}
