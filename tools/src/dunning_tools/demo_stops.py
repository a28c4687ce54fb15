"""`make demo`, the stops: a dispute pausing an invoice (then rejected: dunning resumes, without a
burst), a promise to pay broken (the `promise_broken` email, then the owed stages) and a payment
plan's instalment reminders, through the public APIs of a running `make run`.

The promise is made `by` an instant a few seconds ahead ("by 17:00 on Friday", here: in 5 s), so
its deadline (that instant plus the policy's 5 s grace) passes within the demo: no waiting for a day
to end anywhere.
Instalment reminders are at the due date's `send_time` plus an offset: the demo's policy sets
`send_time` to the next whole minute, so that the first instalment's reminders come within seconds.
"""

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.stack.mailserver import messages_to
from dunning_tools.testing.story import invoice_body, seconds_policy

OFFSETS = (2, 10, 14, 18, 22)  # pre_due, soft, firm, final, collections: seconds after issue
PROMISE_IN = 5  # seconds: the promise is made `by` then (its deadline: that plus the 5 s grace)


def stops(client: httpx.Client, state: dict, say, wait) -> None:
    ingest, scheduler, mail = state["INVOICE_INGEST_URL"], state["SCHEDULER_URL"], state["MAIL_API"]
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Stops {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    now = time.time()
    minute = math.ceil((now + 45) / 60) * 60  # the instalment reminders' anchor (send_time, UTC)
    ahead = minute - now
    policy = {
        **seconds_policy(*OFFSETS),
        "send_time": datetime.fromtimestamp(minute, UTC).strftime("%H:%M"),
        "pauses": {"resume": "spaced", "promise_grace": "PT5S"},
        "payment_plans": {
            "grace": "PT5S",
            "reminders": [
                {"name": "instalment_pre_due", "offset": f"-PT{int(ahead - 30)}S"},
                {"name": "instalment_overdue", "offset": f"-PT{int(ahead - 36)}S"},
            ],
            "channels": ["email"],
        },
    }
    client.put(f"{scheduler}/v1/policy", json=policy, headers=auth).raise_for_status()
    say(f"\n10. tenant {tenant['tenant_id']}: stages at +{', +'.join(map(str, OFFSETS))} s, resume spaced")
    run = uuid.uuid4().hex[:6]

    def issue(n: int, name: str, zone: str = "Europe/London") -> dict:
        body = invoice_body(
            f"STOP-{run}-{n}",
            currency="EUR",
            amount="750.00",
            name=name,
            email=f"ap-stop-{run}-{n}@example.com",
            locale="en-GB",
            timezone=zone,
            customer_external_id=f"CUST-STOP-{run}-{n}",
        )
        r = client.post(f"{ingest}/v1/invoices", json=body, headers=auth)
        r.raise_for_status()
        return r.json()

    def inbox(inv: dict) -> list[str]:
        mails = sorted(messages_to(mail, inv["customer"]["email"], client), key=lambda m: m["received_at"])
        return [m["headers"].get("X-Dunning-Stage", "?") for m in mails]

    def history(inv: dict) -> list[dict]:
        return client.get(f"{ingest}/v1/invoices/{inv['id']}", headers=auth).json()["history"]

    def post(path: str, body: dict) -> dict:
        r = client.post(f"{ingest}{path}", json=body, headers=auth)
        if r.status_code >= 300:
            raise SystemExit(f"demo: POST {path} answered {r.status_code}: {r.text}")
        return r.json()

    disputed = issue(1, "Osprey Logistics")
    planned = issue(2, "Heron Foods", zone="UTC")
    wait(lambda: "pre_due" in inbox(disputed) and "pre_due" in inbox(planned), 30, "the first reminders")

    d = post(f"/v1/invoices/{disputed['id']}/disputes", {"reason": "Goods arrived damaged", "opened_by": "demo"})
    say(f"11. {disputed['number']} disputed at {d['acknowledged_at']}: {d['dispute_id']} {d['status']}")
    plan = post(
        f"/v1/invoices/{planned['id']}/payment-plans",
        {
            "instalments": [
                {"due_date": datetime.fromtimestamp(minute, UTC).date().isoformat(), "amount": "250.00"},
                {"due_date": (datetime.fromtimestamp(minute, UTC).date() + timedelta(days=30)).isoformat(),
                 "amount": "500.00"},
            ],
            "agreed_by": "demo",
        },
    )  # fmt: skip
    say(
        f"12. {planned['number']}: payment plan {plan['plan_id']} agreed: "
        + ", ".join(f"#{i['number']} {i['amount']} due {i['due_date']}" for i in plan["instalments"])
    )
    time.sleep(max(0.0, datetime.fromisoformat(disputed["created_at"]).timestamp() + OFFSETS[3] + 1 - time.time()))
    say(f"    while disputed, soft, firm and final fell due: its inbox has {inbox(disputed)}")
    r = post(
        f"/v1/invoices/{disputed['id']}/disputes/{d['dispute_id']}/resolve",
        {"outcome": "rejected", "note": "Photos show intact goods", "resolved_by": "demo"},
    )
    say(f"    dispute rejected at {r['resolved_at']}: dunning resumes, the next owed stage now, the rest spaced")
    wait(lambda: {"soft", "firm", "final"} <= set(inbox(disputed)), 60, "the owed stages after the dispute")
    for h in history(disputed):
        say(f"     {h['at']}  {h['kind']:<20} {h.get('reason') or ''}")
    say(f"    inbox of {disputed['number']}: {inbox(disputed)}")

    wait(lambda: any(s.startswith("instalment_1") for s in inbox(planned)), 90, "the first instalment's reminders")
    say(f"13. {planned['number']}'s inbox while the plan runs (its own stages wait): {inbox(planned)}")

    promised = issue(3, "Curlew Tools")  # its soft stage (+10 s) falls due while the promise pauses it
    wait(lambda: "pre_due" in inbox(promised), 30, "the promised invoice's first reminder")
    by = datetime.now(UTC) + timedelta(seconds=PROMISE_IN)
    p = post(
        f"/v1/invoices/{promised['id']}/promises",
        {"amount": "750.00", "by": by.isoformat(), "note": "Paying in a moment", "made_by": "demo"},
    )
    say(
        f"14. {promised['number']}: promise to pay 750.00 EUR by {p['due_by']} (on {p['promised_date']} in the "
        f"customer's zone; grace 5 s) -> {p['status']}; nobody pays"
    )
    wait(lambda: "promise_broken" in inbox(promised), PROMISE_IN + 60, "the promise_broken reminder")
    wait(lambda: {"soft", "firm"} <= set(inbox(promised)), 60, "the owed stages after the broken promise")
    [verdict] = client.get(f"{ingest}/v1/invoices/{promised['id']}/promises", headers=auth).json()["data"]
    say(
        f"    promise {verdict['status']} at its deadline {verdict['deadline']}, dunning resumed (the owed soft "
        f"stage spaced after the promise_broken reminder): inbox of {promised['number']}: {inbox(promised)}"
    )
