"""End to end, issue 11's money in: the four services as processes, driven through their public APIs,
asserting what reconciliation's payments, the invoice view and the SMTP server show.

- A CAMT.053 bank statement (built here as a bank writes one: `dunning_tools.testing.statements`)
  with a remittance naming two invoices and short of their sum, a short payment, an over-payment
  (its excess a customer credit, applied to the customer's next open invoice), a line with no
  reference (the unmatched queue, with suggestions) and a debit (skipped): the allocations and the
  invoice views agree; the same file again changes nothing. An MT940 the same way.
- A manual allocation from the queue, then the same payer's next payment (no reference, the exact
  amount of one of the customer's open invoices) matched automatically by its bank account.
- A Stripe invoice.paid settles an invoice; a signed charge.refunded reopens it, its next stage is
  sent, and no stage twice.
- GoCardless and Standard Webhooks signed events accepted; forged, stale and replayed ones refused
  or without effect.
- A debit processing (Stripe payment_intent.processing) pauses dunning without settling; its failure
  resumes it.
"""

import asyncio
import json
import time
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest

from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.system import Stack
from dunning_tools.testing.money import (
    StripeCharge,
    gocardless_body,
    gocardless_payment_event,
    gocardless_signature,
    post_gocardless,
    post_standard,
    post_stripe,
    standard_event,
    standard_headers,
)
from dunning_tools.testing.statements import Line, camt053, mt940
from dunning_tools.testing.story import invoice_body, seconds_policy
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

PAYER_IBAN = "DE02120300000000202051"  # the payers' accounts: valid example IBANs
OTHER_IBAN = "DE02500105170137075030"
UNKNOWN_IBAN = "DE12500105170648489890"


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


class Tenant:
    """A tenant of its own, its API calls, its invoices (far from their stages unless a policy says)."""

    def __init__(self, stack: Stack, policy: dict | None = None):
        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        self.tenant = asyncio.run(create_tenant(stack.database_url, f"Money {self.run}"))
        self.id = self.tenant["tenant_id"]
        self.auth = {"Authorization": f"Bearer {self.tenant['api_key']}", "Dunning-Actor": "e2e"}
        self.client = httpx.Client(timeout=30)
        if policy is not None:
            self.call("PUT", "scheduler", "/v1/policy", policy)

    def call(self, method: str, service: str, path: str, body=None, ok=(200, 201), **kwargs) -> dict:
        r = self.client.request(method, f"{self.stack.url(service)}{path}", json=body, headers=self.auth, **kwargs)
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def invoice(self, key: str, amount: str, customer: str, *, due_days_ago: int = 20, name: str = "") -> dict:
        body = invoice_body(
            f"M-{self.run}-{key}",
            currency="EUR",
            amount=amount,
            name=name or f"Customer {customer} {self.run}",
            email=f"ap-{self.run}-{customer}@example.com",
            locale="en-GB",
            timezone="UTC",
            customer_external_id=f"C-{self.run}-{customer}",
        )
        body["issue_date"] = (date.today() - timedelta(days=due_days_ago + 30)).isoformat()
        body["due_date"] = (date.today() - timedelta(days=due_days_ago)).isoformat()
        return self.call("POST", "invoice-ingest", "/v1/invoices", body)

    def known_to_reconciliation(self, *invoices: dict) -> None:
        """Wait until reconciliation consumed these invoices (a statement's lines are matched against
        the invoices it knows; a readiness wait, not an assertion)."""

        async def count() -> int:
            conn = await asyncpg.connect(self.stack.database_url)
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM reconciliation.invoices WHERE invoice_id = any($1::text[])",
                    [i["id"] for i in invoices],
                )
            finally:
                await conn.close()

        wait_until(lambda: asyncio.run(count()) == len(invoices), timeout=30, interval=0.2, what="reconciliation")

    def upload(self, data: bytes, content_type: str, **params) -> httpx.Response:
        return self.client.post(
            f"{self.stack.url('reconciliation')}/v1/statements",
            content=data,
            params=params,
            headers={**self.auth, "Content-Type": content_type},
        )

    def payments(self, **params) -> list[dict]:
        return self.call("GET", "reconciliation", "/v1/payments", params={"limit": 500, **params})["data"]

    def view(self, invoice: dict) -> dict:
        return self.call("GET", "invoice-ingest", f"/v1/invoices/{invoice['id']}")

    def balances_settle(self, expected: dict[str, str], timeout: float = 30) -> dict[str, dict]:
        """Wait until the invoice view shows each invoice's expected balance (events consumed)."""

        def views() -> dict[str, dict] | None:
            got = {i: self.call("GET", "invoice-ingest", f"/v1/invoices/{i}") for i in expected}
            ok = all(Decimal(got[i]["balance"]) == Decimal(b) for i, b in expected.items())
            return got if ok else None

        try:
            return wait_until(views, timeout=timeout, interval=0.3, what="the invoice views' balances")
        except AssertionError:
            now = {i: self.call("GET", "invoice-ingest", f"/v1/invoices/{i}")["balance"] for i in expected}
            raise AssertionError(f"invoice view balances {now}, expected {expected}") from None

    def mails(self, email: str) -> list[dict]:
        return sorted(messages_to(self.stack.mail_api, email), key=lambda m: m["received_at"])


