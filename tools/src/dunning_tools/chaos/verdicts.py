"""The rules of a chaos run for every kind of stop, from the stops' acknowledgements and ends, the
scheduler's timers, the invoices' timelines and what the SMTP server received.

- A stop is in force over [acknowledged_at, end): a payment or credit note that settles, a void and a
  write-off until the end of the run; a hold until its release (DELETE answered) or its `ends_at`; a
  dispute until its rejection (an upheld one is settled by its credit note); a promise or plan until
  it breaks (its deadline) or the payment keeping it settles the invoice.
- violation: a reminder whose stage was scheduled at or after a stop's acknowledged_at and fired
  (the scheduler's fired_at, else the time it was received) while that stop was in force. A plan's
  own instalment reminders are not paused by it.
- lost: a fired stage never received, unless the notifier dropped its delivery for a stop (the
  invoice's timeline shows the ReminderCancelled); and for an invoice with no stop in force at the end
  (none, or every pause released, expired, rejected or broken), any stage of the policy never
  received (the run's resume mode, spaced, owes every one), and for a broken promise its
  `promise_broken` reminder.
- timeline: what the invoice's timeline shows sent is what the SMTP server received, except a
  delivery whose attempt is in doubt (the notifier died after the SMTP server's 250, before recording
  `sent`: `in_doubt_attempts` >= 1), which a stop may then record as cancelled.
"""

from collections import defaultdict
from typing import Any

from dunning_tools.chaos.checks import PAUSES, STAGES, iso, ts

INF = float("inf")


def intervals(run, state) -> dict[str, list[tuple[float, float, str]]]:
    """Invoice id -> the stops on it: (acknowledged_at, end, kind)."""
    out: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    by_ref = {p.reference: p for p in run.payments}
    for row in state.payments + state.credit_notes:
        a = ts(row["acknowledged_at"])
        if p := by_ref.get(row["reference"]):
            p.acknowledged_at, p.settled = a, row["settled"]
        if row["settled"] and row["invoice_id"]:
            out[row["invoice_id"]].append((a, INF, "credit_note" if "credit_note_id" in row else "payment"))
    for p in run.payments:
        if p.acknowledged_at is None or p.via in ("stripe", "api", "credit_note", "due_date"):
            continue
        end = INF if p.via in ("void", "write_off") else (p.ends_at or INF)
        out[p.invoice_id].append((p.acknowledged_at, end, p.via))
    return out


def in_force_at_end(stops: list[tuple[float, float, str]]) -> bool:
    return any(end == INF for _, end, _ in stops)


def violation_of(stops, stage: str, scheduled: float, fired: float) -> tuple[float, float, str] | None:
    for a, end, via in stops:
        if via == "plan" and stage.startswith("instalment_"):
            continue
        if a <= scheduled and fired < end:
            return a, end, via
    return None


def cancelled_by_stop(detail: dict | None, stage: str) -> bool:
    """The invoice's history shows the notifier dropped the stage's delivery (ReminderCancelled) for a
    stop that applies to it: a plan's own instalment reminders are not stopped by the plan's pause."""
    for entry in (detail or {}).get("history", []):
        if entry.get("kind") == "reminder_cancelled" and (entry.get("data") or {}).get("stage") == stage:
            return not (stage.startswith("instalment_") and "plan" in str(entry.get("reason") or ""))
    return False


