"""`make demo`, every channel: one German customer (de-DE, a phone, a postal address) with two overdue
invoices and a policy whose stages go by email, SMS, letter, webhook, call and agency, seconds apart.

Shown through the public APIs only: the German e-mail's subject and first lines (the dev mail server's
API), the SMS as the Twilio stand-in received it (`GET {PROVIDERS_URL}/_dev/sms`), the letter's PDF
(`GET /v1/deliveries/{id}/letter.pdf`, saved under `.run/demo/`), the `reminder.due` webhook at the
stand-in receiver verified with `standardwebhooks`, the call task (`GET /v1/tasks`) completed with a
promise to pay, and the agency hand-off: `PUT /v1/agency` pointing at the receiver, the case file
received and verified, the invoice `with_agency`.

A promise pauses its invoice's dunning, so the first invoice keeps the promise and the second (its call
unanswered) goes to the agency. A step whose feature is missing prints "not available: ..." and the
story goes on. `python -m dunning_tools.demo channels` tells only this story.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.stack.mailserver import messages_to

POLICY: dict[str, Any] = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": "PT2S", "channels": ["email"]},
        {"name": "firm", "offset": "PT5S", "channels": ["sms"]},
        {"name": "final", "offset": "PT8S", "channels": ["letter"]},
        {"name": "erp_notice", "offset": "PT11S", "template": "final", "channels": ["webhook"]},
        {"name": "call", "offset": "PT14S", "channels": ["call"]},
        {"name": "collections", "offset": "PT30S", "channels": ["agency"]},
    ],
}
ADDRESS = {
    "name": "Bäckerei Schmidt GmbH",
    "lines": ["Hauptstraße 12"],
    "postal_code": "80331",
    "city": "München",
    "country": "DE",
}
BRAND: dict[str, Any] = {  # the tenant's sender: the e-mail's From name, the letter's return address and bank details
    "sender_name": "Nordmühle Backbedarf",
    "reply_to": "buchhaltung@nordmuehle.example",
    "signature": "Nordmühle Backbedarf GmbH · Buchhaltung",
    "postal_address": {
        "name": "Nordmühle Backbedarf GmbH",
        "lines": ["Kaiserstraße 5"],
        "postal_code": "60311",
        "city": "Frankfurt am Main",
        "country": "DE",
    },
    "bank": {
        "account_holder": "Nordmühle Backbedarf GmbH",
        "iban": "DE89 3704 0044 0532 0130 00",
        "bic": "COBADEFFXXX",
    },
}
Say = Callable[[str], None]


class NotAvailable(Exception):
    """A step's feature is not there (a 404/405/501, a missing field) or did not show within its time."""