def allocations_of(payment: dict) -> dict[str, Decimal]:
    """Invoice id -> amount, of the payment's allocations still in force."""
    return {
        a["invoice_id"]: Decimal(a["amount"]) for a in payment.get("allocations", []) if not a.get("unallocated_at")
    }


def by_reference(payments: list[dict], text: str) -> dict:
    [p] = [p for p in payments if text in json.dumps(p)]
    return p


def words(view: dict) -> str:
    return json.dumps(view).lower()


# -- statements ---------------------------------------------------------------------------------------


def statement_story(t: Tenant) -> tuple[dict, list]:
    """Invoices and the credit lines that pay them (the same story for CAMT.053 and MT940)."""
    inv = {
        "a1": t.invoice("a1", "100.00", "amsel", due_days_ago=40, name=f"Amsel GmbH {t.run}"),
        "a2": t.invoice("a2", "250.00", "amsel", due_days_ago=20, name=f"Amsel GmbH {t.run}"),
        "b1": t.invoice("b1", "300.00", "bussard", name=f"Bussard AG {t.run}"),
        "c1": t.invoice("c1", "80.00", "condor", due_days_ago=30, name=f"Condor Ltd {t.run}"),
        "c2": t.invoice("c2", "50.00", "condor", due_days_ago=10, name=f"Condor Ltd {t.run}"),
    }
    t.known_to_reconciliation(*inv.values())
    lines = [
        # two invoices named, short of their sum: the older one settled, the other short by 10.00
        Line(Decimal("340.00"), f"{inv['a1']['number']} {inv['a2']['number']} less credit", "AMSEL GMBH", PAYER_IBAN),
        Line(Decimal("120.00"), f"Payment {inv['b1']['number']} part 1", "Bussard AG", OTHER_IBAN),  # short
        # over-payment: 20.00 excess, a customer credit applied to the customer's next open invoice
        Line(Decimal("100.00"), f"Invoice {inv['c1']['number']}", "Condor Ltd", "DE75512108001245126199"),
        Line(Decimal("77.70"), "Sammelueberweisung Dezember", "Dohle KG", UNKNOWN_IBAN),  # no reference
        Line(Decimal("15.00"), "Bank charges", debit=True),  # a debit: skipped
    ]
    return inv, lines


def check_statement_story(t: Tenant, inv: dict, summary: dict) -> None:
    assert summary.get("duplicate") in (None, False), summary
    payments = t.payments(source="bank_statement")
    assert len(payments) == 4, [p.get("remittance") for p in payments]
    two = by_reference(payments, inv["a1"]["number"])
    assert allocations_of(two) == {inv["a1"]["id"]: Decimal("100.00"), inv["a2"]["id"]: Decimal("240.00")}, two
    assert all(a.get("rule") == "reference" for a in two["allocations"]), two["allocations"]
    short = by_reference(payments, inv["b1"]["number"])
    assert allocations_of(short) == {inv["b1"]["id"]: Decimal("120.00")}, short
    over = by_reference(payments, inv["c1"]["number"])
    assert allocations_of(over) == {inv["c1"]["id"]: Decimal("80.00")}, over
    credit = over.get("credit") or {}  # the excess, a customer credit (shown on the payment)
    assert Decimal(credit.get("amount") or over.get("credited_amount") or "0") == Decimal("20.00"), over
    unmatched = by_reference(payments, "Dohle KG")
    assert unmatched["status"] == "unmatched" and not allocations_of(unmatched), unmatched
    queue = t.payments(status="unmatched")
    assert unmatched["payment_id"] in {p["payment_id"] for p in queue}, queue
    assert all(p["status"] == "unmatched" for p in queue), queue
    assert "suggestions" in by_reference(queue, "Dohle KG"), queue

    views = t.balances_settle(
        {
            inv["a1"]["id"]: "0.00",
            inv["a2"]["id"]: "10.00",
            inv["b1"]["id"]: "180.00",
            inv["c1"]["id"]: "0.00",
            inv["c2"]["id"]: "30.00",  # 20.00 of the customer's credit applied
        }
    )
    assert views[inv["a1"]["id"]]["status"] == "paid" and views[inv["c1"]["id"]]["status"] == "paid"
    assert views[inv["a2"]["id"]]["status"] == "open" and views[inv["b1"]["id"]]["status"] == "open"
    assert "credit" in words(views[inv["c2"]["id"]]), views[inv["c2"]["id"]]  # the credit is shown


