"""End to end: opt-outs, bounces and replies, through the services' public APIs, SMTP and the mail
a customer actually receives.

- the one-click URL taken from the List-Unsubscribe header of a received reminder is POSTed
  (RFC 8058): the next stage is not e-mailed; it goes by SMS if the SMS channel is there, else the
  e-mail delivery fails (`opted_out`, or `no_allowed_channel` when no channel is left);
- a `+bounce` address: the dev mail server accepts the reminder, then sends a real RFC 3464 DSN to
  the notifier's inbound SMTP endpoint: the delivery reads `bounced` and the address invalid;
- a reply sent by SMTP to the inbound endpoint appears on the invoice's history and, the tenant
  having asked for it, pauses dunning (a hold `customer_replied`): the next stage is not sent.
"""

import asyncio
import email
import email.policy
import mailbox
import re
import time
import uuid
from datetime import date, timedelta
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from dunning_notifier.channels import PROVIDERS
from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.system import Stack
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e
SOFT_AT, FIRM_AT = 2, 20  # seconds after issue: room for the opt-out or reply between the two


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


class Tenant:
    def __init__(self, stack: Stack, preferences: dict):
        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        tenant = asyncio.run(create_tenant(stack.database_url, f"Opt-outs {self.run}"))
        self.auth = {"Authorization": f"Bearer {tenant['api_key']}"}
        policy = {
            "anchor": "issued_at",
            "stages": [{"name": "soft", "offset": f"PT{SOFT_AT}S"}, {"name": "firm", "offset": f"PT{FIRM_AT}S"}],
        }
        r = httpx.put(f"{stack.url('scheduler')}/v1/policy", json=policy, headers=self.auth)
        assert r.status_code == 200, r.text
        r = httpx.put(f"{self.notifier}/v1/channel-preferences", json=preferences, headers=self.auth)
        assert r.status_code == 200, r.text

    @property
    def notifier(self) -> str:
        return self.stack.url("notifier")

    def invoice(self, address: str) -> str:
        run = uuid.uuid4().hex[:8]
        body = {
            "external_id": f"O-{run}",
            "number": f"O-{run}",
            "currency": "EUR",
            "amount_due": "420.00",
            "issue_date": date.today().isoformat(),
            "due_date": (date.today() + timedelta(days=14)).isoformat(),
            "payment_url": f"https://pay.example.com/O-{run}",
            "customer": {
                "external_id": f"C-{run}",
                "name": f"Customer {run}",
                "email": address,
                "phone": "+4930123456",
                "locale": "en-GB",
                "timezone": "Europe/London",
            },
        }
        r = httpx.post(f"{self.stack.url('invoice-ingest')}/v1/invoices", json=body, headers=self.auth)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def deliveries(self, invoice_id: str) -> list[dict]:
        r = httpx.get(f"{self.notifier}/v1/deliveries", params={"invoice_id": invoice_id}, headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def delivery(self, invoice_id: str, stage: str, channel: str = "email", states=("sent", "failed")) -> dict:
        def found() -> dict | None:
            return next(
                (
                    d
                    for d in self.deliveries(invoice_id)
                    if d["stage"] == stage and d["channel"] == channel and d["state"] in states
                ),
                None,
            )

        return wait_until(found, timeout=90, interval=0.5, what=f"{stage} by {channel} in {states}")


def received(stack: Stack, address: str) -> list[email.message.EmailMessage]:
    """The messages the dev mail server stored for `address`, as the customer would read them."""
    box = mailbox.Maildir(stack.workdir / "mail", create=False)
    out = []
    for item in messages_to(f"http://127.0.0.1:{stack.ports.mail_api}", address):
        out.append(email.message_from_bytes(box.get_bytes(item["id"]), policy=email.policy.default))
    return out


def test_one_click_from_a_received_reminder_stops_the_next_email(stack):
    tenant = Tenant(stack, {"fallback": ["email", "sms"]})
    address = f"ap-{tenant.run}@example.com"
    invoice_id = tenant.invoice(address)
    soft = tenant.delivery(invoice_id, "soft")
    assert soft["state"] == "sent", soft

    [mail] = wait_until(lambda: received(stack, address) or None, timeout=30, what="the soft reminder")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https?://[^>]+/v1/unsubscribe/[^>]+)>", str(mail["List-Unsubscribe"])).group(1)
    assert url.startswith(tenant.notifier)
    page = httpx.get(url)  # what a link scanner does: nothing changes
    assert page.status_code == 200 and "Unsubscribe" in page.text
    r = httpx.post(url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert r.status_code == 200, r.text

    firm = tenant.delivery(invoice_id, "firm")
    assert len(received(stack, address)) == 1  # the soft reminder only
    if "sms" not in PROVIDERS:  # no SMS channel: nothing left to take the stage
        assert (firm["state"], firm["last_error_code"]) == ("failed", "no_allowed_channel"), firm
        return
    assert (firm["state"], firm["last_error_code"]) == ("failed", "opted_out"), firm
    sms = tenant.delivery(invoice_id, "firm", channel="sms")  # the stage went by SMS, once
    assert sms["state"] == "sent" and sms["fallback_of"] == firm["delivery_id"], sms
    assert sms["recipient"] == "+4930123456"
    assert [d["channel"] for d in tenant.deliveries(invoice_id) if d["stage"] == "firm"].count("sms") == 1


def test_a_bounce_reported_by_dsn_makes_the_address_invalid(stack):
    tenant = Tenant(stack, {"fallback": ["email"]})
    address = f"ap-{tenant.run}+bounce@example.com"
    invoice_id = tenant.invoice(address)
    soft = tenant.delivery(invoice_id, "soft")
    assert soft["state"] == "sent", soft

    def bounced() -> dict | None:
        [d] = [d for d in tenant.deliveries(invoice_id) if d["delivery_id"] == soft["delivery_id"]]
        return d if d["provider_status"] == "bounced" else None

    wait_until(bounced, timeout=30, interval=0.5, what="the DSN to mark the delivery bounced")
    customer_id = httpx.get(f"{stack.url('invoice-ingest')}/v1/invoices/{invoice_id}", headers=tenant.auth).json()[
        "customer"
    ]["id"]
    prefs = httpx.get(f"{tenant.notifier}/v1/customers/{customer_id}/contact-preferences", headers=tenant.auth)
    [block] = prefs.json()["channels"]["email"]
    assert (block["kind"], block["reason"], block["address"]) == ("invalid", "dsn_5.1.1", address.lower())

    firm = tenant.delivery(invoice_id, "firm")
    assert (firm["state"], firm["last_error_code"]) == ("failed", "no_allowed_channel")


def test_a_reply_shows_on_the_timeline_and_pauses_dunning(stack):
    tenant = Tenant(stack, {"fallback": ["email"], "pause_on_reply": True, "pause_days": 7})
    address = f"ap-{tenant.run}@example.com"
    invoice_id = tenant.invoice(address)
    soft = tenant.delivery(invoice_id, "soft")
    [mail] = wait_until(lambda: received(stack, address) or None, timeout=30, what="the soft reminder")

    reply = EmailMessage()
    reply["From"] = f"Accounts Payable <{address}>"
    reply["To"] = str(mail["Reply-To"])
    reply["Subject"] = f"Re: {mail['Subject']}"
    reply["Message-ID"] = f"<reply-{tenant.run}@example.com>"
    reply["In-Reply-To"] = str(mail["Message-ID"])
    reply.set_content("We paid this yesterday, please check your account.")
    asyncio.run(
        aiosmtplib.send(
            reply,
            sender=address,
            recipients=[str(mail["Reply-To"])],
            hostname="127.0.0.1",
            port=stack.ports.inbound_smtp,
        )
    )

    ingest = stack.url("invoice-ingest")

    def replied() -> dict | None:
        history = httpx.get(f"{ingest}/v1/invoices/{invoice_id}", headers=tenant.auth).json()["history"]
        return next((e for e in history if e["kind"] == "customer_replied"), None)

    entry = wait_until(replied, timeout=30, interval=0.5, what="the reply on the invoice's history")
    assert entry["data"]["delivery_id"] == soft["delivery_id"]
    assert entry["data"]["excerpt"].startswith("We paid this yesterday")
    listed = httpx.get(f"{tenant.notifier}/v1/replies", params={"invoice_id": invoice_id}, headers=tenant.auth)
    assert [r["from_address"] for r in listed.json()["data"]] == [address]

    def held() -> list | None:
        r = httpx.get(f"{ingest}/v1/holds", params={"invoice_id": invoice_id}, headers=tenant.auth)
        return [h for h in r.json()["data"] if h["reason"] == "customer_replied"] or None

    [hold] = wait_until(held, timeout=30, interval=0.5, what="the hold a reply places")
    assert hold["status"] == "active"
    rate = httpx.get(f"{tenant.notifier}/v1/response-rate", headers=tenant.auth).json()
    assert (rate["sent"], rate["replied"]) == (1, 1)

    # The firm stage falls due while the hold is in force: nothing is sent.
    time.sleep(FIRM_AT + 3 - SOFT_AT)
    assert len(received(stack, address)) == 1
    assert [d["stage"] for d in tenant.deliveries(invoice_id) if d["state"] == "sent"] == ["soft"]
