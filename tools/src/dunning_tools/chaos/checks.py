"""What a chaos run (`dunning_tools.chaos`) checks, from what the providers received (the SMTP
server's Maildir headers, the Twilio stand-in's messages and the webhook receiver's requests: each a
`Mail` of its channel, chaos.channels) and the services' public APIs only: the scheduler's timers, the
notifier's deliveries, reconciliation's payments and invoice-ingest's invoices.

Rules, as printed with the figures:
- violation (promise 1): a reminder received whose stage was scheduled at or after the
  acknowledged_at reconciliation reports for the payment or credit note that settled its invoice;
  for an invoice voided or written off (acknowledged by invoice-ingest, not yet under the payments
  watermark), a reminder whose stage fired after the scheduler had applied the stop: a stage scheduled
  after one the stop cancelled (stages fire in time order, and the stop cancels all still scheduled).
  A reminder of such an invoice scheduled after the stop's acknowledgement but fired before the
  scheduler applied it is counted apart ("stop window": what the README says holds for voids and
  write-offs until the firing gate covers them);
- lost (promise 2): a stage of an invoice left unpaid that was never received (every stage is due
  before the checks start), or a stage the scheduler shows fired that was never received;
- duplicate (promise 3): one (invoice, stage, channel) or one Message-ID (an SMS's sid, a webhook's
  `webhook-id`) received twice or more; explained only if the notifier reports in_doubt_attempts >= 1
  for that delivery (the provider window, counted per channel);
- lateness (promise 4): X-Received-At minus the stage's scheduled time (X-Dunning-Scheduled-At, or
  the scheduler's scheduled_at); "healthy" stages were scheduled outside every fault window: from
  1 s before a kill (or crash) until `healthy_margin` s after the restarted process logged
  `service.started`, and from 1 s before the relay pause until `healthy_margin` s after its resume.
"""

import asyncio
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import overload

STAGES = ("pre_due", "soft", "firm", "final")  # the run's policy
RACE_MS = 50.0  # stops are aimed within +-50 ms of a stage's scheduled time
# The stops raced, with their shares: payments (Stripe webhook, POST /v1/payments) and settling credit
# notes are acknowledged by reconciliation (payments watermark); voids, write-offs, holds, disputes,
# promises and plans by invoice-ingest (stops watermark); a due-date change is raced too (a re-plan).
KINDS = {
    "stripe": 0.09,
    "api": 0.09,
    "credit_note": 0.08,
    "void": 0.08,
    "write_off": 0.06,
    "hold_invoice": 0.1,
    "hold_customer": 0.08,
    "dispute": 0.12,
    "promise": 0.11,
    "plan": 0.09,
    "due_date": 0.1,
}
PAUSES = ("hold_invoice", "hold_customer", "dispute", "promise", "plan")
UNDER_WATERMARK = tuple(k for k in KINDS if k != "due_date")
DETAILS_SAMPLE = 300  # timelines read besides every raced invoice's
CLOSED_BY_INGEST = ("invoice_voided", "invoice_written_off")  # StagesCancelled reasons of ingest's stops
STABLE_SECONDS = 5.0  # mail count unchanged this long (with nothing pending) before the full check
TERMINAL = ("fired", "cancelled", "skipped")


@overload
def ts(text: str) -> float: ...
@overload
def ts(text: None) -> None: ...
def ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def spread_of(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": _r(pct(values, 0.5)),
        "p99": _r(pct(values, 0.99)),
        "max": _r(max(values) if values else None),
    }


@dataclass
class Mail:
    invoice_id: str
    stage: str
    channel: str
    delivery_id: str
    message_id: str
    received_at: float | None
    scheduled_at: float | None  # X-Dunning-Scheduled-At, when the notifier sets it


@dataclass
class State:
    quiescent: bool
    waited: float
    end: float
    timers: dict[str, dict | None] = field(default_factory=dict)  # invoice id -> scheduler's answer
    deliveries: list[dict] = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)
    credit_notes: list[dict] = field(default_factory=list)
    ingest_status: dict[str, str] = field(default_factory=dict)  # invoice id -> paid | void | written_off
    details: dict[str, dict] = field(default_factory=dict)  # invoice id -> GET /v1/invoices/{id} (timeline)
    mails: list[Mail] = field(default_factory=list)
    waiting_on: dict = field(default_factory=dict)