def test_a_camt053_statement_is_matched_and_importing_it_again_changes_nothing(stack):
    t = Tenant(stack)
    inv, lines = statement_story(t)
    document = camt053(lines, statement_id=f"STMT-{t.run}-1")
    r = t.upload(document, "application/xml")
    assert r.status_code == 201, r.text
    check_statement_story(t, inv, r.json())

    before = (t.payments(), {i["id"]: t.view(i)["balance"] for i in inv.values()})
    again = t.upload(document, "application/xml")
    assert again.status_code == 200 and again.json().get("duplicate") is True, again.text
    time.sleep(2)  # anything a second import had published would have been consumed
    assert (t.payments(), {i["id"]: t.view(i)["balance"] for i in inv.values()}) == before


def test_an_mt940_statement_is_matched_the_same_way(stack):
    t = Tenant(stack)
    inv, lines = statement_story(t)
    document = mt940(lines, statement_id=f"M{t.run}")
    r = t.upload(document, "text/plain", format="mt940")
    assert r.status_code == 201, r.text
    check_statement_story(t, inv, r.json())
    again = t.upload(document, "text/plain", format="mt940")
    assert again.status_code == 200 and again.json().get("duplicate") is True, again.text


def test_a_statement_with_bad_input_is_refused_whole_naming_the_element(stack):
    t = Tenant(stack)
    good = camt053([Line(Decimal("10.00"), "x", "Payer", PAYER_IBAN)], statement_id=f"BAD-{t.run}")
    bad = good.replace(b">10.00<", b">10.001<", 1)
    r = t.upload(bad, "application/xml")
    assert r.status_code == 422, r.text
    assert "amt" in r.text.lower(), r.text
    assert t.payments(source="bank_statement") == []


def test_a_manual_allocation_from_the_queue_then_the_same_payer_matches_by_its_account(stack):
    t = Tenant(stack)
    holding = f"Dohle Holding KG {t.run}"  # the payer's name on the bank line differs from the customer's
    first = t.invoice("d1", "150.00", "dohle", due_days_ago=30, name=holding)
    second = t.invoice("d2", "64.20", "dohle", due_days_ago=10, name=holding)
    t.known_to_reconciliation(first, second)
    r = t.upload(
        camt053([Line(Decimal("77.70"), "Dezember", "DOHLE KG", UNKNOWN_IBAN)], statement_id=f"Q-{t.run}-1"),
        "application/xml",
    )
    assert r.status_code == 201, r.text
    [queued] = t.payments(status="unmatched")
    # a bad allocation is refused naming the field, nothing changed
    r = t.client.post(
        f"{stack.url('reconciliation')}/v1/payments/{queued['payment_id']}/allocations",
        json={"allocations": [{"invoice_id": first["id"], "amount": "1.001"}], "reason": "x"},
        headers=t.auth,
    )
    assert r.status_code == 422 and "allocations[0].amount" in r.text, r.text

    body = {"allocations": [{"invoice_id": first["id"], "amount": "77.70"}], "reason": "called the customer"}
    paid = t.call("POST", "reconciliation", f"/v1/payments/{queued['payment_id']}/allocations", body)
    assert allocations_of(paid) == {first["id"]: Decimal("77.70")}, paid
    assert [a.get("rule") for a in paid["allocations"]] == ["manual"], paid
    assert t.payments(status="unmatched") == []
    t.balances_settle({first["id"]: "72.30"})

    # the same payer's next payment, no reference, the exact open amount of its other invoice
    r = t.upload(
        camt053([Line(Decimal("64.20"), "", "DOHLE KG", UNKNOWN_IBAN)], statement_id=f"Q-{t.run}-2"), "application/xml"
    )
    assert r.status_code == 201, r.text
    auto = [p for p in t.payments(source="bank_statement") if p["payment_id"] != queued["payment_id"]]
    assert [allocations_of(p) for p in auto] == [{second["id"]: Decimal("64.20")}], auto
    assert auto[0]["allocations"][0].get("rule") == "payer_account_amount", auto
    t.balances_settle({first["id"]: "72.30", second["id"]: "0.00"})

    # undone: the manual allocation's money is back in the queue, the invoice's balance back
    alloc = paid["allocations"][0]["allocation_id"]
    undone = t.call("DELETE", "reconciliation", f"/v1/payments/{queued['payment_id']}/allocations/{alloc}")
    assert allocations_of(undone) == {}, undone
    assert [p["payment_id"] for p in t.payments(status="unmatched")] == [queued["payment_id"]]
    t.balances_settle({first["id"]: "150.00", second["id"]: "0.00"})


