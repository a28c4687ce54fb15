"""End to end, one stop at a time: the four services as processes, driven through their public APIs,
asserting what the SMTP server received.

Each story has its own tenant and a policy of stages seconds apart (pre_due 2 s after issue, then
soft, firm, final and collections at 12, 14, 16 and 18 s), places one stop after the first reminder
and checks that nothing else is sent while it is in force, and what is sent once it ends. The stories
run at once, each reported by its own test (dunning_tools.testing.scenarios):
- a hold on the invoice, then on its customer, released: the owed stages go out, the first at the
  resume and the next ones keeping their spacing (the `spaced` resume);
- a dispute rejected: the same;
- a promise broken (made `by` an instant seconds ahead): a `promise_broken` reminder quoting the
  promise, at its deadline, then the owed stages; a promise kept by a payment: nothing more;
- a payment plan: its instalment reminders (named `instalment_<n>_...`, quoting the instalment) are
  sent while the invoice's own stages stay paused; paid in full, the plan completes and nothing more
  is sent.
"""

import math
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from dunning_tools.stack.mailserver import messages_to
from dunning_tools.stack.system import Stack
from dunning_tools.testing.scenarios import Outcomes, Scenarios
from dunning_tools.testing.story import invoice_body, seconds_policy
from dunning_tools.testing.waits import wait_until

pytestmark = pytest.mark.e2e

# pre_due, soft, firm, final, collections: seconds after issue. The 10 s between pre_due and soft leave
# room for a cold stack's first reminder (the stop is placed once pre_due has arrived, before soft).
OFFSETS = (2, 12, 14, 16, 18)
OWED = ("soft", "firm", "final")  # fall due while the stop is in force (placed at ~3 s, ended at ~17 s)
GRACE = 2
PROMISED_IN = 12  # a broken promise is made `by` this many seconds after it (~3 s): its deadline ~17 s


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack


