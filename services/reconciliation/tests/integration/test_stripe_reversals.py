"""Stripe money that moves after it came, through the real app and the money core: a debit still
processing (not paid) and its success or failure, refunds (each counted once, whichever events
report it) that reopen a paid invoice, disputes that pause dunning and, lost, take the money back."""

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from dunning.ids import new_id

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"


def stripe(
    name: str, event_id: str | None = None, *, type_: str | None = None, drop: tuple[str, ...] = (), **changes
) -> bytes:
    """The fixture event `name` (tests/fixtures/stripe), its object changed, with a fresh event id
    (and another type, for an event that carries the same object)."""
    event = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    event["id"] = event_id or f"evt_{new_id('x')[2:]}"
    event["type"] = type_ or event["type"]
    event["created"] = int(time.time())
    event["data"]["object"].update(changes)
    for key in drop:
        event["data"]["object"].pop(key)
    return orjson.dumps(event)


def ids() -> dict[str, str]:
    tail = new_id("x")[2:]
    return {k: f"{k}_{tail}" for k in ("in", "pi", "ch", "dp")}


def refund(s: dict, n: int, amount: int, status: str = "succeeded") -> dict:
    """A Refund object of charge s['ch'] (intent s['pi']), id re_<n>_<tail>."""
    body = orjson.loads((FIXTURES / "refund.created.json").read_bytes())["data"]["object"]
    return body | {"id": f"re_{n}_{s['ch'][3:]}", "amount": amount, "status": status, "charge": s["ch"],
                   "payment_intent": s["pi"]}  # fmt: skip


async def paid_invoice(pool, client, h, s: dict, amount_due: str = "1250.00") -> str:
    """An invoice of ours, paid in full through Stripe invoice s['in'] (intent s['pi'], charge s['ch'])."""
    issued = h.invoice_issued(amount_due=amount_due)
    await h.handle_invoice(pool, issued)
    body = stripe(
        "invoice.paid",
        id=s["in"],
        amount_paid=int(amount_due.replace(".", "")),
        payment_intent=s["pi"],
        charge=s["ch"],
        metadata={"dunning_invoice_id": issued["subject"]},
    )
    assert (await h.post_webhook(client, body)).json()["status"] == "applied"
    return issued["subject"]


async def invoice(pool, invoice_id: str) -> tuple:
    row = await pool.fetchrow("SELECT balance, status FROM invoices WHERE invoice_id = $1", invoice_id)
    return row["balance"], row["status"]


async def events(pool, h, invoice_id: str, kind: str) -> list[dict]:
    return [e["data"] for e in await h.outbox_events(pool, invoice_id, f"dunning.{kind}.v1")]


# -- a debit still processing -------------------------------------------------------------------


async def test_processing_debit_pauses_without_paying_then_succeeds(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)
    s = ids()
    meta = {"dunning_invoice_id": invoice_id}

    processing = await h.post_webhook(client, stripe("payment_intent.processing", id=s["pi"], metadata=meta))

    assert processing.status_code == 200 and processing.json()["status"] == "processing"
    assert await invoice(pool, invoice_id) == (1250, "open")  # processing money is not paid
    [pending] = await events(pool, h, invoice_id, "PaymentPending")
    assert (pending["kind"], pending["amount"]) == ("processing", "1250.00")
    assert await events(pool, h, invoice_id, "PaymentReceived") == []

    success = stripe("payment_intent.succeeded", id=s["pi"], metadata=meta, amount_received=125000)
    succeeded = await h.post_webhook(client, success)

    assert succeeded.json()["status"] == "applied" and succeeded.json()["payment_id"] == processing.json()["payment_id"]
    [ended] = await events(pool, h, invoice_id, "PaymentPendingEnded")
    assert (ended["kind"], ended["outcome"]) == ("processing", "succeeded")
    [received] = await events(pool, h, invoice_id, "PaymentReceived")
    assert (received["amount_applied"], received["settled"]) == ("1250.00", True)
    assert await invoice(pool, invoice_id) == (0, "paid")
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1