def read_mail(maildir: Path, tenant_id: str) -> list[Mail]:
    """Headers only, straight from the Maildir files (tens of thousands parse in a second or two)."""
    parser = BytesHeaderParser()
    out = []
    for sub in ("new", "cur"):
        if not (maildir / sub).is_dir():
            continue
        for entry in os.scandir(maildir / sub):
            with open(entry.path, "rb") as f:
                head = f.read(16384)
            end = head.find(b"\r\n\r\n")
            h = parser.parsebytes(head[: end + 2] if end >= 0 else head)
            if h["X-Dunning-Tenant-Id"] != tenant_id:
                continue
            out.append(
                Mail(
                    str(h["X-Dunning-Invoice-Id"]),
                    str(h["X-Dunning-Stage"]),
                    str(h["X-Dunning-Channel"] or "email"),
                    str(h["X-Dunning-Delivery-Id"] or ""),
                    str(h["Message-ID"] or ""),
                    ts(h["X-Received-At"]),
                    ts(h["X-Dunning-Scheduled-At"]),
                )
            )
    return out


def mail_count(maildir: Path) -> int:
    return len(os.listdir(maildir / "new")) if (maildir / "new").is_dir() else 0


# -- collecting the services' view ----------------------------------------------------------------


async def pages(run, url: str, limit: int, **params) -> list:
    """Every item of a list route (the one pagination style: `limit`, `cursor` -> `data`, `next_cursor`)."""
    out, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await run.get(url, **query)
        r.raise_for_status()
        body = r.json()
        out += body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return out


async def fetch_timers(run, invoice_ids: list[str]) -> dict[str, dict | None]:
    sched = run.stack.url("scheduler")
    sem = asyncio.Semaphore(16)

    async def one(invoice_id: str):
        async with sem:
            r = await run.get(f"{sched}/v1/invoices/{invoice_id}/timers")
        return invoice_id, (r.json() if r.status_code == 200 else None)

    return dict(await asyncio.gather(*(one(i) for i in invoice_ids)))


def settled_view(view: dict | None, held: bool = False) -> bool:
    """Every timer decided (fired, cancelled or skipped; paused too if the invoice is `held`: a pause
    the run leaves in force), for a planned invoice."""
    done = (*TERMINAL, "paused") if held else TERMINAL
    return bool(view and view.get("planned") and view["timers"] and all(t["state"] in done for t in view["timers"]))


def held_at_end(run) -> set[str]:
    """Invoices the run leaves paused: a hold kept on, a dispute left open, a pause not acknowledged."""
    return {
        p.invoice_id
        for p in run.payments
        if p.via in PAUSES and (p.outcome in ("kept_on", "open") or p.acknowledged_at is None)
    }


async def fetch_details(run, invoice_ids: list[str]) -> dict[str, dict]:
    ingest = run.stack.url("invoice-ingest")
    sem = asyncio.Semaphore(16)

    async def one(invoice_id: str):
        async with sem:
            r = await run.get(f"{ingest}/v1/invoices/{invoice_id}")
        return invoice_id, (r.json() if r.status_code == 200 else {})

    return dict(await asyncio.gather(*(one(i) for i in invoice_ids)))


async def notifier_busy(run) -> bool:
    url = f"{run.stack.url('notifier')}/v1/deliveries"
    for state in ("pending", "sending"):
        r = await run.get(url, state=state, limit=1)
        if r.status_code == 200 and r.json()["data"]:
            return True
    return False


