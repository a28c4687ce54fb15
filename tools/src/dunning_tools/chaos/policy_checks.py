"""The verdicts of issue 10's races in a chaos run (dunning_tools.chaos.policies): once every stage of
the races' invoices is decided and the notifier has nothing pending for their tenants, the scheduler's
timers (each stage's latest scheduled time), the deliveries topic (ReminderSent, ReminderCancelled,
ReminderFailed, NoticeSent) and the SMTP server's Maildir; the rules are in chaos.policies."""

import asyncio
import time
from collections import defaultdict
from email.parser import BytesHeaderParser
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from dunning.contracts import NoticeSent, topic
from dunning_tools.chaos import aim
from dunning_tools.chaos.checks import RACE_MS, ts
from dunning_tools.chaos.policies import KINDS


async def quiet(races, timeout: float) -> dict[str, dict[str, dict]]:
    """Every stage of every invoice decided (fired, cancelled, skipped): invoice id -> stage -> timer."""
    give_up = time.time() + timeout
    views: dict[str, dict[str, dict]] = {}
    while True:
        for kind, customers in races.customers.items():
            for c in customers:
                for i in c.invoice_ids:
                    if not views.get(i) or any(t["state"] == "scheduled" for t in views[i].values()):
                        views[i] = await races.timers(kind, i)
        if all(v and all(t["state"] != "scheduled" for t in v.values()) for v in views.values()):
            if not await notifier_busy(races):
                await asyncio.sleep(3)  # the notifier's outbox relayed to the deliveries topic
                return views
        if time.time() > give_up:
            races.notes.append("policies: not every timer decided at the end")
            return views
        await asyncio.sleep(2)


async def notifier_busy(races) -> bool:
    """A delivery of one of our tenants still pending or sending (a retry's backoff, a lease)."""
    for kind in KINDS:
        for state in ("pending", "sending"):
            r = await races.call(kind, "GET", "notifier", f"/v1/deliveries?state={state}&limit=1")
            if r.status_code == 200 and r.json()["data"]:
                return True
    return False


async def deliveries(races) -> list[dict]:
    """Every event on the deliveries topic of our tenants (read from the start to the end)."""
    bootstrap = races.run.stack.kafka_bootstrap_servers
    name = topic(NoticeSent)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    ours = {t["tenant_id"] for t in races.tenants.values()}
    out = []
    try:
        await consumer.topics()  # loads the partitions' metadata
        tps = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    env = orjson.loads(r.value)
                    if env.get("tenantid") in ours:
                        out.append(env)
    finally:
        await consumer.stop()
    return out