async def test_processing_debit_that_fails_ends_the_pause_and_pays_nothing(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)
    s = ids()
    meta = {"dunning_invoice_id": invoice_id}
    await h.post_webhook(client, stripe("payment_intent.processing", id=s["pi"], metadata=meta))

    failed = await h.post_webhook(client, stripe("payment_intent.payment_failed", id=s["pi"], metadata=meta))

    assert failed.json()["status"] == "failed"
    [ended] = await events(pool, h, invoice_id, "PaymentPendingEnded")
    assert (ended["kind"], ended["outcome"]) == ("processing", "failed")
    assert await events(pool, h, invoice_id, "PaymentReceived") == []
    assert await invoice(pool, invoice_id) == (1250, "open")
    assert await pool.fetchval("SELECT status FROM payments") == "failed"


async def test_an_intent_retried_after_a_failed_debit_pauses_again_and_pays_once(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)
    s = ids()
    intent = {"id": s["pi"], "metadata": {"dunning_invoice_id": invoice_id}}
    await h.post_webhook(client, stripe("payment_intent.processing", **intent))
    await h.post_webhook(client, stripe("payment_intent.payment_failed", **intent))

    again = await h.post_webhook(client, stripe("payment_intent.processing", **intent, latest_charge="py_retry"))
    paid = await h.post_webhook(client, stripe("payment_intent.succeeded", **intent, amount_received=125000))

    assert (again.json()["status"], paid.json()["status"]) == ("processing", "applied")
    assert paid.json()["payment_id"] == again.json()["payment_id"]
    assert [e["kind"] for e in await events(pool, h, invoice_id, "PaymentPending")] == ["processing", "processing"]
    assert [e["outcome"] for e in await events(pool, h, invoice_id, "PaymentPendingEnded")] == ["failed", "succeeded"]
    assert len(await events(pool, h, invoice_id, "PaymentReceived")) == 1
    assert await invoice(pool, invoice_id) == (0, "paid")
    statuses = await pool.fetch("SELECT status, stripe_object_id FROM payments ORDER BY received_at, payment_id")
    assert sorted((r["status"], r["stripe_object_id"]) for r in statuses) == [("applied", s["pi"]), ("failed", None)]


async def test_processing_debit_of_a_stripe_invoice_ends_with_its_invoice_paid(pool, client, h):
    s = ids()
    issued = h.invoice_issued(amount_due="1250.00", external_id=s["in"])
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)
    await h.post_webhook(client, stripe("payment_intent.processing", id=s["pi"], invoice=s["in"], metadata={}))
    assert await invoice(pool, invoice_id) == (1250, "open")

    # The intent of a Stripe invoice succeeding carries no money; the invoice's invoice.paid does.
    await h.post_webhook(client, stripe("payment_intent.succeeded", id=s["pi"], invoice=s["in"], metadata={}))
    paid = await h.post_webhook(
        client, stripe("invoice.paid", id=s["in"], amount_paid=125000, payment_intent=s["pi"], metadata={})
    )

    assert paid.json()["status"] == "applied" and paid.json()["settled"] is True
    [ended] = await events(pool, h, invoice_id, "PaymentPendingEnded")
    assert ended["outcome"] == "succeeded"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1


# -- refunds ------------------------------------------------------------------------------------


async def test_refunds_listed_by_charge_refunded_reopen_the_invoice_each_once(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    listed = {"object": "list", "data": [refund(s, 1, 30000), refund(s, 2, 20000)], "has_more": False}
    body = stripe("charge.refunded", id=s["ch"], payment_intent=s["pi"], invoice=s["in"], amount_refunded=50000,
                  refunds=listed)  # fmt: skip

    response = await h.post_webhook(client, body)

    assert response.json()["status"] == "reversed" and response.json()["invoice_id"] == invoice_id
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [(r["kind"], r["source_reference"], r["amount"]) for r in reversed_] == [
        ("refund", f"re_1_{s['ch'][3:]}", "300.00"),
        ("refund", f"re_2_{s['ch'][3:]}", "200.00"),
    ]
    assert (reversed_[-1]["balance_remaining"], reversed_[-1]["settled"]) == ("500.00", False)
    assert await invoice(pool, invoice_id) == (500, "open")

    replay = await h.post_webhook(client, body)
    again = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))

    assert replay.json()["status"] == "duplicate" and again.json()["status"] == "duplicate"
    assert len(await events(pool, h, invoice_id, "PaymentReversed")) == 2
    assert await invoice(pool, invoice_id) == (500, "open")


