"""The races of issue 11's money inside a chaos run (same stack, same faults): refunds and chargebacks
that reopen a paid invoice, raced against firing, for a tenant of its own beside the run's main one.

Each customer has one invoice, paid by card through Stripe (`invoice.paid`, signed) aimed at a
stage's time (+-25 ms, the run's aim learnt per kind), then, aimed at the NEXT stage's original time
(which the payment cancelled):
- `refund`: `charge.refunded` of 40 % of the invoice — the balance rises again, the invoice reopens;
- `chargeback`: `charge.dispute.created` a moment after the payment (the paid invoice's dunning
  paused for the dispute), then `charge.dispute.closed` with status `lost` — reversed and reopened.
A reopened invoice resumes from the policy (`pauses.resume: spaced`): its stages the payment
cancelled and that never fired are owed.

Verdicts (chaos.money_checks), from the scheduler's timers, the deliveries topic and the SMTP
server's Maildir once every stage of these invoices is decided:
- violation ("none after a payment" over the time the invoice was settled): a mail of a stage
  scheduled at or after the payment's acknowledgement and before the reversing request was sent,
  and fired (the scheduler's fired_at) before it too (the reopen is acknowledged after that, and
  the owed stages are re-planned from it; an invoice the scheduler plans only after the reopen keeps
  its policy's times, and its owed stages fire at once, the invoice open again);
- lost ("none lost" for reopened invoices): a stage of a reopened invoice never sent (neither a
  ReminderSent nor a ReminderCancelled/Failed from the notifier);
- twice: two ReminderSent of one (invoice, stage, channel).
"""

import asyncio
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools.chaos import aim
from dunning_tools.chaos.checks import STAGES, ts
from dunning_tools.testing.money import StripeCharge
from dunning_tools.testing.story import invoice_body

KINDS = ("refund", "chargeback")
REFUND_SHARE = 0.4  # of the invoice's amount


@dataclass
class Story:
    kind: str
    index: int
    email: str = ""
    invoice: dict | None = None
    issued_at: float | None = None
    stage: int = 0  # the stage the payment is aimed at; the reversal at the next one's original time
    target: float | None = None
    sent_at: float | None = None
    acknowledged_at: float | None = None  # the payment's, as reconciliation reports it
    reversal_sent_at: float | None = None  # the first attempt of the reversing request (refund / lost)
    reversal_status: int | None = None
    error: str | None = None
    skipped: str | None = None
    raced: bool = True

    @property
    def via(self) -> str:
        return self.kind

    @property
    def invoice_id(self) -> str | None:
        return self.invoice["id"] if self.invoice else None


