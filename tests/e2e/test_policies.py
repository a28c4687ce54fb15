"""End to end, issue 10's policies: the four services as processes, driven through their public APIs,
asserting what the SMTP server received.

- A preview matches what is later sent: the preview of a policy (stages seconds after issue) and
  settings (a send window opening a few seconds ahead) for a sample invoice, then the same policy and
  settings applied and that invoice issued: the same stages, channels, order, states and times.
- A consolidated notice leaves out an invoice paid a moment before it went: the customer's address
  is greylisted by the SMTP stand-in (its first attempt refused with a transient 451), one invoice is
  paid while the notifier waits to retry; the notice that goes does not list it, and its timeline
  says it was left out.
- Nothing is sent outside a window after a backlog drains: stages planned without a window fall due
  before a window that opens seconds later (put in the settings after planning); the firing loop
  defers them (StageDeferred, on the timeline) and the SMTP server receives nothing before the opening.

The customers live in UTC, so a window's local hours are UTC hours. The three stories run at once, each
with a tenant of its own, and each is reported by its own test (dunning_tools.testing.scenarios).
"""

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from dunning_tools.stack.mailserver import greylisted, messages_to
from dunning_tools.stack.system import Stack
from dunning_tools.testing.fixtures import E2E_ENV
from dunning_tools.testing.scenarios import Outcomes, Scenarios
from dunning_tools.testing.story import invoice_body
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# the notifier's retry base in the shared stack: a greylisted notice is retried ~4-6 s later
RETRY_SECONDS = int(E2E_ENV["NOTIFIER_RETRY_BASE_SECONDS"])
TOLERANCE = 1.5  # seconds: the preview's `now` vs the invoice's issued_at, plus the firing loop's poll


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


scenario = Scenarios()  # the module's stories, run at once (each its own tenant), each reported by its test


@pytest.fixture(scope="module")
def outcomes(stack) -> Outcomes:
    return scenario.run(stack)


class Tenant:
    """A tenant of its own, its API calls, and its customers' mail."""

    def __init__(self, stack: Stack):
        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        self.tenant = asyncio.run(create_tenant(stack.database_url, f"Policies {self.run}"))
        self.auth = {"Authorization": f"Bearer {self.tenant['api_key']}", "Dunning-Actor": "e2e"}

    def call(self, method: str, service: str, path: str, body: dict | None = None, ok=(200, 201)) -> dict:
        r = httpx.request(method, f"{self.stack.url(service)}{path}", json=body, headers=self.auth, timeout=30)
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def invoice(self, n: int, customer: str, email: str, currency: str, amount: str, overdue: int = -14) -> dict:
        """Issue an invoice to `customer` (UTC), due `overdue` days ago (negative: ahead)."""
        body = invoice_body(
            f"P-{self.run}-{customer}-{n}",
            currency=currency,
            amount=amount,
            name=f"Customer {customer}",
            email=email,
            locale="en-GB",
            timezone="UTC",
            customer_external_id=f"C-{self.run}-{customer}",
        )
        body["issue_date"] = (date.today() - timedelta(days=overdue + 30)).isoformat()
        body["due_date"] = (date.today() - timedelta(days=overdue)).isoformat()
        return self.call("POST", "invoice-ingest", "/v1/invoices", body)

    def mails(self, email: str) -> list[dict]:
        return sorted(messages_to(self.stack.mail_api, email), key=lambda m: m["received_at"])

    def history(self, invoice_id: str) -> list[dict]:
        return self.call("GET", "invoice-ingest", f"/v1/invoices/{invoice_id}")["history"]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def window_opening_in(seconds: int, spread: str = "PT0S") -> tuple[dict, float]:
    """A send window (every day, UTC customers) opening `seconds` from now: (document, the opening)."""
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 55:  # the window must open and close on today's date
        time.sleep((60 - now.minute) * 60 - now.second + 1)
        now = datetime.now(UTC)
    opening = (now + timedelta(seconds=seconds)).replace(microsecond=0)
    end = min(opening + timedelta(hours=1), opening.replace(hour=23, minute=59, second=59))
    window = {
        "days": EVERY_DAY,
        "start": opening.strftime("%H:%M:%S"),
        "end": end.strftime("%H:%M:%S"),
        "spread": spread,
    }
    return window, opening.timestamp()


