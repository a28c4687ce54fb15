"""The races of issue 10's firing rules, inside a chaos run (same stack, same faults): three tenants
of their own beside the run's main tenant, each customer with several invoices.

- `notice`: consolidation on; a customer's invoices (three, issued together) go out in consolidated
  notices; a payment of one of them is aimed at the notice's time (the earliest scheduled stage of
  the customer, read back from the scheduler).
- `window`: the invoices are planned with no window; then a send window is put in the settings that
  opens about 1.5 gaps after the first stages: the firing loop defers pre_due and soft to the
  opening (StageDeferred; spread over it), and a payment is aimed at a deferred stage's new time.
- `cap`: a quiet period after any contact; a customer's two invoices are issued a second apart, so
  the second one's stages are deferred by the quiet period after the first's; a payment of the
  second is aimed at its deferred time.

Each stage's time is its LATEST scheduled time: the scheduler's timer after every deferral, pull
into an earlier notice (that time is the notice's) or move, read once the run is quiet. Aiming reads
the timer ahead of its time (a stage deferred is raced at its new time; when the deferral is not
seen in time, e.g. the scheduler was killed, the invoice is not raced and the report says so).

Verdicts (chaos.policy_checks), from the timers, the deliveries topic (ReminderSent /
ReminderCancelled, with notice_id, and NoticeSent) and the SMTP server's Maildir:
- violation: a stage of a paid invoice scheduled at or after the payment's acknowledgement that went
  out (a ReminderSent, alone or as a notice's stage item);
- lost: a fired stage with neither a ReminderSent nor a ReminderCancelled; a stage of an unpaid
  invoice never fired;
- twice: a notice sent twice (two NoticeSent events of one notice_id) or a stage sent twice (two
  ReminderSent events of one (invoice, stage, channel)); more mails to a customer than sends;
- window: a mail to the window tenant received before the opening.
The per-kind +-50 ms share applies to the three kinds as to the others (aim.MIN_SHARE).
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools.chaos import aim
from dunning_tools.chaos.checks import STAGES, ts
from dunning_tools.testing.story import invoice_body

KINDS = ("notice", "window", "cap")
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
INVOICES_OF = {"notice": 3, "window": 2, "cap": 2}
RACE_SHARE = 0.6  # of each kind's customers: one payment raced


@dataclass
class Customer:
    kind: str
    index: int
    invoice_ids: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    email: str = ""
    issued_at: list[float] = field(default_factory=list)
    raced: bool = False


@dataclass
class Race:
    kind: str
    invoice_id: str
    stage: str
    target: float | None = None
    reference: str = ""
    sent_at: float | None = None
    acknowledged_at: float | None = None
    status: int | None = None
    error: str | None = None
    skipped: str | None = None  # why it was not raced
    raced: bool = True

    @property
    def via(self) -> str:
        return self.kind


class PolicyRaces:
    def __init__(self, run, customers: int):
        self.run, self.n = run, customers
        self.tenants: dict[str, dict] = {}
        self.customers: dict[str, list[Customer]] = {k: [] for k in KINDS}
        self.races: list[Race] = []
        self.tasks: list[asyncio.Future] = []
        self.opening: float | None = None  # the window tenant's opening (epoch)
        self.notes: list[str] = []

    def auth(self, kind: str) -> dict:
        return {"Authorization": f"Bearer {self.tenants[kind]['api_key']}", "Content-Type": "application/json"}

    async def call(
        self, kind: str, method: str, service: str, path: str, body: Any = None, *, queue=True, deadline=120
    ):
        url = f"{self.run.stack.url(service)}{path}"
        content = None if body is None else orjson.dumps(body)
        r, _ = await self.run.send(
            lambda _: self.run.client.request(method, url, content=content, headers=self.auth(kind)),
            deadline=deadline,
            queue=queue,
        )
        return r

    async def setup(self) -> None:
        """Tenants, policies and the settings known before the run (the window comes later)."""
        cfg = self.run.cfg
        policy = {
            "anchor": "issued_at",
            "stages": [{"name": n, "offset": f"PT{o:.3f}S"} for n, o in zip(STAGES, cfg.offsets, strict=False)],
        }
        settings = {
            "notice": {"consolidation": {"enabled": True}},
            "window": None,
            "cap": {"contact_caps": {"quiet_period": f"PT{max(3, round(cfg.gap / 3))}S"}},
        }
        for kind in KINDS:
            self.tenants[kind] = await create_tenant(self.run.stack.database_url, f"Chaos {kind} {self.run.run_id}")
            r = await self.call(kind, "PUT", "scheduler", "/v1/policy", policy)
            if r.status_code >= 300:
                raise RuntimeError(f"{kind}: PUT /v1/policy answered {r.status_code}: {r.text[:300]}")
            if settings[kind] is not None:
                r = await self.call(kind, "PUT", "scheduler", "/v1/settings", settings[kind])
                if r.status_code >= 300:
                    raise RuntimeError(f"{kind}: PUT /v1/settings answered {r.status_code}: {r.text[:300]}")

    # -- workload -------------------------------------------------------------------------------------
    async def issue(self, kind: str, customer: Customer, invoices: int) -> None:
        run = self.run
        customer.email = f"ap-{kind}-{run.run_id}-{customer.index}@example.com"
        body: dict[str, list[dict[str, Any]]] = {
            "invoices": [
                invoice_body(
                    f"{kind.upper()}-{run.run_id}-{customer.index}-{len(customer.numbers) + j}",
                    currency="EUR",
                    amount=f"{100 + customer.index % 900}.{j:02d}",
                    name=f"Customer {kind} {customer.index}",
                    email=customer.email,
                    locale="en-GB",
                    timezone="UTC",
                    customer_external_id=f"C-{kind}-{run.run_id}-{customer.index}",
                    issue_date=date.today() - timedelta(days=40),
                    due_date=date.today() - timedelta(days=10 - j),
                )
                for j in range(invoices)
            ]
        }
        r = await self.call(kind, "POST", "invoice-ingest", "/v1/invoices/bulk", body)
        if r.status_code != 200:
            raise RuntimeError(f"{kind}: bulk import answered {r.status_code}: {r.text[:300]}")
        for inv, result in zip(body["invoices"], r.json()["results"], strict=True):
            customer.invoice_ids.append(result["id"])
            customer.numbers.append(inv["number"])
            detail = await self.call(kind, "GET", "invoice-ingest", f"/v1/invoices/{result['id']}")
            customer.issued_at.append(ts(detail.json()["created_at"]))

    async def workload(self) -> None:
        """Issue every kind's customers over the run's spread (the window's all at once, first), race."""
        run, cfg = self.run, self.run.cfg
        window = [Customer("window", i) for i in range(self.n)]
        await asyncio.gather(*(self.issue("window", c, INVOICES_OF["window"]) for c in window))
        self.customers["window"] = window
        await self.put_window(min(c.issued_at[0] for c in window))
        for c in window:
            if run.rng.random() < RACE_SHARE:
                self.tasks.append(asyncio.ensure_future(self.race_deferred("window", c, run.rng.randrange(2))))
        every = cfg.spread / max(1, self.n)
        for i in range(self.n):
            await run.sleep_until(run.t0 + i * every)
            for kind in ("notice", "cap"):
                c = Customer(kind, i)
                self.customers[kind].append(c)
                self.tasks.append(asyncio.ensure_future(self.customer_story(kind, c)))
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def customer_story(self, kind: str, c: Customer) -> None:
        rng = self.run.rng
        try:
            if kind == "notice":
                await self.issue(kind, c, INVOICES_OF[kind])
                if rng.random() < RACE_SHARE:
                    await self.race_notice(c)
            else:  # cap: the second invoice a second later, its stages deferred by the quiet period
                await self.issue(kind, c, 1)
                await asyncio.sleep(1.0)
                await self.issue(kind, c, 1)
                if rng.random() < RACE_SHARE:
                    await self.race_deferred(kind, c, rng.randrange(len(STAGES)), invoice=1)
        except Exception as exc:  # reported; the verdicts cover what was issued
            self.notes.append(f"{kind} customer {c.index}: {exc!r}")

    async def put_window(self, first_issued: float) -> None:
        """The window, after the window tenant's invoices were planned with none: it opens 1.5 gaps
        after their first stage, so pre_due and soft are deferred to it at firing."""
        cfg = self.run.cfg
        opening = datetime.fromtimestamp(first_issued + cfg.offsets[0] + 1.5 * cfg.gap, UTC).replace(microsecond=0)
        end = min(opening + timedelta(hours=2), opening.replace(hour=23, minute=59, second=59))
        self.opening = opening.timestamp()
        first = self.customers["window"][0].invoice_ids[0]
        for _ in range(100):  # planned (with no window) before the window is put
            r = await self.call("window", "GET", "scheduler", f"/v1/invoices/{first}/timers")
            if r.status_code == 200 and r.json()["planned"]:
                break
            await asyncio.sleep(0.1)
        window = {
            "days": EVERY_DAY,
            "start": opening.strftime("%H:%M:%S"),
            "end": end.strftime("%H:%M:%S"),
            # a gap wide: the raced payments aimed at the deferred times spread over it, so one fault
            # (a killed reconciliation) at the opening does not delay them all at once
            "spread": f"PT{max(4, round(cfg.gap))}S",
        }
        r = await self.call("window", "PUT", "scheduler", "/v1/settings", {"send_window": window})
        if r.status_code >= 300:
            raise RuntimeError(f"window: PUT /v1/settings answered {r.status_code}: {r.text[:300]}")

    # -- races ----------------------------------------------------------------------------------------
    async def timers(self, kind: str, invoice_id: str) -> dict[str, dict]:
        r = await self.call(kind, "GET", "scheduler", f"/v1/invoices/{invoice_id}/timers")
        return {t["stage"]: t for t in r.json().get("timers", [])} if r.status_code == 200 else {}

    async def race_notice(self, c: Customer) -> None:
        """Pay one of the customer's invoices at its first notice's time."""
        payer = self.run.rng.randrange(len(c.invoice_ids))
        race = Race("notice", c.invoice_ids[payer], STAGES[0])
        self.races.append(race)
        times: list[float] = []
        for _ in range(30):  # planned a moment after the import
            views = [(await self.timers("notice", i)).get(STAGES[0]) for i in c.invoice_ids]
            times = [ts(t["scheduled_at"]) for t in views if t and t["state"] == "scheduled"]
            if len(times) == len(c.invoice_ids):
                break
            await asyncio.sleep(0.1)
        if not times:
            race.skipped = "no scheduled first stage when aimed"
            return
        await self.pay("notice", c, payer, race, min(times))

    async def race_deferred(self, kind: str, c: Customer, k: int, invoice: int = 0) -> None:
        """Pay the invoice at the new time of its stage `k`, once the firing loop has deferred it."""
        race = Race(kind, c.invoice_ids[invoice], STAGES[k])
        self.races.append(race)
        planned = c.issued_at[invoice] + self.run.cfg.offsets[k]
        await self.run.sleep_until(planned + 0.2)
        # The firing loop defers a stage once it is due past the gate (which lags while a service is down).
        give_up = planned + max(10.0, 1.5 * self.run.cfg.gap)
        while time.time() < give_up:
            t = (await self.timers(kind, race.invoice_id)).get(race.stage)
            if t and t["state"] == "scheduled" and ts(t["scheduled_at"]) > planned + 0.5:
                await self.pay(kind, c, invoice, race, ts(t["scheduled_at"]))
                return
            if t and t["state"] != "scheduled":
                race.skipped = f"{t['state']} without a deferral"
                return
            await asyncio.sleep(0.2)
        race.skipped = f"the deferral was not seen within {give_up - planned:.0f} s"

    async def pay(self, kind: str, c: Customer, invoice: int, race: Race, at: float) -> None:
        run = self.run
        race.target = at + aim.AIM_MS / 1000 * run.rng.uniform(-1, 1)
        race.reference = f"PAY-{kind}-{run.run_id}-{c.index}"
        c.raced = True
        body = {
            "invoice_id": race.invoice_id,
            "amount": f"{100 + c.index % 900}.{invoice if kind == 'notice' else 0:02d}",
            "currency": "EUR",
            "reference": race.reference,
        }
        lead = run.aim.lead(kind)
        if race.target - lead < time.time():
            race.skipped = "too late to aim"
            return
        await run.aim.wait(kind, race.target)
        body["received_at"] = datetime.now(UTC).isoformat()
        race.sent_at = time.time()
        r = await self.call(kind, "POST", "reconciliation", "/v1/payments", body, queue=False, deadline=300)
        race.status = r.status_code
        if r.status_code >= 300:
            race.error = r.text[:300]
            return
        race.acknowledged_at = ts(r.json()["acknowledged_at"])
        run.aim.learn(kind, race.sent_at, race.acknowledged_at)

    async def verdict(self, timeout: float) -> dict:
        from dunning_tools.chaos import policy_checks

        return await policy_checks.verdict(self, timeout)
