"""End to end, collections: the four services and the provider stand-ins as processes, driven through
their public APIs. One policy with a call stage, then an agency stage, then a final reminder:

- invoice A: the call task appears (GET /v1/tasks), the collector completes it with a promise to pay,
  and invoice-ingest shows the promise (made as POST /v1/invoices/{id}/promises makes it), which pauses
  A's dunning: its agency stage never fires;
- invoice B: the call goes unanswered; the agency stage hands B to the tenant's agency: the stand-in
  receiver (`/hooks/{name}`) gets one case file whose Standard Webhooks signature verifies with the
  secret PUT /v1/agency returned, B reads `with_agency`, its final reminder never arrives, and the
  debtor's `handed_over` e-mail arrives after the receiver got the case.
"""

import time
import uuid
from datetime import date, datetime, timedelta

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from dunning_tools.stack.mailserver import messages_to
from dunning_tools.testing.story import invoice_body
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e
POLICY = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT1S"},
        {"name": "call", "offset": "PT2S", "channels": ["call"]},
        {"name": "collections", "offset": "PT20S", "channels": ["agency"]},
        {"name": "final", "offset": "PT40S"},
    ],
}


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Tenant:
    def __init__(self, stack):
        import asyncio

        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        self.tenant = asyncio.run(create_tenant(stack.database_url, f"Collections {self.run}"))
        self.auth = {"Authorization": f"Bearer {self.tenant['api_key']}", "Dunning-Actor": "e2e"}

    def call(self, method: str, service: str, path: str, body: dict | None = None, ok=(200, 201), **kw) -> dict:
        r = httpx.request(method, f"{self.stack.url(service)}{path}", json=body, headers=self.auth, timeout=30, **kw)
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def invoice(self, name: str, email: str) -> dict:
        body = invoice_body(
            f"COL-{self.run}-{name}",
            currency="EUR",
            amount="500.00",
            name=f"Customer {name}",
            email=email,
            locale="en-GB",
            timezone="UTC",
            customer_external_id=f"C-{self.run}-{name}",
        )
        return self.call("POST", "invoice-ingest", "/v1/invoices", body)

    def task_of(self, invoice_id: str) -> dict | None:
        tasks = self.call("GET", "notifier", "/v1/tasks", params={"invoice_id": invoice_id})["data"]
        return tasks[0] if tasks else None

    def mails(self, email: str) -> list[dict]:
        return sorted(messages_to(self.stack.mail_api, email), key=lambda m: m["received_at"])


def test_a_call_promise_pauses_and_an_agency_hand_off_stops_the_reminders(e2e_stack):
    stack = e2e_stack
    t = Tenant(stack)
    hook = f"agency-{t.run}"
    agency = t.call(
        "PUT",
        "notifier",
        "/v1/agency",
        {
            "name": "Nordic Collect AB",
            "mode": "webhook",
            "url": f"{stack.providers_url}/hooks/{hook}",
            "contact_email": "cases@nordic.example",
        },
    )
    secret = agency["secret"]
    t.call("PUT", "scheduler", "/v1/policy", POLICY)
    time.sleep(2.5)  # the policy cache's TTL
    email_a, email_b = f"ap-a-{t.run}@example.com", f"ap-b-{t.run}@example.com"
    a, b = t.invoice("A", email_a), t.invoice("B", email_b)

    task_a = wait_until(lambda: t.task_of(a["id"]), timeout=60, interval=0.5, what="A's call task")
    promised = (date.today() + timedelta(days=7)).isoformat()
    done = t.call(
        "POST",
        "notifier",
        f"/v1/tasks/{task_a['task_id']}/complete",
        {"outcome": "promised_to_pay", "promised_amount": "200.00", "promised_date": promised},
    )
    assert done["state"] == "completed"
    task_b = wait_until(lambda: t.task_of(b["id"]), timeout=60, interval=0.5, what="B's call task")
    t.call("POST", "notifier", f"/v1/tasks/{task_b['task_id']}/complete", {"outcome": "no_answer"})

    def promise_of_a():
        promises = t.call("GET", "invoice-ingest", f"/v1/invoices/{a['id']}/promises")["data"]
        return promises or None

    [promise] = wait_until(promise_of_a, timeout=60, interval=0.5, what="A's promise")
    assert (promise["amount"], promise["promised_date"], promise["status"]) == ("200.00", promised, "pending")

    def received():
        r = httpx.get(f"{stack.providers_url}/_dev/hooks/{hook}", timeout=10)
        return r.json() or None

    [request] = wait_until(received, timeout=90, interval=0.5, what="the agency's case")
    payload = Webhook(secret).verify(request["body"], request["headers"])
    assert [i["invoice_id"] for i in payload["data"]["invoices"]] == [b["id"]]
    assert payload["data"]["invoices"][0]["balance"] == "500.00"
    assert payload["data"]["customer"]["email"] == email_b
    assert any(s["stage"] == "soft" for s in payload["data"]["timeline"])

    wait_until(
        lambda: t.call("GET", "invoice-ingest", f"/v1/invoices/{b['id']}")["status"] == "with_agency",
        timeout=60,
        interval=0.5,
        what="B with_agency",
    )

    def handed_over_mail():
        return [m for m in t.mails(email_b) if m["headers"].get("X-Dunning-Stage") == "handed_over"] or None

    [notice] = wait_until(handed_over_mail, timeout=60, interval=0.5, what="the handed_over notice")
    assert ts(notice["received_at"]) >= ts(request["received_at"])

    # Past the final stage's time (40 s after issue, plus margin): neither invoice got a final reminder,
    # and A (paused by its promise) was never handed over.
    issued = min(ts(a["created_at"]), ts(b["created_at"]))
    time.sleep(max(0.0, issued + 48 - time.time()))
    assert [m for m in t.mails(email_b) if m["headers"].get("X-Dunning-Stage") == "final"] == []
    assert [m for m in t.mails(email_a) if m["headers"].get("X-Dunning-Stage") == "final"] == []
    assert len(received()) == 1
    assert t.call("GET", "invoice-ingest", f"/v1/invoices/{a['id']}")["status"] == "open"
    history_b = t.call("GET", "invoice-ingest", f"/v1/invoices/{b['id']}")["history"]
    kinds = [e["kind"] for e in history_b]
    assert "call_task_created" in kinds and "call_task_completed" in kinds and "handed_to_agency" in kinds
    timeline_b = {s["stage"]: s for s in t.call("GET", "invoice-ingest", f"/v1/invoices/{b['id']}")["timeline"]}
    assert timeline_b["final"]["state"] == "cancelled" and "with_agency" in (timeline_b["final"]["reason"] or "")