class Story:
    """One tenant, one invoice of one customer, and what its inbox received."""

    def __init__(self, stack: Stack, *, timezone: str = "Europe/London", **policy):
        import asyncio

        from dunning_cli.tenants import create_tenant

        self.stack, self.run = stack, uuid.uuid4().hex[:8]
        self.tenant = asyncio.run(create_tenant(stack.database_url, f"Stops {self.run}"))
        self.auth = {"Authorization": f"Bearer {self.tenant['api_key']}"}
        body = {
            **seconds_policy(*OFFSETS),
            "pauses": {"resume": "spaced", "promise_grace": f"PT{GRACE}S"},
            **policy,
        }
        r = httpx.put(f"{stack.url('scheduler')}/v1/policy", json=body, headers=self.auth)
        assert r.status_code == 200, r.text
        self.email = f"ap-{self.run}@example.com"
        self.customer = f"C-{self.run}"
        invoice = invoice_body(
            f"S-{self.run}",
            currency="EUR",
            amount="840.00",
            name=f"Customer {self.run}",
            email=self.email,
            locale="en-GB",
            timezone=timezone,
            customer_external_id=self.customer,
        )
        r = httpx.post(f"{self.ingest}/v1/invoices", json=invoice, headers=self.auth)
        assert r.status_code == 201, r.text
        self.invoice_id = r.json()["id"]
        self.issued_at = datetime.fromisoformat(r.json()["created_at"]).timestamp()

    @property
    def ingest(self) -> str:
        return self.stack.url("invoice-ingest")

    def post(self, path: str, body: dict, service: str = "invoice-ingest") -> dict:
        r = httpx.post(f"{self.stack.url(service)}{path}", json=body, headers=self.auth, timeout=30)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def mails(self) -> list[dict]:
        return messages_to(self.stack.mail_api, self.email)

    def stages(self) -> dict[str, float]:
        """Stage -> when the SMTP server received it (each must come once)."""
        mails = self.mails()
        names = [m["headers"]["X-Dunning-Stage"] for m in mails]
        assert len(names) == len(set(names)), f"a reminder came twice: {names}"
        return {m["headers"]["X-Dunning-Stage"]: ts(m["received_at"]) for m in mails}

    def scheduled(self) -> dict[str, float]:
        """Stage -> its scheduled time, as the mail says (X-Dunning-Scheduled-At)."""
        return {m["headers"]["X-Dunning-Stage"]: ts(m["headers"]["X-Dunning-Scheduled-At"]) for m in self.mails()}

    def wait_for(self, *stages: str, timeout: float = 40) -> dict[str, float]:
        def arrived() -> dict[str, float] | None:
            got = self.stages()
            return got if set(stages) <= set(got) else None

        return wait_until(
            arrived,
            timeout=timeout,
            interval=0.2,
            what=f"reminders {stages} (got {sorted(self.stages())})",
        )

    def sleep_until(self, seconds_after_issue: float) -> None:
        time.sleep(max(0.0, self.issued_at + seconds_after_issue - time.time()))

    def timers(self) -> dict[str, str]:
        r = httpx.get(f"{self.stack.url('scheduler')}/v1/invoices/{self.invoice_id}/timers", headers=self.auth)
        assert r.status_code == 200, r.text
        return {t["stage"]: t["state"] for t in r.json()["timers"]}

    def history(self) -> list[str]:
        r = httpx.get(f"{self.ingest}/v1/invoices/{self.invoice_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return [h["kind"] for h in r.json()["history"]]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


scenario = Scenarios()  # every story of this module, run at once (each test reports its own)


@pytest.fixture(scope="module")
def outcomes(stack) -> Outcomes:
    return scenario.run(stack)


def paused_then_resumed(story: Story, place, end) -> None:
    """pre_due goes out; `place()` stops it (returns the acknowledged_at); nothing else is sent while
    it is in force, though soft, firm and final fall due; `end()` (returns when it ended) resumes: the
    owed stages go out after it, the first at the resume, the next ones keeping their 2 s spacing."""
    story.wait_for("pre_due", timeout=20)
    acknowledged = ts(place())
    assert acknowledged < story.issued_at + OFFSETS[1], "placed too late for the test to mean anything"
    wait_until(lambda: "paused" in story.history(), timeout=10, what="the scheduler's pause in the timeline")
    story.sleep_until(OFFSETS[3] + 1)  # soft, firm and final are due now
    assert set(story.stages()) == {"pre_due"}, "a reminder was sent while the stop was in force"
    ended = ts(end())
    got = story.wait_for(*OWED, "collections")
    assert all(got[s] >= ended for s in (*OWED, "collections")), (got, ended)
    at = story.scheduled()
    assert at["firm"] - at["soft"] == pytest.approx(OFFSETS[2] - OFFSETS[1], abs=0.05), at
    assert at["final"] - at["firm"] == pytest.approx(OFFSETS[3] - OFFSETS[2], abs=0.05), at
    assert "paused" in story.history() and "resumed" in story.history(), story.history()


@scenario
def hold_on_the_invoice(stack):
    story = Story(stack)
    hold: dict = {}

    def place():
        hold.update(story.post("/v1/holds", {"invoice_id": story.invoice_id, "reason": "KAM", "placed_by": "e2e"}))
        assert hold["scope"] == "invoice" and hold["status"] == "active", hold
        return hold["acknowledged_at"]

    def end():
        r = httpx.delete(f"{story.ingest}/v1/holds/{hold['hold_id']}", headers=story.auth)
        assert r.status_code == 200 and r.json()["status"] == "released", r.text
        return r.json()["released_at"]

    paused_then_resumed(story, place, end)


@scenario
def hold_on_the_customer(stack):
    story = Story(stack)
    hold: dict = {}

    def place():
        body = {"customer_external_id": story.customer, "reason": "insolvency check", "placed_by": "e2e"}
        hold.update(story.post("/v1/holds", body))
        assert hold["scope"] == "customer", hold
        return hold["acknowledged_at"]

    def end():
        r = httpx.delete(f"{story.ingest}/v1/holds/{hold['hold_id']}", headers=story.auth)
        assert r.status_code == 200, r.text
        return r.json()["released_at"]

    paused_then_resumed(story, place, end)


@scenario
def rejected_dispute(stack):
    story = Story(stack)
    dispute: dict = {}

    def place():
        dispute.update(story.post(f"/v1/invoices/{story.invoice_id}/disputes", {"reason": "never delivered"}))
        assert dispute["status"] == "open", dispute
        return dispute["acknowledged_at"]

    def end():
        path = f"/v1/invoices/{story.invoice_id}/disputes/{dispute['dispute_id']}/resolve"
        resolved = story.post(path, {"outcome": "rejected", "note": "proof of delivery"})
        assert resolved["status"] == "rejected", resolved
        return resolved["resolved_at"]

    paused_then_resumed(story, place, end)


@scenario
def broken_promise(stack):
    story = Story(stack)
    story.wait_for("pre_due", timeout=20)
    by = datetime.now(UTC) + timedelta(seconds=PROMISED_IN)  # "by <instant>": no waiting for a day to end
    body = {"amount": "840.00", "by": by.isoformat(), "made_by": "e2e"}
    promise = story.post(f"/v1/invoices/{story.invoice_id}/promises", body)
    assert promise["status"] == "pending" and ts(promise["due_by"]) == pytest.approx(by.timestamp(), abs=1e-3)
    assert ts(promise["acknowledged_at"]) < story.issued_at + OFFSETS[1], (
        "placed too late for the test to mean anything"
    )
    deadline = by.timestamp() + GRACE
    got = story.wait_for("promise_broken", *OWED, timeout=40)
    assert got["promise_broken"] >= deadline, (got, deadline)
    assert all(got["promise_broken"] <= got[s] for s in OWED), got  # nothing sent while the promise stood
    broken = next(m for m in story.mails() if m["headers"]["X-Dunning-Stage"] == "promise_broken")
    assert "840" in broken["text"], broken["text"]  # it quotes the promise
    r = httpx.get(f"{story.ingest}/v1/invoices/{story.invoice_id}/promises", headers=story.auth)
    [verdict] = r.json()["data"]
    assert verdict["status"] == "broken" and ts(verdict["deadline"]) == pytest.approx(deadline, abs=1e-3), verdict


@scenario
def promise_kept_by_a_payment(stack):
    story = Story(stack)
    story.wait_for("pre_due", timeout=20)
    today = datetime.now(UTC).astimezone().date()
    body = {"amount": "840.00", "date": (today + timedelta(days=1)).isoformat(), "made_by": "e2e"}
    promise = story.post(f"/v1/invoices/{story.invoice_id}/promises", body)
    assert promise["status"] == "pending", promise
    paid = {"invoice_id": story.invoice_id, "amount": "840.00", "currency": "EUR", "reference": f"P-{story.run}"}
    story.post("/v1/payments", {**paid, "received_at": datetime.now(UTC).isoformat()}, service="reconciliation")

    def kept():
        r = httpx.get(f"{story.ingest}/v1/invoices/{story.invoice_id}/promises", headers=story.auth)
        return r.status_code == 200 and r.json()["data"][0]["status"] == "kept"

    wait_until(kept, timeout=20, what="the promise kept")
    story.sleep_until(OFFSETS[4] + 2)
    assert set(story.stages()) == {"pre_due"}


@scenario
def payment_plan(stack):
    # Instalment reminders are at the due date's send_time (HH:MM, customer's zone: UTC here) plus an
    # offset: the next whole minute, with offsets bringing both reminders a few seconds from now.
    now = time.time()
    minute = math.ceil((now + 20) / 60) * 60
    ahead = minute - now
    send_time = datetime.fromtimestamp(minute, UTC)
    story = Story(
        stack,
        timezone="UTC",
        send_time=send_time.strftime("%H:%M"),
        payment_plans={
            "grace": "PT2S",
            "reminders": [
                {"name": "instalment_pre_due", "offset": f"-PT{int(ahead - 8)}S"},
                {"name": "instalment_overdue", "offset": f"-PT{int(ahead - 11)}S"},
            ],
            "channels": ["email"],
        },
    )
    story.wait_for("pre_due", timeout=20)
    due: date = send_time.date()
    plan = story.post(
        f"/v1/invoices/{story.invoice_id}/payment-plans",
        {
            "instalments": [
                {"due_date": due.isoformat(), "amount": "400.00"},
                {"due_date": (due + timedelta(days=30)).isoformat(), "amount": "440.00"},
            ]
        },
    )
    assert plan["status"] == "active" and [i["number"] for i in plan["instalments"]] == [1, 2], plan
    got = story.wait_for("instalment_1_pre_due", "instalment_1_overdue", timeout=40)
    story.sleep_until(OFFSETS[4] + 1)
    assert not set(OWED) & set(story.stages()), "a stage was sent while the plan was honoured"
    quoted = next(m for m in story.mails() if m["headers"]["X-Dunning-Stage"] == "instalment_1_pre_due")
    assert "400" in quoted["text"], quoted["text"]
    assert got["instalment_1_pre_due"] < got["instalment_1_overdue"]

    paid = {"invoice_id": story.invoice_id, "amount": "840.00", "currency": "EUR", "reference": f"P-{story.run}"}
    story.post("/v1/payments", {**paid, "received_at": datetime.now(UTC).isoformat()}, service="reconciliation")

    def completed():
        r = httpx.get(f"{story.ingest}/v1/payment-plans/{plan['plan_id']}", headers=story.auth)
        return r.status_code == 200 and r.json()["status"] == "completed"

    wait_until(completed, timeout=20, what="the plan completed")
    wait_until(
        lambda: all(s in ("cancelled", "fired", "skipped") for s in story.timers().values()),
        timeout=20,
        what="every timer decided",
    )
    assert not set(OWED) & set(story.stages())


# -- the tests: one per story, reporting what it came to ------------------------------------------


def test_a_hold_on_the_invoice_pauses_it_until_released(outcomes):
    outcomes.check("hold_on_the_invoice")


def test_a_hold_on_the_customer_pauses_its_invoice_until_released(outcomes):
    outcomes.check("hold_on_the_customer")


def test_a_rejected_dispute_resumes_dunning(outcomes):
    outcomes.check("rejected_dispute")


def test_a_broken_promise_sends_promise_broken_then_the_owed_stages(outcomes):
    outcomes.check("broken_promise")


def test_a_promise_kept_by_a_payment_ends_dunning(outcomes):
    outcomes.check("promise_kept_by_a_payment")


def test_a_payment_plan_sends_its_instalment_reminders_while_the_stages_wait(outcomes):
    outcomes.check("payment_plan")
