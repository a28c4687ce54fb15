"""`make demo`: a short story through the public APIs of a running `make run`.

A new tenant gets a demo policy (reminders seconds apart instead of days), three invoices are
issued, reminders arrive in the local SMTP server, one invoice is paid by a Stripe-signed webhook
and its remaining stages are cancelled in its timeline.
"""

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.stack.mailserver import messages_to
from dunning_tools.testing.story import invoice_body, post_stripe_webhook, seconds_policy, stripe_invoice_paid
from dunning_tools.testing.waits import wait_until

POLICY = seconds_policy(2, 4, 6, 40, 60)
CUSTOMERS = [
    ("Muster GmbH", "de-DE", "Europe/Berlin", "EUR", "1250.00"),
    ("Yamada Shoji KK", "ja-JP", "Asia/Tokyo", "JPY", "48000"),
    ("Acme Corp", "en-US", "America/New_York", "USD", "980.50"),
]


def say(text: str) -> None:
    print(text, flush=True)


def wait(predicate, timeout: float, what: str):
    try:
        return wait_until(predicate, timeout=timeout, interval=0.25, what=what)
    except AssertionError:
        raise SystemExit(f"demo: timed out waiting for {what} (is `make run` up? see .run/logs)") from None


def main() -> None:
    state_path = Path(".run/stack.json")
    if not state_path.exists():
        raise SystemExit("demo: start the system first with `make run` (in another terminal)")
    state = json.loads(state_path.read_text())
    ingest, scheduler, recon, mail = (
        state["INVOICE_INGEST_URL"],
        state["SCHEDULER_URL"],
        state["RECONCILIATION_URL"],
        state["MAIL_API"],
    )
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Co {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    client = httpx.Client(timeout=10)
    say(f"1. tenant {tenant['tenant_id']} with a demo policy: reminders at +2s, +4s, +6s, +40s, +60s")
    client.put(f"{scheduler}/v1/policy", json=POLICY, headers=auth).raise_for_status()

    run = uuid.uuid4().hex[:6]
    invoices = []
    for i, (name, locale, tz, currency, amount) in enumerate(CUSTOMERS, 1):
        ext = f"DEMO-{run}-{i}"
        body = invoice_body(
            ext,
            currency=currency,
            amount=amount,
            name=name,
            email=f"ap-{run}-{i}@example.com",
            locale=locale,
            timezone=tz,
            customer_external_id=f"CUST-{run}-{i}",
        )
        r = client.post(f"{ingest}/v1/invoices", json=body, headers={**auth, "Idempotency-Key": ext})
        r.raise_for_status()
        invoices.append(r.json())
        say(f"2. issued {ext}: {amount} {currency} to {name} -> {r.json()['id']}")

    def inbox(inv) -> list:
        return messages_to(mail, inv["customer"]["email"], client)

    say("3. waiting for reminders to reach the SMTP server ...")
    wait(lambda: all(len(inbox(inv)) >= 3 for inv in invoices), 60, "three reminders per invoice")
    for inv in invoices:
        for m in inbox(inv):
            say(f"   mail to {m['to']}: {m['subject']}")

    paid = invoices[1]
    payload = stripe_invoice_paid(
        f"evt_demo_{run}",
        f"in_demo_{run}",
        number=paid["number"],
        amount_paid=int(paid["amount_due"]),
        currency="jpy",
        invoice_id=paid["id"],
    )
    r = post_stripe_webhook(client, recon, tenant["tenant_id"], payload, tenant["webhook_secret"])
    say(f"4. Stripe says {paid['number']} is paid: webhook answered {r.status_code} {r.text}")
    r.raise_for_status()

    def timeline(inv) -> dict:
        return client.get(f"{ingest}/v1/invoices/{inv['id']}", headers=auth).json()

    wait(
        lambda: (
            timeline(paid)["status"] == "paid" and any(s["state"] == "cancelled" for s in timeline(paid)["timeline"])
        ),
        30,
        "the cancellation",
    )
    for inv in invoices:
        now = timeline(inv)
        say(f"5. {now['number']}: status {now['status']}, balance {now['balance']} {now['currency']}")
        for s in now["timeline"]:
            say(f"     {s['stage']:<12} {s['scheduled_at']}  {s['state']}")
    say(f"\nRead the mail: {mail}/messages or the files in .run/mail/new/")


if __name__ == "__main__":
    main()