# -- Stripe: a refund reopens ---------------------------------------------------------------------------


def test_a_refund_reopens_a_paid_invoice_and_its_next_stage_is_sent(stack):
    policy = {**seconds_policy(2, 14, 40, 60, 80), "pauses": {"resume": "spaced"}}
    t = Tenant(stack, policy)
    email = f"ap-{t.run}-refund@example.com"
    body = invoice_body(
        f"R-{t.run}",
        currency="EUR",
        amount="420.00",
        name="Refund Ltd",
        email=email,
        locale="en-GB",
        timezone="UTC",
        customer_external_id=f"C-{t.run}-r",
    )
    invoice = t.call("POST", "invoice-ingest", "/v1/invoices", body)
    wait_until(lambda: t.mails(email), timeout=30, interval=0.2, what="pre_due")
    charge = StripeCharge(invoice)
    url, secret = stack.url("reconciliation"), t.tenant["webhook_secret"]
    r = post_stripe(t.client, url, t.id, charge.invoice_paid(), secret)
    assert r.status_code == 200, r.text
    settled = t.balances_settle({invoice["id"]: "0.00"})[invoice["id"]]
    assert settled["status"] == "paid"

    def timers_of() -> list[dict]:
        return t.call("GET", "scheduler", f"/v1/invoices/{invoice['id']}/timers")["timers"]

    def timers() -> dict[str, str]:
        return {x["stage"]: x["state"] for x in timers_of()}

    wait_until(lambda: timers().get("soft") == "cancelled", timeout=20, what="soft cancelled by the payment")

    forged = post_stripe(t.client, url, t.id, charge.charge_refunded(12000), "whsec_forged")
    assert forged.status_code == 400, forged.text
    charge.refunded, charge.refunds = 0, []
    refund = charge.charge_refunded(12000)  # 120.00 of 420.00 back
    r = post_stripe(t.client, url, t.id, refund, secret)
    assert r.status_code == 200, r.text
    reopened = t.balances_settle({invoice["id"]: "120.00"})[invoice["id"]]
    assert reopened["status"] == "open", reopened
    assert "refund" in words(reopened), reopened
    replay = post_stripe(t.client, url, t.id, refund, secret)  # the same event again: no second reversal
    assert replay.status_code == 200, replay.text

    try:
        soft = wait_until(
            lambda: [m for m in t.mails(email) if m["headers"]["X-Dunning-Stage"] == "soft"],
            timeout=60,
            interval=0.3,
            what="the next stage after the reopen",
        )
    except AssertionError:
        raise AssertionError(
            f"no soft after the reopen: timers {timers_of()}, history {t.view(invoice)['history']}"
        ) from None
    assert len(soft) == 1
    time.sleep(3)
    stages = [m["headers"]["X-Dunning-Stage"] for m in t.mails(email)]
    assert stages.count("pre_due") == 1 and stages.count("soft") == 1, stages
    assert Decimal(t.view(invoice)["balance"]) == Decimal("120.00")
    assert "reopen" in words(t.view(invoice)), "the timeline says why dunning resumed"


# -- GoCardless and Standard Webhooks -----------------------------------------------------------------


