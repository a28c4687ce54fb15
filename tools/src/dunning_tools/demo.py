"""`make demo`: a short story through the public APIs of a running `make run`.

A new tenant gets a demo policy (reminders seconds apart instead of days), three invoices are
issued, reminders arrive in the local SMTP server, one invoice is paid by a Stripe-signed webhook
and its remaining stages are cancelled in its timeline. Then a second tenant, on the built-in policy
(stages days around the due date), shows the changes an accounting system makes: a due date moved
(the pending stages re-planned, old and new times on the timeline), a stale write refused, a void,
a credit note that settles an invoice. Then the stops (`demo_stops`): a dispute pausing an invoice
and rejected, a payment plan's instalment reminders, a promise to pay broken. Then the policies
(`demo_policies`): one consolidated notice for a customer with several overdue invoices, an invoice
paid a moment before its notice left out of it, and a preview on a German calendar with a send window.
Then money in (`demo_money`): a bank statement imported and matched, the unmatched queue and a
manual allocation, a Stripe refund that reopens a paid invoice. Then every channel (`demo_channels`):
a German customer's e-mail, SMS, letter PDF, signed webhook, call task and agency hand-off.
`python -m dunning_tools.demo policies` (or `money`, `channels`) tells only that story.
"""

import asyncio
import json
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools import demo_channels, demo_money, demo_policies, demo_stops
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
    only = sys.argv[1:]
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
    client = httpx.Client(timeout=10)
    if only == ["policies"]:
        demo_policies.policies(client, state, say, wait)
        return
    if only == ["money"]:
        demo_money.money(client, state, say, wait)
        return
    if only == ["channels"]:
        demo_channels.channels(client, state, say, wait)
        return
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Co {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
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
    changes(client, state)
    demo_stops.stops(client, state, say, wait)
    demo_policies.policies(client, state, say, wait)
    demo_money.money(client, state, say, wait)
    demo_channels.channels(client, state, say, wait)
    say(f"\nRead the mail: {mail}/messages or the files in .run/mail/new/")


def changes(client: httpx.Client, state: dict) -> None:
    """Invoice changes on the built-in policy: a due date moves, an invoice is voided, one is credited."""
    ingest, recon = state["INVOICE_INGEST_URL"], state["RECONCILIATION_URL"]
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Changes {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    run = uuid.uuid4().hex[:6]
    say(f"\n6. tenant {tenant['tenant_id']} on the built-in policy: reminders 3 days before the due date, then after")
    issued = []
    for i, (name, currency, amount) in enumerate(
        (("Nordwind AG", "EUR", "640.00"), ("Blue Fjord AS", "EUR", "90.00"), ("Kestrel Ltd", "GBP", "410.00")), 1
    ):
        ext = f"CHG-{run}-{i}"
        body = invoice_body(
            ext,
            currency=currency,
            amount=amount,
            name=name,
            email=f"ap-chg-{run}-{i}@example.com",
            locale="en-GB",
            timezone="Europe/London",
            customer_external_id=f"CUST-CHG-{run}-{i}",
        )
        r = client.post(f"{ingest}/v1/invoices", json=body, headers=auth)
        r.raise_for_status()
        issued.append((r.json(), r.headers["etag"]))
        say(f"   issued {ext}: {amount} {currency}, due {body['due_date']} -> {r.json()['id']}")
    (moved, etag), (voided, _), (credited, _) = issued

    def detail(inv: dict) -> dict:
        return client.get(f"{ingest}/v1/invoices/{inv['id']}", headers=auth).json()

    wait(lambda: all(len(detail(inv)["timeline"]) == 5 for inv, _ in issued), 30, "the plans")
    new_due = (date.fromisoformat(moved["due_date"]) + timedelta(days=14)).isoformat()
    r = client.patch(
        f"{ingest}/v1/invoices/{moved['id']}", json={"due_date": new_due}, headers={**auth, "If-Match": etag}
    )
    r.raise_for_status()
    say(f"7. {moved['number']}: due date moved to {new_due} (If-Match {etag} -> ETag {r.headers['etag']})")
    stale = client.patch(
        f"{ingest}/v1/invoices/{moved['id']}", json={"due_date": moved["due_date"]}, headers={**auth, "If-Match": etag}
    )
    say(f"   the same write with the old ETag: {stale.status_code} {stale.json().get('title')}")

    def replanned() -> dict | None:
        now = detail(moved)
        return now if all(any(h.get("previous_scheduled_at") for h in s["history"]) for s in now["timeline"]) else None

    for s in wait(replanned, 30, "the re-planned stages")["timeline"]:
        h = [h for h in s["history"] if h.get("previous_scheduled_at")][-1]
        say(f"     {s['stage']:<12} {h['previous_scheduled_at']} -> {h['scheduled_at']}  ({h['reason']})")

    r = client.post(f"{ingest}/v1/invoices/{voided['id']}/void", json={"reason": "issued in error"}, headers=auth)
    r.raise_for_status()
    say(f"8. {voided['number']} voided: {r.json()['status']}")
    wait(lambda: {s["state"] for s in detail(voided)["timeline"]} == {"cancelled"}, 30, "the void's cancellations")
    for s in detail(voided)["timeline"]:
        say(f"     {s['stage']:<12} {s['scheduled_at']}  {s['state']} ({s['reason']})")

    note = {
        "invoice_id": credited["id"],
        "reference": f"CN-{run}",
        "amount": credited["amount_due"],
        "currency": credited["currency"],
        "reason": "goods returned",
    }
    r = client.post(f"{recon}/v1/credit-notes", json=note, headers=auth)
    r.raise_for_status()
    cn = r.json()
    say(
        f"9. credit note CN-{run} for {credited['number']}: applied {cn['amount_applied']}, "
        f"balance {cn['balance_remaining']}, settled {cn['settled']}"
    )
    wait(
        lambda: (
            detail(credited)["status"] == "paid" and "cancelled" in {s["state"] for s in detail(credited)["timeline"]}
        ),
        30,
        "the credit's cancellations",
    )
    now = detail(credited)
    say(
        f"   {now['number']}: status {now['status']}, balance {now['balance']}; stages "
        + ", ".join(f"{s['stage']} {s['state']} ({s['reason']})" for s in now["timeline"])
    )


if __name__ == "__main__":
    main()
