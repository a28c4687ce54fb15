"""End to end, a property of issue 11's money: after ANY sequence of payments (the API, bank
statement lines naming an invoice, lines left in the unmatched queue), card payments and their
refunds (Stripe), credit notes, manual allocations from the queue and their undoing, on a few
invoices of one customer, once the events have settled, every invoice's balance is the same in
reconciliation, the scheduler (`GET /v1/invoices/{id}/timers`) and the invoice view
(`GET /v1/invoices/{id}`), and each says settled exactly when the balance is zero; reconciliation's
balance is the invoice's amount less what its payments' allocations, its customer credit applied
and its credit notes hold (`GET /v1/payments`, `GET /v1/credit-notes`); no request answers 5xx.

Hypothesis draws the sequences (few examples: each runs against the whole stack).
"""

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning_tools.stack.system import Stack
from dunning_tools.testing.money import StripeCharge, post_stripe
from dunning_tools.testing.statements import Line, camt053
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

AMOUNTS = ("120.00", "75.50", "40.00")  # the invoices of each example (one customer)
PAYER = "DE02120300000000202051"

cents = st.integers(min_value=1, max_value=15000)
invoice = st.integers(min_value=0, max_value=len(AMOUNTS) - 1)
pick = st.integers(min_value=0, max_value=7)
operation = st.one_of(
    st.tuples(st.just("api"), invoice, cents),
    st.tuples(st.just("bank"), invoice, cents),
    st.tuples(st.just("queue"), cents),
    st.tuples(st.just("manual"), pick, invoice, cents),
    st.tuples(st.just("unallocate"), pick),
    st.tuples(st.just("card"), invoice),
    st.tuples(st.just("refund"), pick, cents),
    st.tuples(st.just("credit_note"), invoice, cents),
)


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


def money(cents_: int) -> str:
    return f"{Decimal(cents_) / 100:.2f}"