def test_gocardless_and_standard_webhooks_signed_events_are_accepted_forged_and_replayed_refused(stack):
    t = Tenant(stack)
    gc_invoice = t.invoice("g1", "95.00", "gecko")
    sw_invoice = t.invoice("s1", "180.00", "specht")
    t.known_to_reconciliation(gc_invoice, sw_invoice)
    url = stack.url("reconciliation")

    gc_secret = f"gc-secret-{t.run}"
    t.call("POST", "reconciliation", "/v1/webhook-secrets", {"processor": "gocardless", "secret": gc_secret})
    payment = f"PM{t.run.upper()}"
    confirmed = gocardless_body(
        gocardless_payment_event("confirmed", payment, invoice_id=gc_invoice["id"], amount_minor=9500, currency="EUR")
    )
    forged = post_gocardless(t.client, url, t.id, confirmed, gocardless_signature(confirmed, "not-the-secret"))
    assert forged.status_code == 498, forged.text
    r = post_gocardless(t.client, url, t.id, confirmed, gocardless_signature(confirmed, gc_secret))
    assert r.status_code == 200, r.text
    replay = post_gocardless(t.client, url, t.id, confirmed, gocardless_signature(confirmed, gc_secret))
    assert replay.status_code == 200, replay.text

    created = t.call("POST", "reconciliation", "/v1/webhook-secrets", {"processor": "standard_webhooks"})
    sw_secret = created["secret"]
    event = standard_event(
        "payment.succeeded",
        {"id": f"pay_{t.run}", "amount": "180.00", "currency": "EUR", "invoice_id": sw_invoice["id"]},
    )
    forged = post_standard(t.client, url, t.id, event, standard_headers(event, "whsec_" + "A" * 32))
    assert 400 <= forged.status_code < 500, forged.text
    stale = post_standard(t.client, url, t.id, event, standard_headers(event, sw_secret, at=int(time.time()) - 900))
    assert 400 <= stale.status_code < 500, stale.text
    headers = standard_headers(event, sw_secret)
    r = post_standard(t.client, url, t.id, event, headers)
    assert r.status_code in (200, 204), r.text
    replay = post_standard(t.client, url, t.id, event, headers)
    assert replay.status_code in (200, 204), replay.text

    t.balances_settle({gc_invoice["id"]: "0.00", sw_invoice["id"]: "0.00"})
    time.sleep(2)
    payments = t.payments()
    assert sorted(p["source"] for p in payments) == ["gocardless", "standard_webhooks"], payments
    assert {i: Decimal(t.view({"id": i})["balance"]) for i in (gc_invoice["id"], sw_invoice["id"])} == {
        gc_invoice["id"]: 0,
        sw_invoice["id"]: 0,
    }


# -- a debit processing pauses, its failure resumes ---------------------------------------------------------


def test_a_processing_debit_pauses_dunning_without_settling_and_its_failure_resumes_it(stack):
    policy = {**seconds_policy(2, 12, 14, 60, 80), "pauses": {"resume": "spaced"}}
    t = Tenant(stack, policy)
    email = f"ap-{t.run}-debit@example.com"
    body = invoice_body(
        f"D-{t.run}",
        currency="EUR",
        amount="260.00",
        name="Debit GmbH",
        email=email,
        locale="en-GB",
        timezone="UTC",
        customer_external_id=f"C-{t.run}-d",
    )
    invoice = t.call("POST", "invoice-ingest", "/v1/invoices", body)
    issued = datetime.fromisoformat(invoice["created_at"].replace("Z", "+00:00")).timestamp()
    wait_until(lambda: t.mails(email), timeout=30, interval=0.2, what="pre_due")
    debit = StripeCharge(invoice)
    url, secret = stack.url("reconciliation"), t.tenant["webhook_secret"]
    r = post_stripe(t.client, url, t.id, debit.intent("payment_intent.processing", "processing"), secret)
    assert r.status_code == 200, r.text
    time.sleep(max(0.0, issued + 17 - time.time()))  # soft (12 s) and firm (14 s) fell due meanwhile
    assert [m["headers"]["X-Dunning-Stage"] for m in t.mails(email)] == ["pre_due"]
    view = t.view(invoice)
    assert view["status"] == "open" and Decimal(view["balance"]) == Decimal("260.00"), view  # not counted as paid
    assert "processing" in words(view), view

    r = post_stripe(
        t.client, url, t.id, debit.intent("payment_intent.payment_failed", "requires_payment_method"), secret
    )
    assert r.status_code == 200, r.text
    wait_until(
        lambda: {"soft", "firm"} <= {m["headers"]["X-Dunning-Stage"] for m in t.mails(email)},
        timeout=40,
        interval=0.3,
        what="the owed stages after the debit failed",
    )
    stages = [m["headers"]["X-Dunning-Stage"] for m in t.mails(email)]
    assert len(stages) == len(set(stages)), stages
    received = {m["headers"]["X-Dunning-Stage"]: m["received_at"] for m in t.mails(email)}
    assert received["soft"] < received["firm"], "the owed stages keep their spacing (no burst)"