async def test_the_same_refund_through_two_event_types_reverses_once(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    first = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))
    assert first.json()["status"] == "reversed"

    listed = {"object": "list", "data": [refund(s, 1, 30000), refund(s, 2, 20000)], "has_more": False}
    charge = await h.post_webhook(
        client,
        stripe("charge.refunded", id=s["ch"], payment_intent=s["pi"], invoice=s["in"], amount_refunded=50000,
               refunds=listed),
    )  # fmt: skip

    assert charge.json()["status"] == "reversed"
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [(r["source_reference"], r["amount"]) for r in reversed_] == [
        (f"re_1_{s['ch'][3:]}", "300.00"),
        (f"re_2_{s['ch'][3:]}", "200.00"),
    ]
    assert await invoice(pool, invoice_id) == (500, "open")


async def test_a_charge_that_does_not_list_its_refunds_counts_its_cumulative_amount(pool, client, h):
    """Since API 2022-11-15 a Charge does not list its refunds: its amount_refunded (cumulative)
    still says how much went back, and a refund event seen later adds nothing it already counted."""
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    unlisted = {"id": s["ch"], "payment_intent": s["pi"], "invoice": s["in"], "drop": ("refunds",)}

    first = await h.post_webhook(client, stripe("charge.refunded", amount_refunded=30000, **unlisted))
    late = await h.post_webhook(client, stripe("charge.refund.updated", **refund(s, 1, 30000)))
    second = await h.post_webhook(client, stripe("charge.refunded", amount_refunded=125000, **unlisted))

    assert [r.json()["status"] for r in (first, late, second)] == ["reversed", "duplicate", "reversed"]
    amounts = [r["amount"] for r in await events(pool, h, invoice_id, "PaymentReversed")]
    assert amounts == ["300.00", "950.00"]
    assert await invoice(pool, invoice_id) == (1250, "open")


async def test_a_pending_refund_counts_when_it_succeeds(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)

    pending = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000, "pending")))
    assert pending.json()["status"] == "duplicate"  # nothing to count yet
    assert await invoice(pool, invoice_id) == (0, "paid")

    done = await h.post_webhook(client, stripe("refund.created", type_="refund.updated", **refund(s, 1, 30000)))

    assert done.json()["status"] == "reversed"
    assert await invoice(pool, invoice_id) == (300, "open")


async def test_a_refund_failing_after_it_was_counted_is_recorded_not_undone(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))

    failed = await h.post_webhook(client, stripe("charge.refund.updated", **refund(s, 1, 30000, "failed")))

    assert failed.status_code == 200 and failed.json()["status"] == "duplicate"
    assert await invoice(pool, invoice_id) == (300, "open")
    assert await pool.fetchval("SELECT status FROM stripe_refunds WHERE kind = 'refund'") == "failed"


async def test_refund_of_a_payment_intent_payment(pool, client, h):
    issued = h.invoice_issued(amount_due="1250.00")
    invoice_id = issued["subject"]
    await h.handle_invoice(pool, issued)
    s = ids()
    intent = h.payment_intent({"dunning_invoice_id": invoice_id}, 125000) | {"id": s["pi"], "latest_charge": s["ch"]}
    await h.post_webhook(client, h.stripe_event("payment_intent.succeeded", intent))

    response = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 125000)))

    assert response.json()["status"] == "reversed"
    assert await invoice(pool, invoice_id) == (1250, "open")


# -- disputes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome", "after"),
    [
        pytest.param("lost", "lost", (1250, "open"), id="lost-takes-the-money-back"),
        pytest.param("won", "won", (0, "paid"), id="won-keeps-it"),
        pytest.param("warning_closed", "won", (0, "paid"), id="inquiry-closed"),
    ],
)
async def test_a_dispute_pauses_dunning_and_its_close_decides(pool, client, h, status, outcome, after):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 125000}

    opened = await h.post_webhook(client, stripe("charge.dispute.created", **dispute))

    assert opened.json()["status"] == "disputed"
    [pending] = await events(pool, h, invoice_id, "PaymentPending")
    assert (pending["kind"], pending["source_reference"]) == ("chargeback", s["dp"])

    closed = await h.post_webhook(client, stripe("charge.dispute.closed", status=status, **dispute))

    assert closed.json()["status"] == "dispute_closed"
    [ended] = await events(pool, h, invoice_id, "PaymentPendingEnded")
    assert (ended["kind"], ended["outcome"]) == ("chargeback", outcome)
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [r["kind"] for r in reversed_] == (["chargeback"] if outcome == "lost" else [])
    assert await invoice(pool, invoice_id) == after