async def quiesce(run) -> State:
    """Wait until no work is due: every timer decided, every fired stage's delivery done, nothing
    pending at the notifier and what the providers keep (mails, SMS, webhooks) stable; bounded by the
    run's quiesce_timeout."""
    from dunning_tools.chaos import channels  # it builds this module's Mail records

    started = time.time()
    deadline = started + run.cfg.quiesce_timeout
    maildir = run.stack.workdir / "mail"
    state = State(False, 0.0, 0.0)
    last_count: tuple = ()
    stable_since = time.time()
    while True:
        count = (mail_count(maildir), *channels.activity(run))
        if count != last_count:
            last_count, stable_since = count, time.time()
        stable = time.time() - stable_since >= STABLE_SECONDS
        busy = stable and await notifier_busy(run)
        if not stable or busy:  # what the wait is on, for the report when it times out
            state.waiting_on = {"notifier_pending_or_sending": busy, "mails_sms_webhooks_still_arriving": not stable}
        if stable and not busy:
            held = held_at_end(run)
            todo = [
                inv.id for inv in run.invoices if inv.id and not settled_view(state.timers.get(inv.id), inv.id in held)
            ]
            state.timers.update(await fetch_timers(run, todo))
            undecided = [i for i in todo if not settled_view(state.timers.get(i), i in held)]
            state.deliveries = await pages(run, f"{run.stack.url('notifier')}/v1/deliveries", 500)
            done = {
                (d["invoice_id"], d["stage"], d["channel"])
                for d in state.deliveries
                if d["state"] in ("sent", "failed", "cancelled")
            }
            undelivered = [
                (i, t["stage"])
                for i, view in state.timers.items()
                if view
                for t in view["timers"]
                if t["state"] == "fired" and (i, t["stage"], t["channel"]) not in done
            ]
            state.waiting_on = {
                "undecided_invoices": len(undecided),
                "fired_not_delivered": len(undelivered),
                "examples": (undecided[:3], undelivered[:3]),
            }
            if not undecided and not undelivered and (mail_count(maildir), *channels.activity(run)) == count:
                state.quiescent = True
                break
            run.log(
                f"not quiet yet: {len(undecided)} invoices with undecided timers, "
                f"{len(undelivered)} fired stages not delivered"
            )
        if time.time() > deadline:
            run.log(f"NOT QUIESCENT after {run.cfg.quiesce_timeout:.0f} s: {state.waiting_on}")
            break
        await asyncio.sleep(2)
    state.waited = time.time() - started
    state.end = time.time()
    recon, ingest = run.stack.url("reconciliation"), run.stack.url("invoice-ingest")
    state.payments = await pages(run, f"{recon}/v1/payments", 500)
    state.credit_notes = await pages(run, f"{recon}/v1/credit-notes", 500)
    for status in ("paid", "void", "written_off"):
        closed = await pages(run, f"{ingest}/v1/invoices", 200, status=status)
        state.ingest_status.update({i["id"]: status for i in closed})
    if not state.quiescent:  # check with what there is
        missing = [inv.id for inv in run.invoices if inv.id and inv.id not in state.timers]
        state.timers.update(await fetch_timers(run, missing))
        state.deliveries = await pages(run, f"{run.stack.url('notifier')}/v1/deliveries", 500)
    state.mails = read_mail(maildir, run.tenant["tenant_id"]) + channels.received(run)
    delivery_of = {(d["invoice_id"], d["stage"], d["channel"]): d["delivery_id"] for d in state.deliveries}
    for m in state.mails:  # an SMS record carries no delivery id of ours
        m.delivery_id = m.delivery_id or delivery_of.get((m.invoice_id, m.stage, m.channel), "")
    issued = [inv for inv in run.invoices if inv.id]
    sample = [inv.id for inv in issued if inv.race] + [
        inv.id for inv in run.rng.sample(issued, min(DETAILS_SAMPLE, len(issued)))
    ]
    state.details = await fetch_details(run, sorted(set(sample)))
    await settle_timelines(run, state)
    run.log(
        f"quiescence {'reached' if state.quiescent else 'NOT reached'} after {state.waited:.1f} s; "
        f"{len(state.mails)} reminders received"
    )
    return state


async def settle_timelines(run, state: State, rounds: int = 15) -> None:
    """Timelines differing from what was received are read again for a while: invoice-ingest learns of
    a delivery from the notifier's event, a moment after the provider has it."""
    mailed: dict[str, set] = defaultdict(set)
    for m in state.mails:
        mailed[m.invoice_id].add((m.stage, m.channel))
    for _ in range(rounds):
        differ = [i for i, d in state.details.items() if sent_in_timeline(d) != mailed.get(i, set())]
        if not differ:
            return
        await asyncio.sleep(2)
        state.details.update(await fetch_details(run, differ))


