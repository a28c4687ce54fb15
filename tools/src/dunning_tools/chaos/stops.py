"""The stops a chaos run races against stage times: payments (Stripe webhooks signed as Stripe signs,
POST /v1/payments), settling credit notes (POST /v1/credit-notes), voids and write-offs
(POST /v1/invoices/{id}/void | write-off), holds on the invoice or its customer (POST /v1/holds),
disputes, promises to pay and payment plans (POST /v1/invoices/{id}/disputes | promises |
payment-plans), and due-date changes (PATCH /v1/invoices/{id}: not a stop, a re-plan racing firing).
Each is aimed (dunning_tools.chaos.aim) to be acknowledged within +-50 ms of one of the invoice's
stage times, and retried like a well-behaved client retries (same event id, reference, request or
Idempotency-Key: a retry is answered with the first result). What follows a pause (a release, a
resolution, a payment keeping a promise or a plan, or nothing) is `dunning_tools.chaos.pauses`.

Every stop is under the firing gate (reconciliation's payments watermark, invoice-ingest's stops
watermark): no stage scheduled at or after its acknowledgement fires while it is in force.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from dunning_reconciliation.stripe_signature import sign  # as Stripe signs (t=..., v1=HMAC-SHA256)
from dunning_tools.chaos import pauses
from dunning_tools.chaos.aim import AIM_MS
from dunning_tools.chaos.checks import KINDS, PAUSES, STAGES, UNDER_WATERMARK, ts


def pick_kind(rng) -> str:
    return rng.choices(list(KINDS), weights=list(KINDS.values()))[0]


@dataclass
class Stop:
    invoice_id: str
    via: str  # one of KINDS
    stage: str
    target: float  # epoch seconds the acknowledgement was aimed at (stage time + delta)
    reference: str  # Stripe event id, payment or credit note reference, or the void's reason
    sent_at: float | None = None  # first attempt
    last_sent_at: float | None = None  # the attempt that was answered
    answered_at: float | None = None
    status: int | None = None
    attempts: int = 0
    acknowledged_at: float | None = None  # as the acknowledging service reports it
    settled: bool | None = None
    error: str | None = None
    raced: bool = True  # aimed at a stage time (follow-ups such as a promise's payment are not)
    outcome: str | None = None  # what follows a pause: released, expires, kept_on, rejected, upheld, kept, broken...
    object_id: str | None = None  # the hold, dispute, promise or plan id
    ends_at: float | None = None  # when the pause ended: release / resolution acknowledged, hold or deadline end
    deadline: float | None = None  # a promise's or first instalment's deadline (judged by the scheduler)
    due_by: float | None = None  # a promise made `by` this instant (not by a day's end)
    follow_up: dict[str, Any] | None = None  # the follow-up's request and answer, for the report

    @property
    def under_watermark(self) -> bool:
        return self.via in UNDER_WATERMARK


def _stripe(run, inv, stop: Stop):
    cents = int(inv.amount.replace(".", ""))
    body = orjson.dumps(
        {
            "id": stop.reference,
            "object": "event",
            "type": "invoice.paid",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": f"in_{run.run_id}_{inv.index}",
                    "object": "invoice",
                    "number": inv.external_id,
                    "amount_paid": cents,
                    "currency": "eur",
                    "metadata": {"dunning_invoice_id": inv.id},
                    "status_transitions": {"paid_at": int(time.time())},
                }
            },
        }
    )
    url = f"{run.stack.url('reconciliation')}/v1/webhooks/stripe/{run.tenant['tenant_id']}"
    secret = run.tenant["webhook_secret"]

    def request():  # each delivery attempt signed anew, as Stripe does; same event id
        headers = {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}
        return run.client.post(url, content=body, headers=headers)

    return request


def _json_post(run, url: str, payload: dict[str, Any]):
    body = orjson.dumps(payload)

    def request():  # same reference and content: a retry is answered with the first result
        return run.client.post(url, content=body, headers={**run.auth, "Content-Type": "application/json"})

    return request


def request_of(run, inv, stop: Stop):
    """The request that makes `stop` happen, as a callable that sends one attempt."""
    recon, ingest = run.stack.url("reconciliation"), run.stack.url("invoice-ingest")
    if stop.via == "stripe":
        return _stripe(run, inv, stop)
    if stop.via == "api":
        received_at = datetime.now().astimezone().isoformat()
        payload = {"invoice_id": inv.id, "amount": inv.amount, "currency": "EUR", "received_at": received_at}
        return _json_post(run, f"{recon}/v1/payments", {**payload, "reference": stop.reference})
    if stop.via == "credit_note":
        payload = {"invoice_id": inv.id, "amount": inv.amount, "currency": "EUR", "reason": "chaos: goods returned"}
        return _json_post(run, f"{recon}/v1/credit-notes", {**payload, "reference": stop.reference})
    if stop.via in ("void", "write_off"):
        action = "void" if stop.via == "void" else "write-off"
        return _json_post(run, f"{ingest}/v1/invoices/{inv.id}/{action}", {"reason": stop.reference})
    if stop.via == "due_date":
        body = orjson.dumps({"due_date": (inv.due_date + timedelta(days=7)).isoformat()})
        headers = {**run.auth, "Content-Type": "application/merge-patch+json"}
        return lambda: run.client.patch(f"{ingest}/v1/invoices/{inv.id}", content=body, headers=headers)
    url, payload = pauses.request(run, inv, stop)
    body = orjson.dumps(payload)
    headers = {**run.auth, "Content-Type": "application/json", "Idempotency-Key": f"chaos-{stop.reference}"}
    return lambda: run.client.post(url, content=body, headers=headers)


def acknowledged_at(stop: Stop, answer: dict[str, Any]) -> float | None:
    """When the acknowledging service says it took the stop (under its acknowledgement fence)."""
    if stop.via in ("api", "credit_note", *PAUSES):
        return ts(answer.get("acknowledged_at"))
    if stop.via == "due_date":
        return ts(answer.get("updated_at"))
    if stop.via in ("void", "write_off"):
        field = "voided_at" if stop.via == "void" else "written_off_at"
        return ts(answer.get(field))
    return None  # Stripe: read back from GET /v1/payments by the checks


async def race(run, inv) -> None:
    """Send `inv`'s stop so that it is acknowledged near its stage's time; record what happened."""
    assert inv.race is not None and inv.id is not None and inv.issued_at is not None, "only issued, raced invoices"
    k, delta, via = inv.race
    reference = {
        "stripe": f"evt_chaos_{run.run_id}_{inv.index}",
        "api": f"PAY-{run.run_id}-{inv.index}",
        "credit_note": f"CN-{run.run_id}-{inv.index}",
    }.get(via, f"chaos {via} {run.run_id}-{inv.index}")
    stop = Stop(inv.id, via, STAGES[k], inv.issued_at + run.cfg.offsets[k] + delta, reference)
    stop.outcome = inv.outcome
    run.payments.append(stop)
    request = request_of(run, inv, stop)
    await run.aim.wait(via, stop.target)

    async def attempt(_):
        stop.last_sent_at = time.time()
        stop.sent_at = stop.sent_at or stop.last_sent_at
        stop.attempts += 1
        return await request()

    # A credit note for an invoice reconciliation has not heard of yet (InvoiceIssued still on its way,
    # a replica down) is a 404: the accounting system retries it like a 5xx.
    retry = (404, 500, 502, 503, 504) if via == "credit_note" else (500, 502, 503, 504)
    try:  # an accounting system or Stripe keeps retrying; so do we, for five minutes
        r, _ = await run.send(attempt, retry_statuses=retry, deadline=300, queue=False)
    except RuntimeError as exc:
        stop.error = str(exc)
        return
    stop.answered_at, stop.status = time.time(), r.status_code
    if r.status_code >= 300:
        stop.error = r.text[:300]
        return
    answer = r.json()
    stop.acknowledged_at = acknowledged_at(stop, answer)
    if via in ("void", "write_off"):
        stop.settled = True
    elif via == "credit_note":
        stop.settled = bool(answer.get("settled"))
    if stop.attempts == 1 and stop.acknowledged_at and stop.sent_at:  # aim the next ones by what it takes now
        run.aim.learn(via, stop.sent_at, stop.acknowledged_at)
    if via in PAUSES:
        await pauses.follow_up(run, inv, stop, answer)


def aim_delta(rng) -> float:
    """Seconds from the stage time the acknowledgement is aimed at."""
    return rng.uniform(-AIM_MS, AIM_MS) / 1000
