"""`make demo`, the policies (issue 10): one consolidated notice for a customer with several overdue
invoices, an invoice paid a moment before its notice went left out of it, and a preview of a policy
on a German working calendar with a send window (each stage's move in words).

The tenant's settings turn consolidation on; its policy has one stage (`soft`, 8 s after the
invoice is issued, with a 40.00 late fee in EUR and GBP), so the customer's invoices issued within a
second or two fire together: the first one's stage fires and pulls the others' stages of the day
into the same notice. The second customer's address is greylisted by the local SMTP server (its
first attempt is refused with a 451, as a provider's greylisting would): while the notifier waits to
retry, one of its invoices is paid; the retry sends the notice without it.
"""

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.stack.mailserver import greylisted, messages_to
from dunning_tools.testing.story import invoice_body

SOFT_AFTER = 8  # seconds after issue: the notice's stage
POLICY = {
    "anchor": "issued_at",
    "stages": [
        {"name": "soft", "offset": f"PT{SOFT_AFTER}S", "late_fee": {"EUR": "40.00", "GBP": "40.00"}},
        {"name": "final", "offset": "P30D"},  # not today: the notice has one stage of each invoice
    ],
}
SETTINGS = {"consolidation": {"enabled": True}}
OVERDUE = (  # currency, amount, days overdue
    ("EUR", "1250.00", 34),
    ("EUR", "310.40", 12),
    ("GBP", "820.00", 20),
    ("EUR", "95.00", 5),
)
PREVIEW = {
    "policy": {
        "id": "pol_de_b2b",
        "anchor": "due_date",
        "send_time": "07:30",  # before the window opens: each stage waits for it
        "days": "calendar",
        "non_working_day": "next",
        "interest": {"reference": "ecb_main_refinancing", "margin": "8.00", "fixing": "half_year"},
        "stages": [
            {"name": "pre_due", "offset": "-P3D", "template": "pre_due"},
            {"name": "soft", "offset": "P4D", "template": "soft", "late_fee": {"EUR": "40.00"}},  # 24 Dec: closed
            {"name": "firm", "offset": "P12D", "template": "firm", "charge_interest": True},  # 1 Jan: a holiday
            {"name": "final", "offset": "P20D", "template": "final", "charge_interest": True},
        ],
    },
    "settings": {
        "calendar": {
            "working_days": ["mon", "tue", "wed", "thu", "fri"],
            "holidays": "customer",
            "country": "DE",
            "subdivision": "BY",
            "closures": ["2026-12-24", "2026-12-31"],
        },
        "send_window": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:00",
            "end": "17:00",
            "spread": "PT1H",
        },
    },
    "invoices": [
        {
            "reference": "sample-christmas",
            "number": "INV-2026-1224",
            "currency": "EUR",
            "amount_due": "1200.00",
            "issue_date": "2026-11-20",
            "due_date": "2026-12-20",
            "customer": {"timezone": "Europe/Berlin", "locale": "de-DE", "country": "DE", "subdivision": "BY"},
        }
    ],
    "now": "2026-12-01T00:00:00Z",
}