def within(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` until truthy; NotAvailable naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise NotAvailable(f"{what} did not show within {timeout:.0f}s")


class Api:
    """The tenant's calls to the services; an answer that is not 2xx is NotAvailable with its problem."""

    def __init__(self, client: httpx.Client, state: dict, api_key: str) -> None:
        self.client, self.state = client, state
        self.auth = {"Authorization": f"Bearer {api_key}", "Dunning-Actor": "demo"}

    def call(self, method: str, service: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        url = f"{self.state[service]}{path}"
        r = self.client.request(method, url, json=body, headers={**self.auth, **kwargs.pop("headers", {})}, **kwargs)
        if r.status_code >= 300:
            raise NotAvailable(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    def deliveries(self, invoice_id: str, channel: str) -> list[dict]:
        found = self.call("GET", "NOTIFIER_URL", "/v1/deliveries", params={"invoice_id": invoice_id})["data"]
        return [d for d in found if d["channel"] == channel]

    def settled(self, invoice_id: str, channel: str, timeout: float) -> dict:
        """The invoice's delivery on `channel` once sent or failed (its last error shown if failed)."""

        def done() -> dict | None:
            ended = [d for d in self.deliveries(invoice_id, channel) if d["state"] in ("sent", "failed")]
            return ended[0] if ended else None

        delivery = within(done, timeout, f"the {channel} delivery")
        if delivery["state"] == "failed":
            raise NotAvailable(
                f"the {channel} delivery failed: {delivery.get('last_error_code')} {delivery.get('last_error')}"
            )
        return delivery

    def received(self, hook: str) -> list[dict]:
        r = self.client.get(f"{self.state['PROVIDERS_URL']}/_dev/hooks/{hook}")
        return r.json() if r.status_code == 200 else []


def step(say: Say, title: str, body: Callable[[], None]) -> bool:
    """Run one step; a missing feature prints "not available: ..." instead of ending the demo."""
    say(title)
    try:
        body()
        return True
    except (NotAvailable, httpx.HTTPError, KeyError, ValueError, TypeError, IndexError) as exc:
        why = str(exc) if isinstance(exc, NotAvailable) else f"{type(exc).__name__}: {exc}"
        say(f"    not available: {why}")
        return False


def channels(client: httpx.Client, state: dict, say: Say, wait: Any = None) -> dict[str, bool]:
    """The every-channel story; returns which steps ran (True) or were not available (False)."""
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Kanäle {time.strftime('%H%M%S')}"))
    api = Api(client, state, tenant["api_key"])
    run = uuid.uuid4().hex[:6]
    providers = state.get("PROVIDERS_URL", "")
    phone = f"+49151{int(run, 16) % 10**8:08d}"
    email = f"buchhaltung-{run}@schmidt.example"
    ran: dict[str, bool] = {}
    say(f"\n23. tenant {tenant['tenant_id']}: every channel for one German customer (de-DE, {phone}, München)")

    endpoint: dict = {}
    agency: dict = {}
    hook, agency_hook = f"erp-{run}", f"agency-{run}"

    def subscribe() -> None:
        url = f"{providers}/hooks/{hook}"
        body = {"url": url, "event_types": ["reminder.due"], "description": "ERP (demo)"}
        endpoint.update(api.call("POST", "NOTIFIER_URL", "/v1/webhook-endpoints", body))
        say(f"    webhook endpoint {endpoint['endpoint_id']} -> {url} (secret {endpoint['secret'][:12]}…)")

    def set_agency() -> None:
        url = f"{providers}/hooks/{agency_hook}"
        body = {"name": "Inkasso Süd GmbH", "mode": "webhook", "url": url, "contact_email": "faelle@inkasso.example"}
        agency.update(api.call("PUT", "NOTIFIER_URL", "/v1/agency", body))
        say(f"    agency {agency.get('name')} -> {url} (secret {agency['secret'][:12]}…)")

    def brand() -> None:
        api.call("PUT", "NOTIFIER_URL", "/v1/brand", BRAND)
        say(f"    sender {BRAND['sender_name']}, {BRAND['postal_address']['city']}, IBAN {BRAND['bank']['iban']}")

    ran["brand"] = step(say, "    PUT /v1/brand (the tenant's sender, return address and bank details)", brand)
    ran["webhook endpoint"] = step(
        say, "    POST /v1/webhook-endpoints (reminder.due to the stand-in receiver)", subscribe
    )
    ran["agency"] = step(say, "    PUT /v1/agency (webhook mode, the stand-in receiver)", set_agency)
    try:
        api.call("PUT", "SCHEDULER_URL", "/v1/policy", POLICY)
    except NotAvailable as exc:
        say(f"    not available: the policy ({exc}); the story ends here")
        return {**ran, "policy": False}
    say("    policy: " + ", ".join(f"{s['name']} +{s['offset'][2:]} {s['channels'][0]}" for s in POLICY["stages"]))
    time.sleep(2.5)  # the scheduler's policy cache

    invoices = [
        issue(api, run, key, phone, email, amount, days)
        for key, amount, days in (("1", "1480.00", 21), ("2", "372.90", 45))
    ]
    keep, handed = invoices
    for inv in invoices:
        say(f"24. issued {inv['number']}: {inv['amount_due']} EUR, due {inv['due_date']} (overdue) -> {inv['id']}")

    ran["email"] = step(
        say, "25. the German e-mail (soft stage), from the mail server's API", lambda: show_email(api, email, keep, say)
    )
    ran["sms"] = step(
        say, "26. the SMS (firm stage), as the Twilio stand-in received it", lambda: show_sms(api, phone, keep, say)
    )
    ran["letter"] = step(
        say, "27. the letter (final stage): its PDF through the notifier's API", lambda: show_letter(api, keep, say)
    )
    ran["webhook"] = step(
        say,
        "28. the reminder.due webhook at the receiver, verified with standardwebhooks",
        lambda: show_webhook(api, hook, endpoint, keep, say),
    )
    ran["call"] = step(
        say,
        "29. the call tasks (GET /v1/tasks); the first completed with a promise to pay",
        lambda: show_calls(api, keep, handed, say),
    )
    ran["hand-off"] = ran["agency"] and step(
        say,
        "30. the agency hand-off of the second invoice",
        lambda: show_handoff(api, agency_hook, agency, handed, say),
    )
    if not ran["agency"]:
        say("30. the agency hand-off\n    not available: no agency could be set")
    say("    steps: " + ", ".join(f"{k} {'ran' if v else 'not available'}" for k, v in ran.items()))
    return ran


def issue(api: Api, run: str, key: str, phone: str, email: str, amount: str, days_overdue: int) -> dict:
    ext = f"RE-{run}-{key}"
    body = {
        "external_id": ext,
        "number": ext,
        "currency": "EUR",
        "amount_due": amount,
        "issue_date": (date.today() - timedelta(days=days_overdue + 14)).isoformat(),
        "due_date": (date.today() - timedelta(days=days_overdue)).isoformat(),
        "payment_url": f"https://pay.example.com/{ext}",
        "customer": {
            "external_id": f"K-{run}",
            "name": "Bäckerei Schmidt GmbH",
            "email": email,
            "phone": phone.replace("+49151", "+49 151 "),  # as an accounting system types it: stored E.164
            "postal_address": ADDRESS,
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
        },
    }
    return api.call("POST", "INVOICE_INGEST_URL", "/v1/invoices", body, headers={"Idempotency-Key": ext})


def show_email(api: Api, email: str, inv: dict, say: Say) -> None:
    def mail() -> dict | None:
        got = messages_to(api.state["MAIL_API"], email, api.client)
        mine = [m for m in got if m["headers"].get("X-Dunning-Invoice-Id") == inv["id"]]
        return mine[0] if mine else None

    m = within(mail, 60, "the e-mail")
    say(f"    From: {m['from']}\n    To: {m['to']}\n    Subject: {m['subject']}")
    lines = [line for line in m["text"].splitlines() if line.strip()][:6]
    say("\n".join(f"    | {line}" for line in lines))


def show_sms(api: Api, phone: str, inv: dict, say: Say) -> None:
    api.settled(inv["id"], "sms", 60)

    def message() -> dict | None:
        r = api.client.get(f"{api.state['PROVIDERS_URL']}/_dev/sms", params={"to": phone})
        if r.status_code != 200:
            raise NotAvailable(f"GET /_dev/sms answered {r.status_code}")
        mine = [m for m in r.json()["messages"] if inv["number"] in m["body"]]
        return mine[0] if mine else None

    within(message, 30, "the SMS at the Twilio stand-in")
    try:  # the stand-in's signed status callbacks: queued -> sent -> delivered
        m = within(lambda: (got := message()) and got["status"] == "delivered" and got, 15, "delivered")
    except NotAvailable:
        m = message()
    say(f"    {m['sid']} to {m['to']} from {m.get('from')}: status {m['status']}, {m.get('num_segments')} segment(s)")
    say(f"    | {m['body']}")


def show_letter(api: Api, inv: dict, say: Say) -> None:
    delivery = api.settled(inv["id"], "letter", 90)
    r = api.client.get(
        f"{api.state['NOTIFIER_URL']}/v1/deliveries/{delivery['delivery_id']}/letter.pdf", headers=api.auth
    )
    if r.status_code != 200 or not r.content.startswith(b"%PDF-"):
        raise NotAvailable(f"GET /v1/deliveries/{{id}}/letter.pdf answered {r.status_code}")
    path = Path(".run/demo") / f"letter-{inv['number']}.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(r.content)
    say(
        f"    {delivery['provider_message_id']} at the print-and-mail stand-in; {path}: "
        f"{len(r.content)} bytes, {pages(r.content)} page(s)"
    )


def pages(pdf: bytes) -> int | str:
    try:
        import io

        from pypdf import PdfReader
    except ImportError:  # pypdf is a dev requirement; `make install` installs it
        return "?"
    return len(PdfReader(io.BytesIO(pdf)).pages)


def verified(secret: str, request: dict) -> dict:
    from standardwebhooks import Webhook

    return Webhook(secret).verify(request["body"], request["headers"])


def show_webhook(api: Api, hook: str, endpoint: dict, inv: dict, say: Say) -> None:
    if not endpoint:
        raise NotAvailable("no webhook endpoint")

    def reminder() -> dict | None:
        mine = [r for r in api.received(hook) if inv["id"] in (r["body"] or "")]
        return mine[0] if mine else None

    request = within(reminder, 60, "reminder.due at the receiver")
    event = verified(endpoint["secret"], request)
    data = event["data"]
    say(f"    webhook-id {request['headers'].get('webhook-id')}: signature verified (standardwebhooks)")
    say(
        f"    {event['type']}: stage {data.get('stage')}, invoice {data['invoice'].get('number')}, "
        f"balance {data['invoice'].get('balance')}"
    )


def show_calls(api: Api, keep: dict, handed: dict, say: Say) -> None:
    def task_of(inv: dict) -> Callable[[], dict | None]:
        def found() -> dict | None:
            tasks = api.call("GET", "NOTIFIER_URL", "/v1/tasks", params={"invoice_id": inv["id"]})["data"]
            return tasks[0] if tasks else None

        return found

    first = within(task_of(keep), 60, "the first invoice's call task")
    say(
        f"    {first['task_id']} {first['state']}: call {first['phone']} about {keep['number']}, "
        f"{first['balance']} {first['currency']}"
    )
    promised = (date.today() + timedelta(days=7)).isoformat()
    body = {
        "outcome": "promised_to_pay",
        "promised_amount": keep["amount_due"],
        "promised_date": promised,
        "note": "zahlt nächste Woche",
    }
    done = api.call("POST", "NOTIFIER_URL", f"/v1/tasks/{first['task_id']}/complete", body)
    say(f"    completed: {done['outcome']} {done['promised_amount']} EUR by {done['promised_date']} ({done['state']})")

    def promise() -> list | None:
        return api.call("GET", "INVOICE_INGEST_URL", f"/v1/invoices/{keep['id']}/promises")["data"] or None

    [made] = within(promise, 30, "the promise on the invoice")
    say(
        f"    {keep['number']} now has a {made['status']} promise of {made['amount']} "
        f"by {made['promised_date']}: its dunning pauses"
    )
    second = within(task_of(handed), 60, "the second invoice's call task")
    api.call("POST", "NOTIFIER_URL", f"/v1/tasks/{second['task_id']}/complete", {"outcome": "no_answer"})
    say(f"    {second['task_id']} about {handed['number']}: no answer")


def show_handoff(api: Api, hook: str, agency: dict, inv: dict, say: Say) -> None:
    request = within(lambda: api.received(hook), 90, "the case file at the agency's receiver")[0]
    case = verified(agency["secret"], request)
    data = case["data"]
    say(
        f"    {case.get('type')} webhook-id {request['headers'].get('webhook-id')}: "
        "signature verified (standardwebhooks)"
    )
    say(
        f"    case for {data['customer']['name']}: "
        + ", ".join(
            f"{i['number'] if 'number' in i else i['invoice_id']} balance {i['balance']}" for i in data["invoices"]
        )
    )
    status = within(
        lambda: api.call("GET", "INVOICE_INGEST_URL", f"/v1/invoices/{inv['id']}")["status"] == "with_agency",
        60,
        "with_agency",
    )
    say(f"    {inv['number']}: status {'with_agency' if status else '?'}")
    stages = [f"{s.get('stage')} {s.get('state', '')}".strip() for s in data.get("timeline", [])]
    say(f"    the case file's timeline: {', '.join(stages) or '(empty)'}")
    email = data["customer"]["email"]

    def notice() -> dict | None:
        got = messages_to(api.state["MAIL_API"], email, api.client)
        mine = [m for m in got if m["headers"].get("X-Dunning-Stage") == "handed_over"]
        return mine[0] if mine else None

    try:
        told = within(notice, 30, "the handed_over e-mail")
        say(f"    the customer is told: {told['subject']}")
    except NotAvailable as exc:
        say(f"    the customer's handed_over e-mail: not available: {exc}")