class Ledger:
    """One example: a tenant, its invoices, and the operations applied through the public APIs."""

    def __init__(self, stack: Stack):
        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        self.tenant = asyncio.run(create_tenant(stack.database_url, f"Money property {self.run}"))
        self.auth = {"Authorization": f"Bearer {self.tenant['api_key']}", "Dunning-Actor": "e2e"}
        self.client = httpx.Client(timeout=30)
        self.charges: list[StripeCharge] = []
        self.n = 0
        self.invoices = []
        for k, amount in enumerate(AMOUNTS):
            body = {
                "external_id": f"P-{self.run}-{k}",
                "number": f"P-{self.run}-{k}",
                "currency": "EUR",
                "amount_due": amount,
                "issue_date": "2026-10-01",
                "due_date": f"2026-10-{10 + k}",
                "payment_url": "https://pay.example.com/p",
                "customer": {
                    "external_id": f"C-{self.run}",
                    "name": f"Property Customer {self.run}",
                    "email": f"ap-prop-{self.run}@example.com",
                    "locale": "en-GB",
                    "timezone": "UTC",
                },
            }
            self.invoices.append(self.request("POST", "invoice-ingest", "/v1/invoices", body).json())
        wait_until(lambda: len(self.recon_balances()) == len(AMOUNTS), timeout=30, interval=0.2, what="reconciliation")

    def request(self, method: str, service: str, path: str, body=None, **kwargs) -> httpx.Response:
        r = self.client.request(method, f"{self.stack.url(service)}{path}", json=body, headers=self.auth, **kwargs)
        assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def recon_balances(self) -> dict[str, Decimal]:
        """Reconciliation's own balance of each invoice (its table: it has no invoice route)."""

        async def read() -> dict[str, Decimal]:
            conn = await asyncpg.connect(self.stack.database_url)
            try:
                rows = await conn.fetch(
                    "SELECT invoice_id, balance FROM reconciliation.invoices WHERE tenant_id = $1",
                    self.tenant["tenant_id"],
                )
                return {r["invoice_id"]: r["balance"] for r in rows}
            finally:
                await conn.close()

        return asyncio.run(read())

    def payments(self, **params) -> list[dict]:
        return self.request("GET", "reconciliation", "/v1/payments", params={"limit": 500, **params}).json()["data"]

    def statement(self, line: Line) -> None:
        self.n += 1
        r = self.client.post(
            f"{self.stack.url('reconciliation')}/v1/statements",
            content=camt053([line], statement_id=f"P-{self.run}-{self.n}"),
            headers={**self.auth, "Content-Type": "application/xml"},
        )
        assert r.status_code in (200, 201), r.text

    def apply(self, op: tuple) -> None:
        kind, *args = op
        self.n += 1
        if kind == "api":
            i, c = args
            body = {"invoice_id": self.invoices[i]["id"], "amount": money(c), "currency": "EUR"}
            self.request("POST", "reconciliation", "/v1/payments", {**body, "reference": f"API-{self.run}-{self.n}"})
        elif kind == "bank":
            i, c = args
            self.statement(Line(Decimal(money(c)), f"Rechnung {self.invoices[i]['number']}", "Payer", PAYER))
        elif kind == "queue":
            self.statement(Line(Decimal(money(args[0])), "Dezember", f"Unbekannt {self.n}", "DE12500105170648489890"))
        elif kind == "manual":
            k, i, c = args
            queue = self.payments(status="unmatched")
            if queue:
                p = queue[k % len(queue)]
                amount = min(Decimal(money(c)), Decimal(p.get("unallocated_amount") or p["amount"]))
                body = {
                    "allocations": [{"invoice_id": self.invoices[i]["id"], "amount": f"{amount:.2f}"}],
                    "reason": "p",
                }
                self.request("POST", "reconciliation", f"/v1/payments/{p['payment_id']}/allocations", body)
        elif kind == "unallocate":
            live = [
                (p["payment_id"], a["allocation_id"])
                for p in self.payments()
                for a in p.get("allocations", [])
                if a.get("rule") == "manual" and not a.get("unallocated_at")
            ]
            if live:
                payment_id, allocation_id = live[args[0] % len(live)]
                self.request("DELETE", "reconciliation", f"/v1/payments/{payment_id}/allocations/{allocation_id}")
        elif kind == "card":
            charge = StripeCharge(self.invoices[args[0]])
            self.charges.append(charge)
            self.stripe(charge.invoice_paid())
        elif kind == "refund":
            k, c = args
            if self.charges:
                charge = self.charges[k % len(self.charges)]
                left = charge.minor(charge.invoice["amount_due"]) - charge.refunded
                if left > 0:
                    self.stripe(charge.charge_refunded(min(c, left)))
        elif kind == "credit_note":
            i, c = args
            body = {
                "invoice_id": self.invoices[i]["id"],
                "reference": f"CN-{self.run}-{self.n}",
                "amount": money(c),
                "currency": "EUR",
                "reason": "property",
            }
            self.request("POST", "reconciliation", "/v1/credit-notes", body)

    def stripe(self, payload: bytes) -> None:
        r = post_stripe(
            self.client,
            self.stack.url("reconciliation"),
            self.tenant["tenant_id"],
            payload,
            self.tenant["webhook_secret"],
        )
        assert r.status_code < 500, r.text

    def held_by_reconciliation_api(self) -> dict[str, Decimal]:
        """Per invoice: what its allocations, customer credit applied and credit notes hold, read
        from reconciliation's public listings."""
        held = {inv["id"]: Decimal(0) for inv in self.invoices}
        for p in self.payments():
            for a in p.get("allocations", []):
                if not a.get("unallocated_at") and a["invoice_id"] in held:
                    held[a["invoice_id"]] += Decimal(a["amount"])
            for applied in (p.get("credit") or {}).get("applications", []):
                if applied["invoice_id"] in held:
                    held[applied["invoice_id"]] += Decimal(applied["amount"])
        notes = self.request("GET", "reconciliation", "/v1/credit-notes", params={"limit": 500}).json()["data"]
        for cn in notes:
            if cn["invoice_id"] in held:
                held[cn["invoice_id"]] += Decimal(cn["amount_applied"])
        return held

    def views(self) -> list[tuple] | None:
        """Per invoice: (reconciliation, scheduler, invoice view) balances and settled flags; None
        while a service does not know an invoice yet."""
        recon = self.recon_balances()
        out = []
        for inv in self.invoices:
            timers = self.request("GET", "scheduler", f"/v1/invoices/{inv['id']}/timers")
            view = self.request("GET", "invoice-ingest", f"/v1/invoices/{inv['id']}")
            if timers.status_code != 200 or view.status_code != 200 or timers.json().get("balance") is None:
                return None
            out.append(
                (
                    inv["number"],
                    recon[inv["id"]],
                    Decimal(timers.json()["balance"]),
                    Decimal(view.json()["balance"]),
                    timers.json()["settled"],
                    view.json()["status"] == "paid",
                )
            )
        return out


def agree(rows: list[tuple] | None) -> list[tuple] | None:
    """The rows when every invoice agrees everywhere, else None."""
    ok = rows is not None and all(r == s == v and settled == paid == (r == 0) for _, r, s, v, settled, paid in rows)
    return rows if ok else None


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, min_size=1, max_size=8))
def test_balances_agree_between_reconciliation_the_scheduler_and_the_invoice_view(stack, ops):
    ledger = Ledger(stack)
    for op in ops:
        ledger.apply(op)
    try:
        rows = wait_until(lambda: agree(ledger.views()), timeout=30, interval=0.5, what="agreement")
    except AssertionError:
        raise AssertionError(
            f"after {ops}: (number, reconciliation, scheduler, view, settled, paid) {ledger.views()}"
        ) from None
    held = ledger.held_by_reconciliation_api()
    for inv, (_, balance, *_rest) in zip(ledger.invoices, rows, strict=True):
        assert balance >= 0, rows
        assert balance == Decimal(inv["amount_due"]) - held[inv["id"]], (ops, rows, held)