@scenario
def preview_matches_what_is_sent(stack):
    t = Tenant(stack)
    policy = {
        "anchor": "issued_at",
        "stages": [
            {"name": "pre_due", "offset": "PT2S"},
            {"name": "soft", "offset": "PT4S"},
            {"name": "firm", "offset": "PT16S", "channels": ["email"]},
            {"name": "final", "offset": "PT18S", "template": "final"},
        ],
    }
    window, opening = window_opening_in(10)
    settings = {"send_window": window}
    email = f"ap-preview-{t.run}@example.com"
    sample = invoice_body(
        f"PV-{t.run}",
        currency="EUR",
        amount="1200.00",
        name="Preview GmbH",
        email=email,
        locale="en-GB",
        timezone="UTC",
        customer_external_id=f"C-{t.run}-pv",
    )
    preview_now = datetime.now(UTC)
    answer = t.call(
        "POST",
        "scheduler",
        "/v1/policy/preview",
        {
            "policy": policy,
            "settings": settings,
            "invoices": [
                {
                    "reference": "sample-1",
                    **{k: sample[k] for k in ("number", "currency", "amount_due", "issue_date", "due_date")},
                    "customer": {"timezone": "UTC", "locale": "en-GB"},
                }
            ],
            "now": preview_now.isoformat(),
        },
    )
    [previewed] = answer["invoices"]
    stages = previewed["stages"]
    assert [s["stage"] for s in stages] == ["pre_due", "soft", "firm", "final"], stages
    assert all(s["channel"] == "email" and s["state"] == "scheduled" for s in stages), stages
    # pre_due and soft fall before the opening: the preview says they wait for it, and why.
    for s in stages[:2]:
        assert ts(s["scheduled_at"]) == pytest.approx(opening, abs=1), s
        assert s.get("moved") or s.get("deferred"), s
    assert not stages[2].get("moved") and not stages[2].get("deferred"), stages[2]

    t.call("PUT", "scheduler", "/v1/settings", settings)
    t.call("PUT", "scheduler", "/v1/policy", policy)
    time.sleep(2.5)  # the settings cache's TTL (2 s): every replica sees them
    r = httpx.post(f"{stack.url('invoice-ingest')}/v1/invoices", json=sample, headers=t.auth, timeout=30)
    assert r.status_code == 201, r.text
    issued_at = ts(r.json()["created_at"])
    skew = abs(issued_at - preview_now.timestamp())

    wait_until(lambda: len(t.mails(email)) >= 4, timeout=60, what="four reminders")
    time.sleep(2)
    mails = t.mails(email)
    sent = sorted(
        ((ts(m["headers"]["X-Dunning-Scheduled-At"]), m) for m in mails),
        key=lambda pair: (pair[0], [s["stage"] for s in stages].index(pair[1]["headers"]["X-Dunning-Stage"])),
    )
    assert [m["headers"]["X-Dunning-Stage"] for _, m in sent] == [s["stage"] for s in stages], mails
    assert [m["headers"]["X-Dunning-Channel"] for _, m in sent] == [s["channel"] for s in stages]
    for s, (scheduled, m) in zip(stages, sent, strict=True):
        moved = bool(s.get("moved") or s.get("deferred"))
        # A stage the window moved keeps the opening (absolute); the others keep their offset from issue.
        assert scheduled == pytest.approx(
            ts(s["scheduled_at"]) + (0 if moved else issued_at - preview_now.timestamp()),
            abs=TOLERANCE + (0 if moved else skew),
        ), (s, m["headers"])
        assert ts(m["received_at"]) >= opening, f"{s['stage']} sent before the window opened"