def judge(run, state, received: dict, timer: dict, expected: dict) -> dict[str, Any]:
    """violations, lost, timeline mismatches; `received` (invoice, stage, channel) -> mails (first
    first), `timer` the same key -> the scheduler's timer, `expected` the policy stages' original times."""
    stops = intervals(run, state)
    violations: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    mismatches: list[dict[str, Any]] = []
    for key, copies in received.items():
        invoice_id, stage, _ = key
        t = timer.get(key, {})
        s = expected.get(key) or copies[0].scheduled_at or ts(t.get("scheduled_at"))
        fired = ts(t.get("fired_at")) or copies[0].received_at
        if s is None or fired is None:
            continue
        if hit := violation_of(stops.get(invoice_id, []), stage, s, fired):
            a, end, via = hit
            violations.append(
                {
                    "invoice_id": invoice_id,
                    "stage": stage,
                    "via": via,
                    "scheduled_at": iso(s),
                    "acknowledged_at": iso(a),
                    "ended_at": None if end == INF else iso(end),
                    "scheduled_after_ack_ms": round((s - a) * 1000, 1),
                    "fired_after_ack_ms": round((fired - a) * 1000, 1),
                    "timer_state": t.get("state"),
                    "copies": len(copies),
                }
            )
    keys = set(expected) | set(timer)
    broken = {p.invoice_id for p in run.payments if p.via == "promise" and p.outcome == "broken" and p.acknowledged_at}
    for key in sorted(keys):
        if key in received:
            continue
        invoice_id, stage, _ = key
        t = timer.get(key, {})
        item = {
            "invoice_id": invoice_id,
            "stage": stage,
            "timer_state": t.get("state"),
            "timer_reason": t.get("reason"),
        }
        stopped = in_force_at_end(stops.get(invoice_id, []))
        if t.get("state") == "fired":
            if not cancelled_by_stop(state.details.get(invoice_id), stage):
                lost.append({**item, "why": "fired, never received, no ReminderCancelled"})
        elif not stopped and stage in STAGES:
            lost.append({**item, "why": "owed (no stop in force at the end), never received"})
    for invoice_id in broken:
        if not in_force_at_end(stops.get(invoice_id, [])) and not any(
            k[0] == invoice_id and k[1] == "promise_broken" for k in received
        ):
            lost.append({"invoice_id": invoice_id, "stage": "promise_broken", "why": "promise broken, no reminder"})
    in_doubt = {
        (d["invoice_id"], d["stage"], d["channel"]) for d in state.deliveries if (d.get("in_doubt_attempts") or 0) >= 1
    }
    in_doubt_mismatches: list[dict[str, Any]] = []
    for invoice_id, detail in state.details.items():
        sent = {(invoice_id, s["stage"], s["channel"]) for s in detail.get("timeline", []) if s["state"] == "sent"}
        got = {k for k in received if k[0] == invoice_id}
        if sent != got:
            item = {
                "invoice_id": invoice_id,
                "timeline_sent_not_received": sorted(k[1] for k in sent - got),
                "received_not_sent_in_timeline": sorted(k[1] for k in got - sent),
            }
            # The provider window: the notifier died after the SMTP server's 250, before recording `sent`;
            # the attempt is in doubt, and a stop arriving meanwhile records the delivery cancelled.
            (in_doubt_mismatches if not sent - got and got - sent <= in_doubt else mismatches).append(item)
    pauses = [p for p in run.payments if p.via in PAUSES and p.acknowledged_at]
    outcomes: dict[str, int] = defaultdict(int)
    for p in pauses:
        outcomes[f"{p.via}/{p.outcome}" + ("/by" if p.due_by is not None else "")] += 1
    resumed = [
        k
        for k in received
        if any(end != INF and ts_ok(end) for _, end, _ in stops.get(k[0], [])) and k[1] in (*STAGES, "promise_broken")
    ]
    return {
        "violations": violations,
        "lost": lost,
        "timeline_mismatches": mismatches,
        "timeline_in_doubt": in_doubt_mismatches,
        "timelines_checked": len(state.details),
        "pause_outcomes": dict(outcomes),
        "reminders_of_resumed_invoices": len(resumed),
        "reminder_cancelled_explained": sum(
            1
            for k, t in timer.items()
            if t.get("state") == "fired" and k not in received and cancelled_by_stop(state.details.get(k[0]), k[1])
        ),
    }


def ts_ok(value: float) -> bool:
    return value is not None and value != INF