async def verdict(races, timeout: float) -> dict:
    views = await quiet(races, timeout)
    events = await deliveries(races)
    mails = read_mails(races.run.stack.workdir / "mail", {t["tenant_id"] for t in races.tenants.values()})
    kind_of = {i: k for k, cs in races.customers.items() for c in cs for i in c.invoice_ids}
    paid = {r.invoice_id: r.acknowledged_at for r in races.races if r.acknowledged_at}
    sent: dict[tuple, set] = defaultdict(set)
    cancelled: set[tuple] = set()  # dropped for a stop, or failed for good (counted apart)
    failed: set[tuple] = set()
    notices: dict[str, set] = defaultdict(set)
    sends: dict[str, set] = defaultdict(set)  # recipient -> notices and single reminders sent to it
    for e in events:
        d, kind = e["data"], e["type"].split(".")[1]
        if kind == "ReminderSent":
            sent[(d["invoice_id"], d["stage"], d["channel"])].add(e["id"])
            if not d.get("notice_id"):
                sends[d["recipient"].lower()].add(d["delivery_id"])
        elif kind == "ReminderCancelled":
            cancelled.add((d["invoice_id"], d["stage"], d["channel"]))
        elif kind == "ReminderFailed":
            failed.add((d["invoice_id"], d["stage"], d["channel"]))
        elif kind == "NoticeSent":
            notices[d["notice_id"]].add(e["id"])
            sends[d["recipient"].lower()].add(d["notice_id"])
    violations, lost, twice = [], [], []
    for invoice_id, stages in views.items():
        for name, t in stages.items():
            key = (invoice_id, name, t["channel"])
            at, ack = ts(t["scheduled_at"]), paid.get(invoice_id)
            item = {"kind": kind_of.get(invoice_id), "invoice_id": invoice_id, "stage": name}
            if key in sent and ack is not None and at >= ack:
                after = round((at - ack) * 1000, 1)
                violations.append({**item, "scheduled_at": t["scheduled_at"], "scheduled_after_ack_ms": after})
            if t["state"] == "fired" and key not in sent and key not in cancelled and key not in failed:
                lost.append({**item, "why": "fired, never sent"})
            if t["state"] == "scheduled" and invoice_id not in paid:
                lost.append({**item, "why": "never fired"})
            if len(sent.get(key, ())) > 1:
                twice.append({**item, "reminder_sent_events": len(sent[key])})
    twice += [{"notice_id": n, "notice_sent_events": len(ids)} for n, ids in notices.items() if len(ids) > 1]
    window_tenant = races.tenants["window"]["tenant_id"]
    early = [m for m in mails if m["tenant"] == window_tenant and m["received_at"] < (races.opening or 0)]
    mailed: dict[str, int] = defaultdict(int)
    for m in mails:
        for to in m["to"].split(","):
            mailed[to.strip().lower()] += 1
    copies = {to: n - len(sends.get(to, ())) for to, n in mailed.items() if n > len(sends.get(to, ()))}
    # A stage moved after its stop was aimed at it (another invoice's reminder re-deferred it under
    # the cap, a notice took it): that stop raced a time the stage no longer has, so its aim is not
    # judged (the violations and losses above still are).
    moved = [r for r in races.races if _moved(views, r)]
    for r in moved:
        r.raced = False
    share = aim.shares(races.races, lambda r: final_time(views, r), RACE_MS)
    report = {
        "tenants": {k: t["tenant_id"] for k, t in races.tenants.items()},
        "customers": {k: len(v) for k, v in races.customers.items()},
        "invoices": len(views),
        "races": {k: sum(r.kind == k and r.acknowledged_at is not None for r in races.races) for k in KINDS},
        "not_raced": [{"kind": r.kind, "why": r.skipped or r.error} for r in races.races if not r.acknowledged_at][:30],
        "share_within_50ms_by_kind": share,
        "moved_after_aimed": [
            {"kind": r.kind, "invoice_id": r.invoice_id, "stage": r.stage, "moved_s": _r(final_time(views, r), r)}
            for r in moved
        ][:20],
        **races.run.aim.verdict(share),
        "notices_sent": len(notices),
        "deliveries_failed": len(failed),
        "reminders_sent": len(sent),
        "mails": len(mails),
        "mails_beyond_sends": copies,  # a provider window's second copy (in doubt), else a finding
        "violations": violations[:50],
        "lost": lost[:50],
        "twice": twice[:50],
        "sent_before_window_opened": [m["to"] for m in early][:20],
        "window_opens_at": races.opening,
        "notes": races.notes,
    }
    report["counts"] = {"violations": len(violations), "lost": len(lost), "twice": len(twice)}
    report["ok"] = not (violations or lost or twice or early or aim.failing(report))
    return report


MOVED_S = 1.0  # a stage's final time this far from where its stop was aimed: it moved meanwhile


def _moved(views: dict, race) -> bool:
    at = final_time(views, race)
    if race.acknowledged_at is None or race.target is None or at is None:
        return False
    return abs(at - race.target) > MOVED_S


def _r(at: float | None, race) -> float | None:
    return None if at is None or race.target is None else round(at - race.target, 3)


def final_time(views: dict, race) -> float | None:
    """The latest scheduled time of the raced stage (the scheduler's timer once the run is quiet)."""
    t = views.get(race.invoice_id, {}).get(race.stage)
    return ts(t["scheduled_at"]) if t else None


def read_mails(maildir: Path, tenants: set[str]) -> list[dict]:
    parser = BytesHeaderParser()
    out = []
    for sub in ("new", "cur"):
        if not (maildir / sub).is_dir():
            continue
        for entry in (maildir / sub).iterdir():
            head = entry.read_bytes()[:16384]
            h = parser.parsebytes(head[: head.find(b"\r\n\r\n") + 2])
            if str(h["X-Dunning-Tenant-Id"]) in tenants:
                tenant, to, at = (str(h[k]) for k in ("X-Dunning-Tenant-Id", "X-Envelope-To", "X-Received-At"))
                out.append({"tenant": tenant, "to": to, "received_at": ts(at)})
    return out
