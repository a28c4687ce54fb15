"""The agency hand-off raced inside a chaos run (same stack, same faults), for a tenant of its own:
its agency in export mode, its policy `collections` (channel `agency`) first, then soft, firm and
final (e-mail) at the run's stage offsets (the case is made first, so that it exists in time even
when the notifier is behind).

Each customer has one invoice. Its `collections` stage makes a case (awaiting acknowledgement); for
RACE_SHARE of them the agency's acknowledgement (`POST /v1/agency/cases/{id}/acknowledge`, which hands
the invoice over: InvoiceHandedToAgency, the scheduler's `with_agency` stop) is aimed at soft's,
firm's or final's time (+-25 ms, the run's aim learnt for the kind `agency`; a later stage when the
case is not there a second before); the others are never acknowledged and owe every stage.

Verdicts, once every timer of these invoices is decided and the notifier has nothing pending:
- violation: a reminder received of a stage that fired after the scheduler applied the stop (a stage
  scheduled after one the stop cancelled: stages fire in time order); a reminder of a stage scheduled
  at or after `handed_over_at` but fired before the stop reached the scheduler is counted apart
  (`stop_window`, as for voids);
- the `handed_over` notice: received once for every invoice handed over (none: lost; more: twice,
  unless its delivery shows an attempt in doubt);
- lost: a stage that fired and was never received, unless the notifier cancelled its delivery for the
  stop; every stage of an invoice never handed over;
- twice: one (invoice, stage, channel) received twice or more, no attempt in doubt.
"""

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools.chaos import aim
from dunning_tools.chaos.checks import RACE_MS, read_mail, ts
from dunning_tools.testing.story import invoice_body

STAGES = (("collections", "agency"), ("soft", "email"), ("firm", "email"), ("final", "email"))
RACED_AT = (1, 2, 3)  # the hand-off is aimed at soft's, firm's or final's time
RACE_SHARE = 0.6
NOTICE = "handed_over"
DECIDED = ("fired", "cancelled", "skipped")


@dataclass
class Hand:
    index: int
    invoice_id: str | None = None
    issued_at: float | None = None
    stage: str | None = None  # the stage the hand-off is aimed at; None: never handed over
    stage_at: float | None = None  # the aimed stage's time (issued_at + its offset)
    target: float | None = None
    case_id: str | None = None
    sent_at: float | None = None
    acknowledged_at: float | None = None  # the case's handed_over_at
    status: int | None = None
    error: str | None = None
    skipped: str | None = None
    raced: bool = True
    via: str = "agency"


