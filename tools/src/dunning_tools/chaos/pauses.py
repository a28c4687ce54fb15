"""The pausing stops of a chaos run (holds on an invoice or its customer, disputes, promises to pay,
payment plans): the request that places each, and what follows it.

Outcomes (drawn per invoice when it is created, `outcome_of`):
- hold: `released` (DELETE after about a stage gap), `expires` (placed with `ends_at` about a gap
  later) or `kept_on` (still in force at the end: nothing scheduled after it may be sent);
- dispute: `rejected` (resumes), `upheld` (reconciliation's credit note settles it) or `open`;
- promise: `kept` (paid in full before its deadline) or `broken` (the scheduler resumes it with a
  `promise_broken` stage at the deadline);
- plan: `completed` (paid in full) or `broken` (the first instalment missed at its deadline).

Most promises (PROMISE_BY) are made `by` an instant about a stage gap after the stop ("by 17:00 on
Friday"): their deadline is that instant plus the policy's grace (seconds in the run's policy), so
they break within every run. The others, and a plan's instalments, are due at the end of a day in
the customer's time zone plus the grace, and the day may not be in the past: the chaos gives those
customers the time zone whose day ends soonest after the stop (`day_end`), and such a promise or
plan breaks only when that day ends within the run (otherwise it is kept: the report counts both,
a promise by an instant as `promise/<outcome>/by`).
"""

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import orjson

from dunning_tools.chaos.checks import ts

OUTCOMES = {
    "hold_invoice": {"released": 0.4, "expires": 0.3, "kept_on": 0.3},
    "hold_customer": {"released": 0.4, "expires": 0.3, "kept_on": 0.3},
    "dispute": {"rejected": 0.5, "upheld": 0.3, "open": 0.2},
    "promise": {"broken": 0.6, "kept": 0.4},
    "plan": {"broken": 0.5, "completed": 0.5},
}
FALLBACK = {"promise": "kept", "plan": "completed"}  # when the day cannot end within the run
GRACE_S = 3.0  # the run policy's promise and plan grace (PT3S)
PROMISE_BY = 0.7  # the share of promises made `by` an instant (the others: by a day's end)


def outcome_of(rng, kind: str) -> str | None:
    choices = OUTCOMES.get(kind)
    return rng.choices(list(choices), weights=list(choices.values()))[0] if choices else None


@cache
def _zones() -> tuple[str, ...]:
    """One zone per distinct UTC offset today (fixed-offset Etc zones first, then any other)."""
    seen: dict[float, str] = {}
    now = datetime.now(UTC)
    for name in sorted(available_timezones(), key=lambda n: (not n.startswith("Etc/"), n)):
        if name.startswith(("posix/", "right/")) or name in ("Factory", "localtime"):
            continue
        try:
            offset = now.astimezone(ZoneInfo(name)).utcoffset()
        except Exception:
            continue
        if offset is not None:
            seen.setdefault(offset.total_seconds(), name)
    return tuple(seen.values())


def day_end(after: float) -> tuple[str, date, float]:
    """The zone whose current day ends soonest after `after` (epoch), that local day, and its end."""
    best: tuple[str, date, float] | None = None
    at = datetime.fromtimestamp(after, UTC)
    for name in _zones():
        zone = ZoneInfo(name)
        day = at.astimezone(zone).date()
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone).timestamp()
        if best is None or end < best[2]:
            best = (name, day, end)
    assert best is not None, "no time zone found"
    return best


def plan_deadline(run, inv, approx_ack: float) -> None:
    """For a promise by a day or a plan: the customer's zone and day (`inv.timezone`,
    `inv.promised_date`) and, if that day ends within the run, keep a `broken` outcome; else fall back
    to `kept` / `completed`. A promise by an instant (`inv.promise_by`) has its deadline set when it is
    made (`request`)."""
    if inv.race[2] == "promise" and run.rng.random() < PROMISE_BY:
        inv.promise_by = True
        return
    zone, day, end = day_end(approx_ack + 5)
    inv.timezone, inv.promised_date, inv.deadline = zone, day, end + GRACE_S
    if inv.deadline > run.horizon and inv.outcome == "broken":
        inv.outcome = FALLBACK[inv.race[2]]


