"""What a chaos run (`dunning_tools.chaos`) checks, from what the SMTP server received (the
Maildir's headers) and the services' public APIs only: the scheduler's timers, the notifier's
deliveries, reconciliation's payments and invoice-ingest's invoices.

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
- duplicate (promise 3): one (invoice, stage, channel) or one Message-ID received twice or more;
  explained only if the notifier reports in_doubt_attempts >= 1 for that delivery;
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
from typing import Any, overload

STAGES = ("pre_due", "soft", "firm", "final")  # the run's policy
RACE_MS = 50.0  # stops are aimed within +-50 ms of a stage's scheduled time
# The stops raced, with their shares: payments (Stripe webhook, POST /v1/payments) and settling credit
# notes are acknowledged by reconciliation (under the payments watermark); voids and write-offs by ingest.
KINDS = {"stripe": 0.25, "api": 0.25, "credit_note": 0.2, "void": 0.2, "write_off": 0.1}
UNDER_WATERMARK = ("stripe", "api", "credit_note")
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


def settled_view(view: dict | None) -> bool:
    """Every timer decided (fired, cancelled or skipped), for a planned invoice."""
    return bool(view and view.get("planned") and view["timers"] and all(t["state"] in TERMINAL for t in view["timers"]))


async def notifier_busy(run) -> bool:
    url = f"{run.stack.url('notifier')}/v1/deliveries"
    for state in ("pending", "sending"):
        r = await run.get(url, state=state, limit=1)
        if r.status_code == 200 and r.json()["data"]:
            return True
    return False


async def quiesce(run) -> State:
    """Wait until no work is due: every timer decided, every fired stage's delivery done, nothing
    pending at the notifier and the mail count stable; bounded by the run's quiesce_timeout."""
    started = time.time()
    deadline = started + run.cfg.quiesce_timeout
    maildir = run.stack.workdir / "mail"
    state = State(False, 0.0, 0.0)
    last_count, stable_since = -1, time.time()
    while True:
        count = mail_count(maildir)
        if count != last_count:
            last_count, stable_since = count, time.time()
        if time.time() - stable_since >= STABLE_SECONDS and not await notifier_busy(run):
            todo = [inv.id for inv in run.invoices if inv.id and not settled_view(state.timers.get(inv.id))]
            state.timers.update(await fetch_timers(run, todo))
            undecided = [i for i in todo if not settled_view(state.timers.get(i))]
            state.deliveries = await pages(run, f"{run.stack.url('notifier')}/v1/deliveries", 500)
            done = {
                (d["invoice_id"], d["stage"], d["channel"])
                for d in state.deliveries
                if d["state"] in ("sent", "failed")
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
            if not undecided and not undelivered and mail_count(maildir) == count:
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
    state.mails = read_mail(maildir, run.tenant["tenant_id"])
    run.log(
        f"quiescence {'reached' if state.quiescent else 'NOT reached'} after {state.waited:.1f} s; "
        f"{len(state.mails)} reminders received"
    )
    return state


# -- the checks -----------------------------------------------------------------------------------


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
    cfg, pays = run.cfg, {p.reference: p for p in run.payments}  # every raced stop, by its reference
    windows = fault_windows(run)
    pause = next(((f.start, f.end or state.end) for f in run.faults if f.kind == "relay_pause"), None)

    def healthy(s: float) -> bool:
        return not any(lo <= s <= hi for lo, hi, _ in windows)

    # Payments and credit notes as reconciliation reports them, voids and write-offs as invoice-ingest
    # answered them: the earliest settling acknowledgement per invoice.
    ack: dict[str, float] = {}
    for row in state.payments + state.credit_notes:
        a = ts(row["acknowledged_at"])
        if p := pays.get(row["reference"]):
            p.acknowledged_at, p.settled = a, row["settled"]
        if row["settled"] and row["invoice_id"]:
            ack[row["invoice_id"]] = min(a, ack.get(row["invoice_id"], a))
    closed_by_ingest = {p.invoice_id for p in run.payments if not p.under_watermark and p.acknowledged_at}
    for p in run.payments:
        if p.invoice_id in closed_by_ingest and p.acknowledged_at:
            ack[p.invoice_id] = min(p.acknowledged_at, ack.get(p.invoice_id, p.acknowledged_at))
    by_invoice_payment = {p.invoice_id: p for p in run.payments}

    # Each stage's scheduled time: the scheduler's, else issued_at + offset (never planned).
    invoices = [inv for inv in run.invoices if inv.id]
    scheduled: dict[tuple[str, str, str], float] = {}
    timer: dict[tuple[str, str, str], dict] = {}
    unplanned, moved = [], []
    for inv in invoices:
        view = state.timers.get(inv.id)
        stages = {t["stage"]: t for t in (view or {}).get("timers", [])}
        if set(stages) != set(STAGES):
            unplanned.append(inv.id)
        for name, offset in zip(STAGES, cfg.offsets, strict=False):
            expected = inv.issued_at + offset
            t = stages.get(name, {"channel": "email"})
            key = (inv.id, name, t["channel"])
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

    # When the scheduler applied each invoice's stop: settled_at for a payment or credit note; for a void
    # or write-off, its cancellations' cancelled_at (the applying transaction's start, not its commit: a
    # stage may fire after it and before the commit, in the stop window). What tells a stage fired after
    # the commit is order: the stop cancels every stage still scheduled, and stages fire in time order, so
    # a fired stage scheduled after one the stop cancelled fired after the stop ("cut" below).
    settled_at = {i: ts(v.get("settled_at")) for i, v in state.timers.items() if v}
    cut: dict[str, float] = {}  # ingest-closed invoice -> earliest scheduled_at its stop cancelled
    for i, v in state.timers.items():
        closing = [t for t in (v or {}).get("timers", []) if t.get("reason") in CLOSED_BY_INGEST]
        if closing:
            settled_at[i] = min(ts(t["cancelled_at"]) for t in closing)
            cut[i] = min(ts(t["scheduled_at"]) for t in closing)
    received: dict[tuple[str, str, str], list[Mail]] = defaultdict(list)
    by_message_id: dict[str, list[Mail]] = defaultdict(list)
    for m in state.mails:
        received[(m.invoice_id, m.stage, m.channel)].append(m)
        by_message_id[m.message_id].append(m)
    for copies in received.values():
        copies.sort(key=lambda m: m.received_at or 0)
    deliveries = {(d["invoice_id"], d["stage"], d["channel"]): d for d in state.deliveries}
    in_doubt_field = any("in_doubt_attempts" in d for d in state.deliveries)

    # 1. No reminder after a payment (or any other stop).
    violations: list[dict[str, Any]] = []
    stop_window: list[dict[str, Any]] = []
    for key, copies in received.items():
        invoice_id, stage, _ = key
        a, s = ack.get(invoice_id), copies[0].scheduled_at or scheduled.get(key)
        if a is None or s is None or s < a:
            continue
        p, t = by_invoice_payment.get(invoice_id), timer.get(key, {})
        fired, known = ts(t.get("fired_at")), settled_at.get(invoice_id)
        if invoice_id in closed_by_ingest and fired is not None and s < cut.get(invoice_id, float("inf")):
            stop_window.append(
                {
                    "invoice_id": invoice_id,
                    "stage": stage,
                    "via": p.via if p else None,
                    "scheduled_after_ack_ms": round((s - a) * 1000, 1),
                    "scheduler_applied_after_ack_ms": round((known - a) * 1000, 1) if known else None,
                }
            )
            continue
        violations.append(
            {
                "invoice_id": invoice_id,
                "stage": stage,
                "scheduled_at": iso(s),
                "acknowledged_at": iso(a),
                "cause": (
                    "timer not fired"
                    if fired is None
                    else "fired after the void or write-off cancelled an earlier stage"
                    if invoice_id in closed_by_ingest
                    else "fired before the scheduler learnt of the payment"
                    if known is None or known > fired
                    else "fired although the scheduler knew the invoice was closed"
                ),
                "scheduler_settled_after_ack_ms": round((known - a) * 1000, 1) if known else None,
                "scheduled_after_ack_ms": round((s - a) * 1000, 1),
                "via": p.via if p else None,
                "scheduled_between_request_and_answer": bool(
                    p and p.sent_at and p.answered_at and p.sent_at <= s <= p.answered_at
                ),
                "ack_during_relay_pause": bool(pause and pause[0] <= a <= pause[1]),
                "timer_state": t.get("state"),
                "fired_after_ack_ms": round((ts(t["fired_at"]) - a) * 1000, 1) if t.get("fired_at") else None,
                "received_after_ack_ms": round(((copies[0].received_at or 0) - a) * 1000, 1),
                "copies": len(copies),
            }
        )

    # 2. None lost.
    lost_unpaid: list[dict[str, Any]] = []
    lost_fired: list[dict[str, Any]] = []
    not_sent_before_payment: list[dict[str, Any]] = []
    for key, s in scheduled.items():
        if key in received:
            continue
        invoice_id, name, _ = key
        a, t, d = ack.get(invoice_id), timer.get(key, {}), deliveries.get(key, {})
        item = {
            "invoice_id": invoice_id,
            "stage": name,
            "scheduled_at": iso(s),
            "timer_state": t.get("state"),
            "timer_reason": t.get("reason"),
            "delivery_state": d.get("state"),
        }
        if a is None and s <= state.end:
            lost_unpaid.append(item)
        if t.get("state") == "fired":
            lost_fired.append(item)
        elif a is not None and s < a:
            not_sent_before_payment.append({**item, "before_ack_ms": round((a - s) * 1000, 1)})

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
    for key, copies in received.items():
        s = copies[0].scheduled_at or scheduled.get(key)
        if s is None or copies[0].received_at is None:
            continue
        late_all.append(copies[0].received_at - s)
        by_10s[int((s - run.t0) // 10) * 10].append(late_all[-1])
        if healthy(s):
            late_healthy.append(copies[0].received_at - s)

    # Payments raced: acknowledged within +-50 ms of the stage time they were aimed at.
    offsets_ms, within = [], 0
    for p in run.payments:
        inv_id = p.invoice_id
        s = scheduled.get((inv_id, p.stage, "email"))
        if p.acknowledged_at is not None and s is not None:
            offsets_ms.append((p.acknowledged_at - s) * 1000)
            within += abs(p.acknowledged_at - s) <= RACE_MS / 1000
    kills = [f for f in run.faults if f.kind == "kill"]
    by_service: dict[str, int] = defaultdict(int)
    for f in kills:
        by_service[f.target.split("#")[0]] += 1
    sent_though_cancelled = [k for k in received if timer.get(k, {}).get("state") == "cancelled"]
    settled_ids = set(ack)
    unexplained = [d for d in duplicates if not d["explained"]]
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
            "ack_minus_stage_ms": {
                "p1": _r(pct(offsets_ms, 0.01)),
                "p50": _r(pct(offsets_ms, 0.5)),
                "p99": _r(pct(offsets_ms, 0.99)),
            },
        },
        "received": {"reminders": len(state.mails), "distinct": len(received)},
        "stop_window": {
            "count": len(stop_window),
            "rule": "voided or written off: scheduled after the stop's acknowledgement, fired before the scheduler"
            " applied it (not under the payments watermark yet; README)",
            "scheduler_applied_after_ack_ms": spread_of(
                [w["scheduler_applied_after_ack_ms"] for w in stop_window if w["scheduler_applied_after_ack_ms"]]
            ),
            "items": stop_window[:50],
        },
        "violations": {
            "count": len(violations),
            "scheduled_between_request_and_answer": sum(v["scheduled_between_request_and_answer"] for v in violations),
            "ack_during_relay_pause": sum(v["ack_during_relay_pause"] for v in violations),
            "by_cause": count_by(violations, "cause"),
            "scheduled_after_ack_ms": spread_of([v["scheduled_after_ack_ms"] for v in violations]),
            "items": violations,
        },
        "lost": {
            "count": len({(i["invoice_id"], i["stage"]) for i in lost_unpaid + lost_fired}),
            "by_timer_state": count_by(lost_unpaid + lost_fired, "timer_state", "timer_reason"),
            "unpaid_never_received": lost_unpaid,
            "fired_never_received": lost_fired,
        },
        "not_sent_due_before_payment": {
            "count": len(not_sent_before_payment),
            "before_ack": {
                "<1s": sum(i["before_ack_ms"] < 1000 for i in not_sent_before_payment),
                "1-10s": sum(1000 <= i["before_ack_ms"] < 10000 for i in not_sent_before_payment),
                ">=10s": sum(i["before_ack_ms"] >= 10000 for i in not_sent_before_payment),
            },
            "items": not_sent_before_payment[:50],
        },
        "duplicates": {
            "count": len(duplicates),
            "unexplained": len(unexplained),
            "same_message_id": message_id_dups,
            "in_doubt_field_reported": in_doubt_field,
            "items": duplicates,
        },
        "consistency": {
            "sent_though_timer_cancelled": len(sent_though_cancelled),
            "received_for_unknown_stage": sum(1 for k in received if k not in scheduled),
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
            "healthy_rule": f"scheduled outside [fault start - 1 s, process started (relay resumed)"
            f" + {cfg.healthy_margin:g} s] for every kill, crash and relay pause",
        },
        "quiescence": {"reached": state.quiescent, "waited_s": round(state.waited, 1), "waiting_on": state.waiting_on},
        "notes": run.notes,
    }
    report["ok"] = state.quiescent and not violations and not report["lost"]["count"] and not unexplained
    return report