class AgencyRaces:
    def __init__(self, run, customers: int):
        self.run, self.n = run, customers
        self.tenant: dict[str, Any] = {}
        self.hands: list[Hand] = []
        self.notes: list[str] = []

    async def call(self, method: str, service: str, path: str, body: Any = None, *, queue=True, deadline=120):
        url = f"{self.run.stack.url(service)}{path}"
        content = None if body is None else orjson.dumps(body)
        headers = {"Authorization": f"Bearer {self.tenant['api_key']}", "Content-Type": "application/json"}
        r, _ = await self.run.send(
            lambda _: self.run.client.request(method, url, content=content, headers=headers),
            deadline=deadline,
            queue=queue,
        )
        return r

    async def setup(self) -> None:
        run = self.run
        self.tenant = await create_tenant(run.stack.database_url, f"Chaos agency {run.run_id}")
        agency = {"name": "Chaos Collections Ltd", "mode": "export", "contact_email": "cases@agency.example.com"}
        policy = {
            "anchor": "issued_at",
            "stages": [
                {"name": n, "offset": f"PT{o:.3f}S", "channels": [c]}
                for (n, c), o in zip(STAGES, run.cfg.offsets, strict=True)
            ],
        }
        for service, path, body in (("notifier", "/v1/agency", agency), ("scheduler", "/v1/policy", policy)):
            r = await self.call("PUT", service, path, body)
            if r.status_code >= 300:
                raise RuntimeError(f"agency: PUT {path} answered {r.status_code}: {r.text[:300]}")

    async def workload(self) -> None:
        run = self.run
        every = run.cfg.spread / max(1, self.n)
        tasks = []
        for i in range(self.n):
            await run.sleep_until(run.t0 + i * every)
            hand = Hand(i)
            if run.rng.random() < RACE_SHARE:
                hand.stage = STAGES[run.rng.choice(RACED_AT)][0]
            self.hands.append(hand)
            tasks.append(asyncio.ensure_future(self.story(hand)))
        await asyncio.gather(*tasks)

    async def story(self, h: Hand) -> None:
        try:
            await self.issue(h)
            if h.stage is not None:
                await self.hand_over(h)
        except Exception as exc:  # reported; the verdicts cover what was issued
            h.error = repr(exc)
            self.notes.append(f"agency {h.index}: {exc!r}")

    async def issue(self, h: Hand) -> None:
        key = f"AGENCY-{self.run.run_id}-{h.index}"
        body = invoice_body(
            key,
            currency="EUR",
            amount=f"{300 + h.index}.00",
            name=f"Agency customer {h.index}",
            email=f"ap-agency-{self.run.run_id}-{h.index}@example.com",
            locale="en-GB",
            timezone="UTC",
            customer_external_id=f"C-{key}",
            issue_date=date.today() - timedelta(days=60),
            due_date=date.today() - timedelta(days=30),
        )
        r = await self.call("POST", "invoice-ingest", "/v1/invoices/bulk", {"invoices": [body]})
        if r.status_code != 200:
            raise RuntimeError(f"bulk import answered {r.status_code}: {r.text[:300]}")
        h.invoice_id = r.json()["results"][0]["id"]
        detail = await self.call("GET", "invoice-ingest", f"/v1/invoices/{h.invoice_id}")
        h.issued_at = ts(detail.json()["created_at"])

    async def hand_over(self, h: Hand) -> None:
        """The case (made when `collections` fires), then its acknowledgement aimed at the stage's time."""
        run, offsets = self.run, self.run.cfg.offsets
        assert h.issued_at is not None and h.stage is not None, "issued and chosen for a hand-off"
        names = [n for n, _ in STAGES]
        await run.sleep_until(h.issued_at + offsets[0])
        for k in range(names.index(h.stage), len(STAGES)):
            h.stage, h.stage_at = names[k], h.issued_at + offsets[k]
            while h.case_id is None and time.time() < h.stage_at - 1.0:
                r = await self.call("GET", "notifier", f"/v1/agency/cases?invoice_id={h.invoice_id}")
                found = r.json().get("data", []) if r.status_code == 200 else []
                h.case_id = found[0]["case_id"] if found else None
                if h.case_id is None:
                    await asyncio.sleep(0.3)
            if h.case_id is not None:
                break
        assert h.stage_at is not None, "a stage to aim at"
        h.target = h.stage_at + aim.AIM_MS / 1000 * run.rng.uniform(-1, 1)
        lead = run.aim.lead("agency")
        if h.case_id is None or h.target - lead < time.time():
            h.skipped, h.raced = ("no case in time" if h.case_id is None else "too late to aim"), False
            return
        await run.aim.wait("agency", h.target)
        h.sent_at = time.time()
        path = f"/v1/agency/cases/{h.case_id}/acknowledge"
        r = await self.call("POST", "notifier", path, {"acknowledged_by": "chaos"}, queue=False, deadline=300)
        h.status = r.status_code
        if r.status_code >= 300:
            h.error = r.text[:300]
            return
        h.acknowledged_at = ts(r.json()["handed_over_at"])
        if h.acknowledged_at is not None:
            run.aim.learn("agency", h.sent_at, h.acknowledged_at)

    # -- verdicts -------------------------------------------------------------------------------------
    async def quiet(self, timeout: float) -> dict[str, list[dict]]:
        give_up = time.time() + timeout
        views: dict[str, list[dict]] = {}
        ids = [h.invoice_id for h in self.hands if h.invoice_id]
        while True:
            for i in ids:
                if not views.get(i) or any(t["state"] not in DECIDED for t in views[i]):
                    r = await self.call("GET", "scheduler", f"/v1/invoices/{i}/timers")
                    views[i] = r.json().get("timers", []) if r.status_code == 200 else []
            busy = False
            for state in ("pending", "sending"):
                r = await self.call("GET", "notifier", f"/v1/deliveries?state={state}&limit=1")
                busy = busy or (r.status_code == 200 and bool(r.json()["data"]))
            if not busy and all(views[i] and all(t["state"] in DECIDED for t in views[i]) for i in ids):
                return views
            if time.time() > give_up:
                self.notes.append("agency: not every timer decided at the end")
                return views
            await asyncio.sleep(2)

    async def verdict(self, timeout: float) -> dict:
        views = await self.quiet(timeout)
        await asyncio.sleep(3)  # the last mail written
        deliveries: dict[tuple[str, str, str], dict] = {}
        for h in self.hands:
            if h.invoice_id:
                r = await self.call("GET", "notifier", f"/v1/deliveries?invoice_id={h.invoice_id}&limit=100")
                for d in r.json().get("data", []) if r.status_code == 200 else []:
                    deliveries[(d["invoice_id"], d["stage"], d["channel"])] = d
        mails: dict[tuple[str, str, str], int] = defaultdict(int)
        for m in read_mail(self.run.stack.workdir / "mail", self.tenant["tenant_id"]):
            mails[(m.invoice_id, m.stage, m.channel)] += 1
        return judge(self, views, deliveries, mails)


