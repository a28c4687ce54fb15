"""`make demo`, money in (issue 11): a bank statement imported through `POST /v1/statements`, its
lines matched (references in the remittance, several invoices in one line, a short payment, an
over-payment whose excess becomes the customer's credit) or left in the unmatched queue with
suggestions; a person allocates the queued payment by hand; a Stripe refund reopens a paid invoice
and its next reminder goes out.

The statement is a CAMT.053 built here as a bank writes it (`dunning_tools.testing.statements`).
`python -m dunning_tools.demo money` tells only this story.
"""

import asyncio
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.stack.mailserver import messages_to
from dunning_tools.testing.money import StripeCharge, post_stripe
from dunning_tools.testing.statements import Line, camt053
from dunning_tools.testing.story import invoice_body, seconds_policy

POLICY = {**seconds_policy(3, 20, 40, 600, 900), "pauses": {"resume": "spaced"}}
PAYER = "DE02120300000000202051"


def money(client: httpx.Client, state: dict, say, wait) -> None:
    ingest, recon, mail = state["INVOICE_INGEST_URL"], state["RECONCILIATION_URL"], state["MAIL_API"]
    tenant = asyncio.run(create_tenant(state["DATABASE_URL"], f"Demo Money {time.strftime('%H%M%S')}"))
    auth = {"Authorization": f"Bearer {tenant['api_key']}", "Dunning-Actor": "demo"}
    run = uuid.uuid4().hex[:6]

    def call(method: str, url: str, **kwargs) -> dict:
        r = client.request(method, url, headers={**auth, **kwargs.pop("headers", {})}, **kwargs)
        if r.status_code >= 300:
            raise SystemExit(f"demo: {method} {url} answered {r.status_code}: {r.text}")
        return r.json()

    call("PUT", f"{state['SCHEDULER_URL']}/v1/policy", json=POLICY)
    say(f"\n19. tenant {tenant['tenant_id']}: money in. Invoices to five customers:")

    def issue(key: str, name: str, amount: str, due_days_ago: int) -> dict:
        body = invoice_body(
            f"MI-{run}-{key}",
            currency="EUR",
            amount=amount,
            name=name,
            email=f"ap-mi-{run}-{name.split()[0].lower()}@example.com",
            locale="en-GB",
            timezone="Europe/London",
            customer_external_id=f"CUST-MI-{run}-{name.split()[0]}",
        )
        body["issue_date"] = (date.today() - timedelta(days=due_days_ago + 30)).isoformat()
        body["due_date"] = (date.today() - timedelta(days=due_days_ago)).isoformat()
        inv = call("POST", f"{ingest}/v1/invoices", json=body)
        say(f"    {inv['number']}: {amount} EUR to {name}, due {body['due_date']}")
        return inv

    a1 = issue("1", "Amsel GmbH", "100.00", 40)
    a2 = issue("2", "Amsel GmbH", "250.00", 20)
    b1 = issue("3", "Bussard AG", "300.00", 25)
    c1 = issue("4", "Condor Ltd", "80.00", 30)
    c2 = issue("5", "Condor Ltd", "50.00", 10)
    d1 = issue("6", "Dohle Holding KG", "150.00", 15)
    refunded = issue("7", "Eule Software SE", "420.00", 5)
    invoices = [a1, a2, b1, c1, c2, d1, refunded]
    number = {inv["id"]: inv["number"] for inv in invoices}
    wait(lambda: _known(state, invoices), 30, "reconciliation to know the invoices")

    lines = [
        Line(Decimal("340.00"), f"{a1['number']} {a2['number']} less credit", "AMSEL GMBH", "DE75512108001245126199"),
        Line(Decimal("120.00"), f"Payment {b1['number']} part 1", "Bussard AG", "DE02500105170137075030"),
        Line(Decimal("100.00"), f"Invoice {c1['number']}", "Condor Ltd", "DE89370400440532013000"),
        Line(Decimal("77.70"), "Sammelueberweisung Dezember", "DOHLE KG", PAYER),
        Line(Decimal("15.00"), "Kontofuehrung", debit=True),
    ]
    document = camt053(lines, statement_id=f"DEMO-{run}")
    say(f"20. a CAMT.053 statement of {len(lines)} lines ({len(document)} bytes) -> POST /v1/statements")
    r = client.post(f"{recon}/v1/statements", content=document, headers={**auth, "Content-Type": "application/xml"})
    if r.status_code >= 300:
        raise SystemExit(f"demo: POST /v1/statements answered {r.status_code}: {r.text}")
    summary = r.json()
    say(
        "    "
        + ", ".join(
            f"{k} {summary[k]}" for k in ("lines", "credits", "matched", "unmatched", "skipped") if k in summary
        )
    )
    for p in call("GET", f"{recon}/v1/payments", params={"source": "bank_statement"})["data"]:
        say(f"    {p['amount']} {p['currency']} from {p.get('payer_name') or '?'}: {p['status']}")
        for a in p.get("allocations", []):
            say(f"      -> {number.get(a['invoice_id'])} {a['amount']} ({a.get('rule')}: {a.get('reason')})")
        if p.get("credit"):
            say(f"      credit {p['credit'].get('amount')}, left {p['credit'].get('remaining')}")
    again = client.post(f"{recon}/v1/statements", content=document, headers={**auth, "Content-Type": "application/xml"})
    say(f"    the same file again: {again.status_code}, duplicate {again.json().get('duplicate')}")

    queue = call("GET", f"{recon}/v1/payments", params={"status": "unmatched"})["data"]
    say(f"21. the unmatched queue (GET /v1/payments?status=unmatched): {len(queue)} payment(s)")
    for p in queue:
        say(f"    {p['payment_id']}: {p['amount']} {p['currency']} from {p.get('payer_name')}, «{p.get('remittance')}»")
        for s in p.get("suggestions") or []:
            say(f"      suggested: {s.get('number')} balance {s.get('balance')} ({s.get('why')})")
    if queue:
        body = {"allocations": [{"invoice_id": d1["id"], "amount": queue[0]["amount"]}], "reason": "called Dohle"}
        done = call("POST", f"{recon}/v1/payments/{queue[0]['payment_id']}/allocations", json=body)
        say(f"    allocated by hand to {d1['number']}: status {done['status']}; the payer's account is remembered")
        second = camt053([Line(Decimal("72.30"), "", "DOHLE KG", PAYER)], statement_id=f"DEMO-{run}-2")
        r = client.post(f"{recon}/v1/statements", content=second, headers={**auth, "Content-Type": "application/xml"})
        if r.status_code >= 300:
            raise SystemExit(f"demo: POST /v1/statements answered {r.status_code}: {r.text}")
        [later] = [
            p
            for p in call("GET", f"{recon}/v1/payments", params={"source": "bank_statement"})["data"]
            if p["amount"] == "72.30"
        ]
        for a in later.get("allocations", []):
            say(
                f"    the same payer's next transfer, 72.30 with no reference -> {number.get(a['invoice_id'])}"
                f" ({a.get('rule')}: {a.get('reason')})"
            )

    def balance(inv: dict) -> dict:
        return call("GET", f"{ingest}/v1/invoices/{inv['id']}")

    wait(lambda: Decimal(balance(c2)["balance"]) == Decimal("30.00"), 30, "the invoice views")
    say("    the invoices now (GET /v1/invoices/{id}):")
    for inv in invoices[:-1]:
        now = balance(inv)
        say(f"    {now['number']}: status {now['status']}, balance {now['balance']} {now['currency']}")

    email = refunded["customer"]["email"]
    wait(lambda: messages_to(mail, email, client) or None, 30, "the first reminder of the invoice to refund")
    charge = StripeCharge(refunded)
    r = post_stripe(client, recon, tenant["tenant_id"], charge.invoice_paid(), tenant["webhook_secret"])
    say(f"22. Stripe: {refunded['number']} paid by card (invoice.paid): {r.status_code}")
    wait(lambda: balance(refunded)["status"] == "paid", 30, "the payment")
    r = post_stripe(client, recon, tenant["tenant_id"], charge.charge_refunded(15000), tenant["webhook_secret"])
    say(f"    Stripe: 150.00 refunded (charge.refunded): {r.status_code}")
    now = wait(lambda: (v := balance(refunded))["status"] == "open" and v, 30, "the reopen")
    say(f"    {now['number']}: reopened, status {now['status']}, balance {now['balance']} EUR")
    soft = wait(
        lambda: [m for m in messages_to(mail, email, client) if m["headers"].get("X-Dunning-Stage") == "soft"] or None,
        60,
        "the next reminder after the reopen",
    )
    say(f"    the next reminder went: «{soft[0]['subject']}»")
    for h in balance(refunded).get("history", [])[-6:]:
        say(f"      {h.get('at', '')}  {h.get('kind', '')}  {h.get('reason') or h.get('detail') or ''}")


def _known(state: dict, invoices: list[dict]) -> bool:
    """Reconciliation consumed the invoices (the statement is matched against those it knows)."""

    async def count() -> int:
        conn = await asyncpg.connect(state["DATABASE_URL"])
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM reconciliation.invoices WHERE invoice_id = any($1::text[])",
                [i["id"] for i in invoices],
            )
        finally:
            await conn.close()

    return asyncio.run(count()) == len(invoices)