class MoneyRaces:
    def __init__(self, run, customers: int):
        self.run, self.n = run, customers
        self.tenants: dict[str, dict] = {}
        self.stories: list[Story] = []
        self.notes: list[str] = []

    @property
    def tenant(self) -> dict:
        return self.tenants["money"]

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.tenant['api_key']}", "Content-Type": "application/json"}

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        body: Any = None,
        *,
        headers=None,
        queue=True,
        deadline=120,
        content: bytes | None = None,
    ):
        url = f"{self.run.stack.url(service)}{path}"
        data = content if content is not None else (None if body is None else orjson.dumps(body))
        hdrs = {**self.auth(), **(headers or {})}
        r, _ = await self.run.send(
            lambda _: self.run.client.request(method, url, content=data, headers=hdrs), deadline=deadline, queue=queue
        )
        return r

    async def setup(self) -> None:
        cfg = self.run.cfg
        self.tenants["money"] = await create_tenant(self.run.stack.database_url, f"Chaos money {self.run.run_id}")
        policy = {
            "anchor": "issued_at",
            "stages": [{"name": n, "offset": f"PT{o:.3f}S"} for n, o in zip(STAGES, cfg.offsets, strict=False)],
            "pauses": {"resume": "spaced"},
        }
        r = await self.call("PUT", "scheduler", "/v1/policy", policy)
        if r.status_code >= 300:
            raise RuntimeError(f"money: PUT /v1/policy answered {r.status_code}: {r.text[:300]}")

    async def workload(self) -> None:
        """One story per customer, started over the run's spread."""
        run = self.run
        every = run.cfg.spread / max(1, self.n)
        tasks = []
        for i in range(self.n):
            await run.sleep_until(run.t0 + i * every)
            story = Story(KINDS[i % len(KINDS)], i, stage=run.rng.randrange(len(STAGES) - 2))
            self.stories.append(story)
            tasks.append(asyncio.ensure_future(self.tell(story)))
        await asyncio.gather(*tasks)

    async def tell(self, s: Story) -> None:
        try:
            invoice, issued_at = await self.issue(s)
            charge = StripeCharge(invoice, run=f"{self.run.run_id.replace('-', '')}{s.index}")
            offsets = self.run.cfg.offsets
            await self.pay(s, charge, issued_at + offsets[s.stage])
            if s.acknowledged_at is None:
                return
            reopen_at = issued_at + offsets[s.stage + 1]
            if s.kind == "chargeback":
                await self.run.sleep_until(s.acknowledged_at + min(2.0, (reopen_at - s.acknowledged_at) / 3))
                await self.stripe(charge.dispute("charge.dispute.created", "needs_response"))
                await self.run.sleep_until(reopen_at + self.run.rng.uniform(-1, 1) * aim.AIM_MS / 1000)
                s.reversal_sent_at = time.time()
                r = await self.stripe(charge.dispute("charge.dispute.closed", "lost"), queue=False)
            else:
                await self.run.sleep_until(reopen_at + self.run.rng.uniform(-1, 1) * aim.AIM_MS / 1000)
                s.reversal_sent_at = time.time()
                refund = round(charge.minor(invoice["amount_due"]) * REFUND_SHARE)
                r = await self.stripe(charge.charge_refunded(refund), queue=False)
            s.reversal_status = r.status_code
            if r.status_code >= 300:
                s.error = f"reversal answered {r.status_code}: {r.text[:200]}"
        except Exception as exc:  # reported; the verdicts cover what was issued
            s.error = repr(exc)
            self.notes.append(f"money {s.kind} {s.index}: {exc!r}")

    async def issue(self, s: Story) -> tuple[dict, float]:
        run = self.run
        s.email = f"ap-money-{run.run_id}-{s.index}@example.com"
        key = f"MONEY-{run.run_id}-{s.index}"
        body = invoice_body(
            key,
            currency="EUR",
            amount=f"{200 + s.index}.00",
            name=f"Money customer {s.index}",
            email=s.email,
            locale="en-GB",
            timezone="UTC",
            customer_external_id=f"C-{key}",
            issue_date=date.today() - timedelta(days=40),
            due_date=date.today() - timedelta(days=10),
        )
        r = await self.call("POST", "invoice-ingest", "/v1/invoices", body, headers={"Idempotency-Key": key})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /v1/invoices answered {r.status_code}: {r.text[:300]}")
        s.invoice = invoice = r.json()
        s.issued_at = issued_at = ts(invoice["created_at"])
        return invoice, issued_at

    async def stripe(self, payload: bytes, *, queue=True):
        from dunning_reconciliation.stripe_signature import sign

        path = f"/v1/webhooks/stripe/{self.tenant['tenant_id']}"
        headers = {"Stripe-Signature": sign(payload, self.tenant["webhook_secret"])}
        return await self.call(
            "POST", "reconciliation", path, content=payload, headers=headers, queue=queue, deadline=300
        )

    async def pay(self, s: Story, charge: StripeCharge, stage_at: float) -> None:
        run = self.run
        s.target = stage_at + aim.AIM_MS / 1000 * run.rng.uniform(-1, 1)
        lead = run.aim.lead("money")
        if s.target - lead < time.time():
            s.skipped, s.raced = "too late to aim", False
            return
        await run.aim.wait("money", s.target)
        s.sent_at = time.time()
        r = await self.stripe(charge.invoice_paid(), queue=False)
        if r.status_code >= 300:
            s.error = f"invoice.paid answered {r.status_code}: {r.text[:200]}"
            return
        listed = await self.payments_of(s)
        acknowledged = [
            ts(p["acknowledged_at"]) for p in listed if p.get("source") == "stripe" and p.get("acknowledged_at")
        ]
        if not acknowledged:
            s.error = "the payment is not listed by reconciliation"
            return
        s.acknowledged_at = min(acknowledged)
        run.aim.learn("money", s.sent_at, s.acknowledged_at)

    async def payments_of(self, s: Story) -> list[dict]:
        r = await self.call("GET", "reconciliation", f"/v1/payments?invoice_id={s.invoice_id}")
        return r.json().get("data", []) if r.status_code == 200 else []

    async def timers(self, invoice_id: str) -> list[dict]:
        r = await self.call("GET", "scheduler", f"/v1/invoices/{invoice_id}/timers")
        return r.json().get("timers", []) if r.status_code == 200 else []

    async def verdict(self, timeout: float) -> dict:
        from dunning_tools.chaos import money_checks

        return await money_checks.verdict(self, timeout)