def request(run, inv, stop) -> tuple[str, dict[str, Any]]:
    """The URL and body of the POST that places `stop` (a pause)."""
    ingest, via = run.stack.url("invoice-ingest"), stop.via
    why = f"chaos {stop.reference}"
    if via in ("hold_invoice", "hold_customer"):
        target = {"invoice_id": inv.id} if via == "hold_invoice" else {"customer_external_id": f"C-{inv.external_id}"}
        body: dict[str, Any] = {**target, "reason": why, "placed_by": "chaos"}
        if stop.outcome == "expires":
            ends = stop.target + run.cfg.gap * run.rng.uniform(0.8, 1.6)
            body["ends_at"] = datetime.fromtimestamp(ends, UTC).isoformat(timespec="milliseconds")
            stop.ends_at = ends
        return f"{ingest}/v1/holds", body
    if via == "dispute":
        return f"{ingest}/v1/invoices/{inv.id}/disputes", {"reason": why, "opened_by": "chaos"}
    if via == "promise" and inv.promise_by:  # by an instant about a gap after the stop: due within the run
        by = stop.target + run.cfg.gap * run.rng.uniform(0.8, 1.6)
        stop.due_by, stop.deadline = by, by + GRACE_S
        if stop.deadline > run.horizon and stop.outcome == "broken":
            stop.outcome = inv.outcome = FALLBACK["promise"]
        body = {"amount": inv.amount, "by": datetime.fromtimestamp(by, UTC).isoformat(timespec="milliseconds")}
        return f"{ingest}/v1/invoices/{inv.id}/promises", {**body, "made_by": "chaos"}
    if via == "promise":
        stop.deadline = inv.deadline
        body = {"amount": inv.amount, "date": inv.promised_date.isoformat(), "made_by": "chaos"}
        return f"{ingest}/v1/invoices/{inv.id}/promises", body
    assert via == "plan", via
    stop.deadline = inv.deadline
    cents = int(inv.amount.replace(".", ""))
    first = cents // 2
    instalments = [
        {"due_date": inv.promised_date.isoformat(), "amount": f"{first // 100}.{first % 100:02d}"},
        {
            "due_date": (inv.promised_date + timedelta(days=30)).isoformat(),
            "amount": f"{(cents - first) // 100}.{(cents - first) % 100:02d}",
        },
    ]
    return f"{ingest}/v1/invoices/{inv.id}/payment-plans", {"instalments": instalments, "agreed_by": "chaos"}


async def follow_up(run, inv, stop, answer: dict[str, Any]) -> None:
    """What follows an acknowledged pause (its outcome); records when the pause ended."""
    stop.object_id = next(
        (answer[k] for k in ("hold_id", "dispute_id", "promise_id", "plan_id") if answer.get(k)), None
    )
    ingest, recon, gap = run.stack.url("invoice-ingest"), run.stack.url("reconciliation"), run.cfg.gap
    outcome = stop.outcome
    if outcome in ("kept_on", "open", "expires") or stop.object_id is None:
        return
    if outcome == "broken":
        stop.ends_at = stop.deadline
        return
    await asyncio.sleep(gap * (0.5 if outcome in ("kept", "completed") else run.rng.uniform(0.8, 1.6)))
    if outcome == "released":
        url = f"{ingest}/v1/holds/{stop.object_id}"
        r, _ = await run.send(lambda _: run.client.delete(url, params={"released_by": "chaos"}, headers=run.auth))
        stop.ends_at = ts(r.json().get("released_at")) if r.status_code == 200 else None
    elif outcome in ("rejected", "upheld"):
        url = f"{ingest}/v1/invoices/{inv.id}/disputes/{stop.object_id}/resolve"
        body = orjson.dumps({"outcome": outcome, "resolved_by": "chaos", "note": "chaos"})
        headers = {**run.auth, "Content-Type": "application/json"}
        r, _ = await run.send(lambda _: run.client.post(url, content=body, headers=headers))
        resolved = ts(r.json().get("resolved_at")) if r.status_code == 200 else None
        stop.ends_at = resolved if outcome == "rejected" else None  # upheld: settled by the credit note
    else:  # kept, completed: the customer pays in full
        payload = {
            "invoice_id": inv.id,
            "amount": inv.amount,
            "currency": "EUR",
            "received_at": datetime.now(UTC).isoformat(),
            "reference": f"PAY-{stop.reference}-{outcome}",
        }
        body = orjson.dumps(payload)
        headers = {**run.auth, "Content-Type": "application/json"}
        r, _ = await run.send(lambda _: run.client.post(f"{recon}/v1/payments", content=body, headers=headers))
    stop.follow_up = {"outcome": outcome, "status": r.status_code, "at": time.time(), "answer": r.text[:300]}