@scenario
def consolidated_notice_leaves_out_a_paid_invoice(stack):
    t = Tenant(stack)
    t.call("PUT", "scheduler", "/v1/settings", {"consolidation": {"enabled": True}})
    t.call(
        "PUT",
        "scheduler",
        "/v1/policy",
        {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT6S"}, {"name": "final", "offset": "PT10M"}]},
    )
    time.sleep(2.5)  # the settings cache's TTL
    email = f"ap-{t.run}+greylist@example.com"
    kept = t.invoice(1, "c1", email, "EUR", "1250.00", overdue=20)
    paid = t.invoice(2, "c1", email, "EUR", "310.00", overdue=10)
    other = t.invoice(3, "c1", email, "GBP", "820.00", overdue=5)

    wait_until(lambda: greylisted(stack.mail_api, email), timeout=40, what="the notice's first attempt (greylisted)")
    assert t.mails(email) == []
    body = {"invoice_id": paid["id"], "amount": "310.00", "currency": "EUR", "reference": f"PAY-{t.run}"}
    t.call("POST", "reconciliation", "/v1/payments", {**body, "received_at": datetime.now(UTC).isoformat()})

    [notice] = wait_until(lambda: t.mails(email), timeout=60, what="the notice (retried)")
    time.sleep(RETRY_SECONDS)  # no second copy comes
    assert len(t.mails(email)) == 1, [m["subject"] for m in t.mails(email)]
    assert kept["number"] in notice["text"] and other["number"] in notice["text"], notice["text"]
    assert paid["number"] not in notice["text"], notice["text"]
    assert paid["number"] not in notice["html"]

    def notice_entries(invoice_id: str) -> list[str]:
        return [json.dumps(h) for h in t.history(invoice_id) if "ntc_" in json.dumps(h)]

    left_out = wait_until(
        lambda: [e for e in notice_entries(paid["id"]) if "left" in e.lower()],
        timeout=20,
        what="the paid invoice's timeline saying it was left out",
    )
    assert left_out, notice_entries(paid["id"])
    for inv in (kept, other):
        wait_until(lambda inv=inv: notice_entries(inv["id"]), timeout=20, what=f"{inv['number']} in the notice")


@scenario
def backlog_waits_for_the_window(stack):
    t = Tenant(stack)
    stages = [{"name": "pre_due", "offset": "PT7S"}, {"name": "soft", "offset": "PT9S"}]
    t.call("PUT", "scheduler", "/v1/policy", {"anchor": "issued_at", "stages": stages})
    emails = [f"ap-backlog-{t.run}-{i}@example.com" for i in range(3)]
    invoices = [t.invoice(i, f"b{i}", e, "EUR", "500.00") for i, e in enumerate(emails)]

    def planned() -> bool:  # a 404 until the scheduler has the invoice (InvoiceIssued still on its way)
        answers = [t.call("GET", "scheduler", f"/v1/invoices/{inv['id']}/timers", ok=(200, 404)) for inv in invoices]
        timers = [a.get("timers", []) for a in answers]
        return all(len(each) == 2 for each in timers)

    wait_until(planned, timeout=5, what="the plans (made with no window)")
    window, opening = window_opening_in(16, spread="PT4S")
    t.call("PUT", "scheduler", "/v1/settings", {"send_window": window})
    # The settings reach the firing loop within the cache's TTL (2 s), before the first stage (~7 s).

    wait_until(lambda: all(len(t.mails(e)) >= 2 for e in emails), timeout=opening - time.time() + 40, what="the stages")
    for e in emails:
        for m in t.mails(e):
            assert ts(m["received_at"]) >= opening, f"sent before the window opened: {m['headers']}"
            assert ts(m["received_at"]) < opening + 4 + 5, "not spread over the opening's first seconds"
    for inv in invoices:
        entries = [json.dumps(h) for h in t.history(inv["id"])]
        assert any("send_window" in e for e in entries), entries


# -- the tests: one per story, reporting what it came to ------------------------------------------


def test_a_preview_matches_what_is_later_sent(outcomes):
    outcomes.check("preview_matches_what_is_sent")


def test_a_consolidated_notice_leaves_out_an_invoice_paid_a_moment_before_it_went(outcomes):
    outcomes.check("consolidated_notice_leaves_out_a_paid_invoice")


def test_nothing_is_sent_outside_a_window_after_a_backlog_drains(outcomes):
    outcomes.check("backlog_waits_for_the_window")
