"""The verdicts of issue 11's money races in a chaos run (dunning_tools.chaos.money): once every stage
of the races' invoices is decided and the notifier has nothing pending for the tenant, the scheduler's
timers, the deliveries topic (ReminderSent / ReminderCancelled / ReminderFailed) and the SMTP server's
Maildir (each mail's stage and X-Dunning-Scheduled-At); the rules are in chaos.money."""

import asyncio
import time
from collections import defaultdict

from dunning_tools.chaos import aim
from dunning_tools.chaos.checks import RACE_MS, STAGES, read_mail, ts
from dunning_tools.chaos.money import KINDS
from dunning_tools.chaos.policy_checks import deliveries

OPEN_STATES = ("scheduled", "paused")


async def quiet(races, timeout: float) -> dict[str, list[dict]]:
    """Every timer of every issued invoice decided (none scheduled or paused) and the notifier idle for
    the tenant: invoice id -> its timers."""
    give_up = time.time() + timeout
    ids = [s.invoice_id for s in races.stories if s.invoice_id]
    views: dict[str, list[dict]] = {}
    while True:
        for i in ids:
            if i not in views or any(t["state"] in OPEN_STATES for t in views[i]):
                views[i] = await races.timers(i)
        if all(views[i] and not any(t["state"] in OPEN_STATES for t in views[i]) for i in ids):
            if not await notifier_busy(races):
                await asyncio.sleep(3)  # the notifier's outbox relayed to the deliveries topic
                return views
        if time.time() > give_up:
            races.notes.append("money: not every timer decided at the end")
            return views
        await asyncio.sleep(2)


async def notifier_busy(races) -> bool:
    for state in ("pending", "sending"):
        r = await races.call("GET", "notifier", f"/v1/deliveries?state={state}&limit=1")
        if r.status_code == 200 and r.json()["data"]:
            return True
    return False


async def ended_open(races) -> dict[str, dict]:
    """invoice id -> the invoice view, of the invoices the run left open (reopened) with a balance."""
    out = {}
    for s in races.stories:
        if s.invoice_id:
            r = await races.call("GET", "invoice-ingest", f"/v1/invoices/{s.invoice_id}")
            if r.status_code == 200 and r.json().get("status") == "open":
                out[s.invoice_id] = r.json()
    return out


async def verdict(races, timeout: float) -> dict:
    views = await quiet(races, timeout)
    events = await deliveries(races)
    tenant_id = races.tenant["tenant_id"]
    mails = read_mail(races.run.stack.workdir / "mail", tenant_id)
    reopened = await ended_open(races)
    # ReminderSent event ids per (invoice, stage, channel): the relay publishes at least once, so the same
    # event may be on the topic twice (a SIGKILL between publishing and deleting its outbox row); two
    # ids would be two sends (policy_checks counts them the same way)
    sent: dict[tuple, set] = defaultdict(set)
    dropped: set[tuple] = set()  # cancelled by the notifier for a stop, or failed for good
    for e in events:
        d, kind = e["data"], e["type"].split(".")[1]
        key = (d["invoice_id"], d["stage"], d["channel"])
        if kind == "ReminderSent":
            sent[key].add(e["id"])
        elif kind in ("ReminderCancelled", "ReminderFailed"):
            dropped.add(key)
    violations: list[dict] = []
    lost: list[dict] = []
    twice: list[dict] = []
    dropped_reopened: list[dict] = []
    for s in races.stories:
        if not s.invoice_id:
            continue
        item = {"kind": s.kind, "invoice_id": s.invoice_id}
        settled_until = s.reversal_sent_at if s.reversal_status and s.reversal_status < 300 else float("inf")
        fired = {(t["stage"], t["channel"]): ts(t.get("fired_at")) for t in views.get(s.invoice_id, [])}
        for m in mails:
            if m.invoice_id != s.invoice_id or s.acknowledged_at is None or m.scheduled_at is None:
                continue
            # Fired while the payment was in force: an invoice the scheduler planned only after the
            # reopen (it lagged) keeps its policy's times, and an owed stage fires then, rightly.
            fired_at = fired.get((m.stage, m.channel)) or m.scheduled_at
            if s.acknowledged_at <= m.scheduled_at < settled_until and fired_at < settled_until:
                violations.append(
                    {
                        **item,
                        "stage": m.stage,
                        "scheduled_after_ack_ms": round((m.scheduled_at - s.acknowledged_at) * 1000, 1),
                        "reversal_sent_after_ms": round((settled_until - m.scheduled_at) * 1000, 1),
                    }
                )
        channels = {t["channel"] for t in views.get(s.invoice_id, [])} or {"email"}
        for stage in STAGES:
            for channel in channels:
                key = (s.invoice_id, stage, channel)
                if len(sent[key]) > 1:
                    twice.append({**item, "stage": stage, "reminder_sent_events": len(sent[key])})
                if s.invoice_id in reopened and not sent[key]:
                    states = [t["state"] for t in views.get(s.invoice_id, []) if t["stage"] == stage]
                    # dropped by the notifier (fired at the payment's moment, the invoice settled when
                    # it was to be sent): explained as in the main checks, and shown apart
                    (dropped_reopened if key in dropped else lost).append(
                        {**item, "stage": stage, "timer_states": states}
                    )
    share = aim.shares(races.stories, lambda s: s.target, RACE_MS)
    by_kind = {k: [s for s in races.stories if s.kind == k] for k in KINDS}
    report = {
        "tenant": tenant_id,
        "invoices": sum(1 for s in races.stories if s.invoice_id),
        "races": {k: sum(s.acknowledged_at is not None for s in v) for k, v in by_kind.items()},
        "reversed": {
            k: sum(bool(s.reversal_status and s.reversal_status < 300) for s in v) for k, v in by_kind.items()
        },
        "reopened": len(reopened),
        "not_raced": [{"kind": s.kind, "why": s.skipped or s.error} for s in races.stories if s.skipped or s.error][
            :30
        ],
        "share_within_50ms_by_kind": share,
        "reminders_sent": sum(len(ids) for ids in sent.values()),
        "mails": len(mails),
        "violations": violations[:50],
        "lost": lost[:50],
        "twice": twice[:50],
        "dropped_by_the_notifier_then_reopened": dropped_reopened[:50],
        "notes": races.notes,
    }
    report["counts"] = {"violations": len(violations), "lost": len(lost), "twice": len(twice)}
    report["ok"] = not (violations or lost or twice) and all(report["reversed"].values())
    return report


def summary(m: dict) -> str:
    if "error" in m or "skipped" in m:
        return m.get("error") or m["skipped"]
    shares = ", ".join(f"{k} {v['within']}/{v['acknowledged']}" for k, v in m["share_within_50ms_by_kind"].items())
    return (
        f"{m['invoices']} invoices paid by card at a stage's time {m['races']} (within +-50 ms: {shares}), reversed"
        f" {m['reversed']}, {m['reopened']} reopened; {m['reminders_sent']} stages sent; violations"
        f" {m['counts']['violations']}, lost {m['counts']['lost']}, twice {m['counts']['twice']}"
    )