def policies(client: httpx.Client, state: dict, say, wait) -> None:
    ingest, scheduler, recon, mail = (
        state["INVOICE_INGEST_URL"],
        state["SCHEDULER_URL"],
        state["RECONCILIATION_URL"],
        state["MAIL_API"],
    )
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Policies {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}", "Dunning-Actor": "demo"}

    def put(path: str, body: dict) -> dict:
        r = client.put(f"{scheduler}{path}", json=body, headers=auth)
        if r.status_code >= 300:
            raise SystemExit(f"demo: PUT {path} answered {r.status_code}: {r.text}")
        return r.json()

    put("/v1/settings", SETTINGS)
    put("/v1/policy", POLICY)
    say(
        f"\n15. tenant {tenant['tenant_id']}: consolidation on; one stage `soft` {SOFT_AFTER} s after issue "
        "(late fee 40.00 EUR/GBP)"
    )
    run = uuid.uuid4().hex[:6]

    def issue(customer: str, email: str, n: int, currency: str, amount: str, overdue: int) -> dict:
        body = invoice_body(
            f"POL-{run}-{customer[:3].upper()}-{n}",
            currency=currency,
            amount=amount,
            name=customer,
            email=email,
            locale="de-DE",
            timezone="Europe/Berlin",
            customer_external_id=f"CUST-POL-{run}-{customer[:3].upper()}",
        )
        body["issue_date"] = (date.today() - timedelta(days=overdue + 30)).isoformat()
        body["due_date"] = (date.today() - timedelta(days=overdue)).isoformat()
        r = client.post(f"{ingest}/v1/invoices", json=body, headers=auth)
        if r.status_code >= 300:
            raise SystemExit(f"demo: POST /v1/invoices answered {r.status_code}: {r.text}")
        return r.json()

    def detail(inv: dict) -> dict:
        return client.get(f"{ingest}/v1/invoices/{inv['id']}", headers=auth).json()

    def notice_lines(inv: dict) -> list[str]:
        return [_entry(h) for h in detail(inv).get("history", []) if "ntc_" in json.dumps(h)]

    owner = f"ap-pol-{run}@example.com"
    invoices = [issue("Falke Maschinenbau GmbH", owner, i, *row) for i, row in enumerate(OVERDUE, 1)]
    for inv in invoices:
        say(f"    issued {inv['number']}: {inv['amount_due']} {inv['currency']}, due {inv['due_date']} (overdue)")
    payer = f"ap-pol-{run}+greylist@example.com"
    kept = issue("Reiher Logistik AG", payer, 1, "EUR", "480.00", 9)
    paid = issue("Reiher Logistik AG", payer, 2, "EUR", "150.00", 3)
    say(f"    and to a second customer (greylisted address): {kept['number']} 480.00 EUR, {paid['number']} 150.00 EUR")

    say(f"16. waiting for the notice to {owner} ...")
    [notice] = wait(lambda: messages_to(mail, owner, client) or None, 60, "the consolidated notice")
    say(f"    ONE email: «{notice['subject']}» ({len(messages_to(mail, owner, client))} in the inbox)")
    listed = [inv["number"] for inv in invoices if inv["number"] in notice["text"]]
    say(f"    it lists {len(listed)} invoices: {', '.join(listed)}")
    for line in notice["text"].strip().splitlines():
        say(f"      | {line}")
    wait(lambda: all(notice_lines(inv) for inv in invoices), 30, "the notice on each invoice's timeline")
    for inv in invoices:
        say(f"    {inv['number']} timeline: {notice_lines(inv)[-1]}")

    say(f"17. the second customer's notice was refused once (greylisted) — paying {paid['number']} meanwhile")
    wait(lambda: greylisted(mail, payer, client), 60, "the greylisted first attempt")
    r = client.post(
        f"{recon}/v1/payments",
        json={
            "invoice_id": paid["id"],
            "amount": "150.00",
            "currency": "EUR",
            "reference": f"PAY-{run}",
            "received_at": datetime.now(UTC).isoformat(),
        },
        headers=auth,
    )
    if r.status_code >= 300:
        raise SystemExit(f"demo: POST /v1/payments answered {r.status_code}: {r.text}")
    say(f"    payment acknowledged at {r.json().get('acknowledged_at', '?')}; the notifier retries in ~30 s ...")
    [second] = wait(lambda: messages_to(mail, payer, client) or None, 180, "the second customer's notice")
    say(
        f"    the notice went: «{second['subject']}»; lists {kept['number']}: {kept['number'] in second['text']}, "
        f"lists the paid {paid['number']}: {paid['number'] in second['text']}"
    )
    wait(lambda: notice_lines(paid), 30, "the paid invoice's notice entry")
    for line in notice_lines(paid):
        say(f"    {paid['number']} timeline: {line}")

    r = client.post(f"{scheduler}/v1/policy/preview", json=PREVIEW, headers=auth)
    if r.status_code >= 300:
        raise SystemExit(f"demo: POST /v1/policy/preview answered {r.status_code}: {r.text}")
    say(
        "18. preview (POST /v1/policy/preview, nothing stored): a policy for Bavaria (weekends, public holidays,"
        " closed 24 and 31 Dec), send_time 07:30, window Mon–Fri 08:00–17:00 spread over an hour"
    )
    for answer in r.json()["invoices"]:
        say(f"    {answer.get('reference')}: due 2026-12-20, policy {answer.get('policy_id')}")
        for s in answer["stages"]:
            moved = f"  moved: {s['moved']}" if s.get("moved") else ""
            fee = f"  fee {s['late_fee']}" if s.get("late_fee") not in (None, "0.00") else ""
            fee += f"  interest {s['interest']}" if s.get("interest") not in (None, "0.00") else ""
            say(f"      {s['stage']:<8} {s['state']:<9} {s.get('local_time') or '-':<26}{fee}{moved}")
            for d in s.get("deferred") or []:
                say(f"               deferred ({d['reason']}): {d['detail']}")


def _entry(h: dict) -> str:
    """One timeline entry as a line: when, what, and its words."""
    words = " ".join(
        f"{k}={v}" for k, v in h.items() if k not in ("at", "kind") and v not in (None, "", [], {}) and len(str(v)) < 80
    )
    return f"{h.get('at', '')}  {h.get('kind', '')}  {words}"