def _in_doubt(h: Hand, d: dict) -> bool:
    """The case went (the agency acknowledged it) but its delivery's outcome was lost with a killed
    notifier, and the hand-off's own stop cancelled the retry first: the provider window, not a loss
    (docs/cancel-guarantee.md, the notifier's windows)."""
    return h.acknowledged_at is not None and d.get("state") == "cancelled" and (d.get("in_doubt_attempts") or 0) >= 1


def judge(races: AgencyRaces, views: dict, deliveries: dict, mails: dict) -> dict:
    violations, stop_window, lost, twice = [], [], [], []
    for h in races.hands:
        if not h.invoice_id:
            continue
        timers = sorted(views.get(h.invoice_id, []), key=lambda t: t["scheduled_at"])
        cancelled = [ts(t["scheduled_at"]) for t in timers if t["state"] == "cancelled"]
        for t in timers:
            key = (h.invoice_id, t["stage"], t["channel"])
            got, d = mails.get(key, 0), deliveries.get(key, {})
            item = {"invoice_id": h.invoice_id, "stage": t["stage"], "state": t["state"], "received": got}
            s = ts(t["scheduled_at"])
            if t["channel"] == "email" and got:
                if cancelled and s > min(cancelled):
                    violations.append(item)
                elif h.acknowledged_at is not None and s >= h.acknowledged_at:
                    stop_window.append(item)
            if t["channel"] == "email" and t["state"] == "fired" and not got and d.get("state") != "cancelled":
                lost.append({**item, "why": "fired, never received, delivery not cancelled"})
            if t["channel"] == "agency" and t["state"] == "fired" and d.get("state") != "sent" and not _in_doubt(h, d):
                lost.append({**item, "why": f"the case's delivery is {d.get('state')}"})
            if h.acknowledged_at is None and t["state"] != "fired":
                lost.append({**item, "why": "never handed over, stage not fired"})
            if got > 1 and not (d.get("in_doubt_attempts") or 0) >= 1:
                twice.append(item)
        if h.acknowledged_at is not None:
            notice = (h.invoice_id, NOTICE, "email")
            got, d = mails.get(notice, 0), deliveries.get(notice, {})
            item = {"invoice_id": h.invoice_id, "stage": NOTICE, "received": got, "delivery": d.get("state")}
            if not got:
                lost.append({**item, "why": "handed over, no handed_over notice"})
            elif got > 1 and not (d.get("in_doubt_attempts") or 0) >= 1:
                twice.append(item)
    share = aim.shares(races.hands, lambda h: h.stage_at, RACE_MS)
    handed = [h for h in races.hands if h.acknowledged_at is not None]
    report = {
        "invoices": sum(1 for h in races.hands if h.invoice_id),
        "handed_over": len(handed),
        "raced": sum(1 for h in races.hands if h.stage is not None),
        "not_raced": [{"index": h.index, "why": h.skipped} for h in races.hands if h.skipped][:20],
        "failed": [{"index": h.index, "error": h.error} for h in races.hands if h.error][:20],
        "share_within_50ms": share,
        **races.run.aim.verdict(share),
        "counts": {"violations": len(violations), "lost": len(lost), "twice": len(twice)},
        "stop_window": len(stop_window),
        "violations": violations[:20],
        "lost": lost[:20],
        "twice": twice[:20],
        "notes": races.notes,
    }
    report["ok"] = not violations and not lost and not twice and not aim.failing(report) and bool(handed)
    return report


def summary(p: dict) -> str:
    if "error" in p or "skipped" in p:
        return p.get("error") or p["skipped"]
    shares = ", ".join(f"{k} {v['within']}/{v['acknowledged']}" for k, v in p["share_within_50ms"].items())
    return (
        f"{p['invoices']} invoices, {p['raced']} hand-offs raced, {p['handed_over']} handed over (within +-50 ms:"
        f" {shares or 'none'}"
        + aim.below_note(p)
        + f"); violations {p['counts']['violations']}, lost {p['counts']['lost']}, twice {p['counts']['twice']};"
        f" stop window {p['stop_window']}"
    )