async def test_a_replayed_dispute_close_changes_nothing(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 125000}
    await h.post_webhook(client, stripe("charge.dispute.created", **dispute))
    body = stripe("charge.dispute.closed", status="lost", **dispute)
    await h.post_webhook(client, body)
    before = await h.counts(pool)

    replay = await h.post_webhook(client, body)

    assert replay.json()["status"] == "duplicate"
    assert await h.counts(pool) == before
    assert await invoice(pool, invoice_id) == (1250, "open")


async def test_a_dispute_lost_after_a_partial_refund_takes_back_what_is_left(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 125000}
    await h.post_webhook(client, stripe("charge.dispute.created", **dispute))

    closed = await h.post_webhook(client, stripe("charge.dispute.closed", status="lost", **dispute))

    assert closed.json()["status"] == "dispute_closed"
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [(r["kind"], r["amount"]) for r in reversed_] == [("refund", "300.00"), ("chargeback", "950.00")]
    assert await invoice(pool, invoice_id) == (1250, "open")


async def test_a_refund_after_a_lost_chargeback_has_nothing_left_to_take(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 125000}
    await h.post_webhook(client, stripe("charge.dispute.closed", status="lost", **dispute))

    late = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))

    assert late.status_code == 200 and late.json()["status"] == "ignored"
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [(r["kind"], r["amount"]) for r in reversed_] == [("chargeback", "1250.00")]
    assert await invoice(pool, invoice_id) == (1250, "open")


async def test_one_refund_delivered_concurrently_through_two_event_types_reverses_once(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    listed = {"object": "list", "data": [refund(s, 1, 30000)], "has_more": False}
    bodies = [
        stripe("refund.created", **refund(s, 1, 30000)),
        stripe("charge.refund.updated", **refund(s, 1, 30000)),
        stripe("charge.refunded", id=s["ch"], payment_intent=s["pi"], invoice=s["in"], amount_refunded=30000,
               refunds=listed),
    ]  # fmt: skip

    responses = await asyncio.gather(*(h.post_webhook(client, b) for b in bodies))

    assert sorted(r.json()["status"] for r in responses) == ["duplicate", "duplicate", "reversed"]
    assert [r["amount"] for r in await events(pool, h, invoice_id, "PaymentReversed")] == ["300.00"]
    assert await invoice(pool, invoice_id) == (300, "open")


async def test_a_dispute_opened_and_closed_under_other_event_ids_counts_once(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 125000}

    opened = [await h.post_webhook(client, stripe("charge.dispute.created", **dispute)) for _ in range(2)]
    closed = [await h.post_webhook(client, stripe("charge.dispute.closed", status="lost", **dispute)) for _ in range(2)]

    assert [r.json()["status"] for r in opened + closed] == ["disputed", "duplicate", "dispute_closed", "duplicate"]
    assert len(await events(pool, h, invoice_id, "PaymentPending")) == 1
    assert len(await events(pool, h, invoice_id, "PaymentPendingEnded")) == 1
    assert [r["amount"] for r in await events(pool, h, invoice_id, "PaymentReversed")] == ["1250.00"]


async def test_a_refund_above_what_a_partial_chargeback_left_takes_the_rest(pool, client, h):
    s = ids()
    invoice_id = await paid_invoice(pool, client, h, s)
    dispute = {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 100000}
    await h.post_webhook(client, stripe("charge.dispute.closed", status="lost", **dispute))

    late = await h.post_webhook(client, stripe("refund.created", **refund(s, 1, 30000)))

    assert late.json()["status"] == "reversed"
    reversed_ = await events(pool, h, invoice_id, "PaymentReversed")
    assert [(r["kind"], r["amount"]) for r in reversed_] == [("chargeback", "1000.00"), ("refund", "250.00")]
    assert await invoice(pool, invoice_id) == (1250, "open")