def sent_in_timeline(detail: dict) -> set:
    return {(s["stage"], s["channel"]) for s in detail.get("timeline", []) if s["state"] == "sent"}


# -- the checks -----------------------------------------------------------------------------------


def _pairs(stage: str) -> list[tuple[str, str]]:
    from dunning_tools.chaos.channels import CHANNELS_OF

    return [(stage, channel) for channel in CHANNELS_OF[stage]]


def fault_windows(run) -> list[tuple[float, float, str]]:
    margin = run.cfg.healthy_margin
    out = []
    for f in run.faults:
        end = f.end or ((f.restarted_at or f.start) + 30)
        out.append((f.start - 1, end + margin, f"{f.kind} {f.target}"))
    return out


def count_by(items: list[dict], *fields: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[" / ".join(str(item.get(f)) for f in fields)] += 1
    return dict(out)


def analyse(run, state: State) -> dict:
    from dunning_tools.chaos import aim, infra, verdicts  # they use this module's helpers
    from dunning_tools.chaos.channels import CHANNELS_OF

    cfg = run.cfg
    windows = fault_windows(run)

    def healthy(s: float) -> bool:
        return not any(lo <= s <= hi for lo, hi, _ in windows)

    # Every stop on each invoice, and the earliest acknowledgement of a terminal one (settled, void,
    # written off): what the consistency figures compare with invoice-ingest's statuses.
    stops_of = verdicts.intervals(run, state)
    ack = {
        i: min(a for a, end, via in v if end == verdicts.INF and via not in PAUSES)
        for i, v in stops_of.items()
        if any(end == verdicts.INF and via not in PAUSES for _, end, via in v)
    }

    # Each stage's scheduled time: the scheduler's, else issued_at + offset (never planned).
    invoices = [inv for inv in run.invoices if inv.id]
    scheduled: dict[tuple[str, str, str], float] = {}
    timer: dict[tuple[str, str, str], dict] = {}
    unplanned, moved = [], []
    for inv in invoices:
        view = state.timers.get(inv.id)
        stages = {(t["stage"], t["channel"]): t for t in (view or {}).get("timers", [])}
        if not {(s, c) for s in STAGES for c in CHANNELS_OF[s]} <= set(stages):  # besides: promise_broken...
            unplanned.append(inv.id)
        for (name, channel), offset in ((sc, o) for s, o in zip(STAGES, cfg.offsets, strict=False) for sc in _pairs(s)):
            expected = inv.issued_at + offset
            t = stages.get((name, channel), {})
            key = (inv.id, name, channel)
            scheduled[key] = ts(t["scheduled_at"]) if "scheduled_at" in t else expected
            if "scheduled_at" in t:
                timer[key] = t
                if abs(scheduled[key] - expected) > 0.001:
                    moved.append(
                        {
                            "invoice_id": inv.id,
                            "stage": name,
                            "issued_at_plus_offset": iso(expected),
                            "scheduled_at": t["scheduled_at"],
                            "state": t["state"],
                            "reason": t["reason"],
                        }
                    )

    received: dict[tuple[str, str, str], list[Mail]] = defaultdict(list)
    by_message_id: dict[str, list[Mail]] = defaultdict(list)
    for m in state.mails:
        received[(m.invoice_id, m.stage, m.channel)].append(m)
        by_message_id[m.message_id].append(m)
    for copies in received.values():
        copies.sort(key=lambda m: m.received_at or 0)
    deliveries = {(d["invoice_id"], d["stage"], d["channel"]): d for d in state.deliveries}
    in_doubt_field = any("in_doubt_attempts" in d for d in state.deliveries)

    # 1 and 2: no reminder while a stop is in force, none lost, timelines as received.
    expected = {
        (inv.id, name, channel): inv.issued_at + offset
        for inv in invoices
        for name, offset in zip(STAGES, cfg.offsets, strict=False)
        for channel in CHANNELS_OF[name]
    }
    stage_time = {
        (inv.id, name): inv.issued_at + o for inv in invoices for name, o in zip(STAGES, cfg.offsets, strict=False)
    }
    timers_all = {
        (i, t["stage"], t["channel"]): t for i, view in state.timers.items() if view for t in view.get("timers", [])
    }
    verdict = verdicts.judge(run, state, received, timers_all, expected)
    violations, lost = verdict["violations"], verdict["lost"]

    # 3. None twice.
    duplicates = []
    for (invoice_id, stage, channel), copies in received.items():
        if len(copies) < 2:
            continue
        d = deliveries.get((invoice_id, stage, channel), {})
        in_doubt = d.get("in_doubt_attempts")
        first = copies[0].received_at or 0
        near_kill = [w for lo, hi, w in windows if w.startswith("kill notifier") and lo <= first <= hi]
        duplicates.append(
            {
                "invoice_id": invoice_id,
                "stage": stage,
                "channel": channel,
                "copies": len(copies),
                "message_ids": sorted({m.message_id for m in copies}),
                "received_at": [iso(m.received_at or 0) for m in copies],
                "delivery_attempts": d.get("attempts"),
                "in_doubt_attempts": in_doubt,
                "explained": bool(in_doubt and in_doubt >= 1),
                "notifier_kill_nearby": near_kill,
            }
        )
    message_id_dups = sum(len(v) > 1 for v in by_message_id.values())

    # 4. Lateness (first copy of each reminder).
    late_all, late_healthy = [], []
    by_10s: dict[int, list[float]] = defaultdict(list)
    by_channel: dict[str, list[float]] = defaultdict(list)
    for key, copies in received.items():
        s = copies[0].scheduled_at or scheduled.get(key)
        if s is None or copies[0].received_at is None:
            continue
        late_all.append(copies[0].received_at - s)
        by_10s[int((s - run.t0) // 10) * 10].append(late_all[-1])
        by_channel[key[2]].append(late_all[-1])
        if healthy(s):
            late_healthy.append(copies[0].received_at - s)

    # Stops raced: acknowledged within +-50 ms of the stage time they were aimed at, per kind.
    share = aim.shares(run.payments, lambda p: stage_time.get((p.invoice_id, p.stage)), RACE_MS)
    offsets_ms = [
        (p.acknowledged_at - s) * 1000
        for p in run.payments
        if p.acknowledged_at is not None and (s := stage_time.get((p.invoice_id, p.stage))) is not None
    ]
    within = sum(v["within"] for v in share.values())
    kills = [f for f in run.faults if f.kind in ("kill", "infra_kill")]
    by_service: dict[str, int] = defaultdict(int)
    for f in kills:
        by_service[f.target.split("#")[0]] += 1
    sent_though_cancelled = [k for k in received if timer.get(k, {}).get("state") == "cancelled"]
    settled_ids = set(ack)
    unexplained = [d for d in duplicates if not d["explained"]]
    # the provider window per channel: (invoice, stage, channel) received twice or more, explained or not
    dup_by_channel = {c: {"explained": 0, "unexplained": 0} for c in sorted({k[2] for k in received})}
    for d in duplicates:
        dup_by_channel[str(d["channel"])]["explained" if d["explained"] else "unexplained"] += 1
    report = {
        "ok": False,
        "config": {
            **{k: v for k, v in vars(cfg).items() if k != "workdir"},
            "workdir": str(run.stack.workdir),
            "offsets": cfg.offsets,
            "kill_window": cfg.kill_window,
            "pause_at": cfg.pause_at,
            "replicas": {n: run.stack.replicas.get(n, 1) for n in run.stack.ports.services},
        },
        "tenant_id": run.tenant["tenant_id"],
        "started_at": iso(run.t0),
        "invoices": {
            "issued": len(invoices),
            "not_issued": cfg.invoices - len(invoices),
            "stages": len(scheduled),
            "unplanned": len(unplanned),
            "scheduled_differs_from_issued_at_plus_offset": len(moved),
            "moved_examples": moved[:10],
            "idempotency_key_stuck_batches": run.idempotency_stuck,
        },
        "faults": {
            "kills": len(kills),
            "kills_by_service": dict(by_service),
            "restarts": sum(1 for f in run.faults if f.restarted_at),
            "restarted_and_started": sum(1 for f in run.faults if f.end and f.kind != "relay_pause"),
            "crashes": [
                {"target": f.target, "at": iso(f.start), "detail": f.detail[-600:]}
                for f in run.faults
                if f.kind == "crash"
            ],
            "relay": run.relay,
            "infrastructure": infra.summary(run),
            "exits_during_outages": [
                {"target": f.target, "at": iso(f.start)} for f in run.faults if f.kind == "outage_exit"
            ],
            "windows": [(iso(lo), iso(hi), w) for lo, hi, w in windows],
        },
        "payments": {
            "raced": len(run.payments),
            "acknowledged": sum(1 for p in run.payments if p.status and p.status < 300),
            "settled": sum(1 for p in run.payments if p.settled),
            "by_channel": {v: sum(p.via == v for p in run.payments) for v in KINDS},
            "retried": sum(p.attempts > 1 for p in run.payments),
            "failed": [{"reference": p.reference, "error": p.error} for p in run.payments if p.error][:20],
            "ack_within_50ms_of_stage": within,
            "share_within_50ms_by_kind": share,
            **run.aim.verdict(share),
            "ack_minus_stage_ms": {
                "p1": _r(pct(offsets_ms, 0.01)),
                "p50": _r(pct(offsets_ms, 0.5)),
                "p99": _r(pct(offsets_ms, 0.99)),
            },
        },
        "received": {
            "reminders": len(state.mails),
            "distinct": len(received),
            "by_channel": count_by([vars(m) for m in state.mails], "channel"),
            "distinct_by_channel": count_by([{"channel": k[2]} for k in received], "channel"),
        },
        "violations": {
            "count": len(violations),
            "rule": "a reminder scheduled at or after a stop's acknowledged_at, fired while the stop was in force",
            "by_kind": count_by(violations, "via"),
            "scheduled_after_ack_ms": spread_of([v["scheduled_after_ack_ms"] for v in violations]),
            "items": violations[:100],
        },
        "lost": {
            "count": len({(i["invoice_id"], i["stage"]) for i in lost}),
            "by_reason": count_by(lost, "why", "timer_state"),
            "items": lost[:100],
        },
        "timelines": {
            "checked": verdict["timelines_checked"],
            "mismatches": len(verdict["timeline_mismatches"]),
            "in_doubt_explained": len(verdict["timeline_in_doubt"]),
            "in_doubt_items": verdict["timeline_in_doubt"][:20],
            "items": verdict["timeline_mismatches"][:20],
        },
        "pauses": {
            "outcomes": verdict["pause_outcomes"],
            "fired_not_received_explained_by_reminder_cancelled": verdict["reminder_cancelled_explained"],
        },
        "duplicates": {
            "count": len(duplicates),
            "unexplained": len(unexplained),
            "same_message_id": message_id_dups,
            "by_channel": dup_by_channel,
            "in_doubt_field_reported": in_doubt_field,
            "items": duplicates,
        },
        "consistency": {
            "sent_though_timer_cancelled": len(sent_though_cancelled),
            "received_for_unknown_stage": sum(1 for k in received if k not in scheduled and k not in timers_all),
            "failed_deliveries": sum(d["state"] == "failed" for d in state.deliveries),
            "stopped_not_closed_in_ingest": len(settled_ids - set(state.ingest_status)),
            "closed_in_ingest_not_stopped": len(set(state.ingest_status) - settled_ids),
            "ingest_status_of_stops": count_by(
                [{"via": p.via, "status": state.ingest_status.get(p.invoice_id)} for p in run.payments if p.settled],
                "via",
                "status",
            ),
        },
        "lateness_s": {
            "all": spread_of(late_all),
            "healthy": spread_of(late_healthy),
            "by_scheduled_10s": {t: spread_of(v) for t, v in sorted(by_10s.items())},
            "by_channel": {c: spread_of(v) for c, v in sorted(by_channel.items())},  # SMS: whole seconds
            "healthy_rule": f"scheduled outside [fault start - 1 s, process started (relay resumed)"
            f" + {cfg.healthy_margin:g} s] for every kill, crash and relay pause",
        },
        "quiescence": {"reached": state.quiescent, "waited_s": round(state.waited, 1), "waiting_on": state.waiting_on},
        "notes": run.notes,
    }
    report["ok"] = (
        state.quiescent
        and not violations
        and not report["lost"]["count"]
        and not unexplained
        and not aim.failing(report["payments"])
        and not verdict["timeline_mismatches"]
    )
    return report
