"""More of Stripe against real PostgreSQL and the real app: each event type signed as Stripe signs it,
acted on once (replays and the same refund through two event types change nothing more), refused
whole when forged or stale."""

import time
from pathlib import Path

import orjson
import pytest

from dunning.ids import new_id
from dunning_reconciliation.stripe_signature import sign

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"


def stripe(name: str, event_id: str | None = None, **changes) -> bytes:
    """The fixture event `name` (tests/fixtures/stripe), its object changed, with a fresh event id."""
    event = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    event["id"] = event_id or f"evt_{new_id('x')[2:]}"
    event["created"] = int(time.time())
    event["data"]["object"].update(changes)
    return orjson.dumps(event)


def ids() -> dict[str, str]:
    """Fresh Stripe ids for one invoice's money (a test's own, so tests never share a Stripe object)."""
    tail = new_id("x")[2:]
    return {"in": f"in_{tail}", "pi": f"pi_{tail}", "ch": f"ch_{tail}", "re": f"re_{tail}", "dp": f"dp_{tail}"}


async def open_invoice(pool, h, amount_due: str = "1250.00", **fields) -> str:
    issued = h.invoice_issued(amount_due=amount_due, **fields)
    await h.handle_invoice(pool, issued)
    return issued["subject"]


async def paid_by_stripe_invoice(pool, client, h, invoice_id: str, s: dict, amount: int = 125000) -> dict:
    """invoice.paid for our invoice by Stripe invoice s['in'], paid by intent s['pi'] / charge s['ch']."""
    body = stripe(
        "invoice.paid",
        id=s["in"],
        amount_paid=amount,
        payment_intent=s["pi"],
        charge=s["ch"],
        metadata={"dunning_invoice_id": invoice_id},
    )
    response = await h.post_webhook(client, body)
    assert response.status_code == 200 and response.json()["status"] == "applied"
    return response.json()


async def balance(pool, invoice_id: str):
    return await pool.fetchrow("SELECT balance, status FROM invoices WHERE invoice_id = $1", invoice_id)


async def types(pool, h, invoice_id: str) -> list[str]:
    return [e["type"].split(".")[1] for e in await h.outbox_events(pool, invoice_id)]


# -- invoices Stripe closed --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "action"),
    [
        pytest.param("invoice.voided", "void", id="voided"),
        pytest.param("invoice.marked_uncollectible", "write_off", id="uncollectible"),
    ],
)
async def test_invoice_closed_in_stripe_is_handed_to_invoice_ingest(pool, client, h, name, action):
    invoice_id = await open_invoice(pool, h)
    s = ids()
    body = stripe(name, event_id="evt_closed_1", id=s["in"], metadata={"dunning_invoice_id": invoice_id})

    response = await h.post_webhook(client, body)

    assert response.status_code == 200
    assert response.json() == {"status": "closed", "payment_id": None, "invoice_id": invoice_id, "settled": None}
    [event] = await h.outbox_events(pool, invoice_id)
    assert event["type"] == "dunning.InvoiceClosedByProcessor.v1"
    data = event["data"]
    assert (data["action"], data["source"], data["source_reference"]) == (action, "stripe", "evt_closed_1")
    assert data["invoice_external_id"] and data["reason"].endswith("in Stripe")
    # reconciliation does not close the invoice itself: invoice-ingest does, then tells it.
    assert (await balance(pool, invoice_id))["status"] == "open"


async def test_invoice_closed_for_an_unknown_invoice_is_ignored_and_recorded(pool, client, h):
    body = stripe("invoice.voided", metadata={"dunning_invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YZ"}, id="in_nobody")
    response = await h.post_webhook(client, body)
    assert response.json()["status"] == "ignored"
    assert await pool.fetchval("SELECT outcome FROM stripe_events") == "ignored:unknown_invoice"
    assert await h.outbox_events(pool) == []


# -- credit notes ------------------------------------------------------------------------------


async def test_credit_note_lowers_the_balance_like_the_credit_note_api(pool, client, h):
    s = ids()
    invoice_id = await open_invoice(pool, h, external_id=s["in"])
    body = stripe("credit_note.created", id="cn_1QXtestCredit0001", invoice=s["in"], amount=25000)

    response = await h.post_webhook(client, body)

    assert response.status_code == 200
    assert response.json()["status"] == "credited" and response.json()["settled"] is False
    assert (await balance(pool, invoice_id))["balance"] == 1000
    [event] = await h.outbox_events(pool, invoice_id)
    assert event["type"] == "dunning.CreditNoteIssued.v1"
    assert (event["data"]["reference"], event["data"]["amount_applied"]) == ("cn_1QXtestCredit0001", "250.00")
    assert event["data"]["reason"] == "product unsatisfactory: Two units returned damaged"
    listed = await client.get("/v1/credit-notes", params={"invoice_id": invoice_id}, headers=h.AUTH)
    assert [c["reference"] for c in listed.json()["data"]] == ["cn_1QXtestCredit0001"]


async def test_credit_note_seen_under_another_event_id_applies_once(pool, client, h):
    s = ids()
    invoice_id = await open_invoice(pool, h, external_id=s["in"])
    note = {"id": "cn_1QXtestCredit0002", "invoice": s["in"], "amount": 25000}
    await h.post_webhook(client, stripe("credit_note.created", **note))

    again = await h.post_webhook(client, stripe("credit_note.created", **note))

    assert again.json()["status"] == "credited"
    assert (await balance(pool, invoice_id))["balance"] == 1000
    assert len(await h.outbox_events(pool, invoice_id)) == 1


async def test_credit_note_on_a_settled_invoice_is_ignored_and_recorded(pool, client, h):
    s = ids()
    invoice_id = await open_invoice(pool, h, external_id=s["in"])
    await paid_by_stripe_invoice(pool, client, h, invoice_id, s)
    before = len(await h.outbox_events(pool, invoice_id))

    response = await h.post_webhook(client, stripe("credit_note.created", invoice=s["in"], amount=25000))

    assert response.json()["status"] == "ignored"
    assert len(await h.outbox_events(pool, invoice_id)) == before
    assert await pool.fetchval("SELECT count(*) FROM credit_notes") == 0


async def test_credit_note_for_a_stripe_invoice_known_by_its_payment(pool, client, h):
    """Our invoice's external id is the accounting system's, not Stripe's: the Stripe invoice is
    known through the payment it carried (a part-payment, then a credit note for the rest)."""
    s = ids()
    invoice_id = await open_invoice(pool, h)
    await paid_by_stripe_invoice(pool, client, h, invoice_id, s, amount=100000)

    response = await h.post_webhook(client, stripe("credit_note.created", invoice=s["in"], amount=25000))

    assert response.json() == {"status": "credited", "payment_id": None, "invoice_id": invoice_id, "settled": True}
    assert await balance(pool, invoice_id) == (0, "paid")


# -- what is refused or ignored whole ----------------------------------------------------------


NEW_TYPES = [
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "charge.refunded",
    "refund.created",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "credit_note.created",
]


@pytest.mark.parametrize("name", NEW_TYPES)
@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body, h: sign(body, "whsec_forged"), id="forged"),
        pytest.param(lambda body, h: sign(body, h.SECRET, int(time.time()) - 301), id="stale"),
        pytest.param(lambda body, h: sign(body.replace(b'"eur"', b'"usd"'), h.SECRET), id="tampered"),
    ],
)
async def test_forged_or_stale_events_of_each_type_are_refused_and_change_nothing(pool, client, h, name, forge):
    invoice_id = await open_invoice(pool, h)
    body = stripe(name, metadata={"dunning_invoice_id": invoice_id})

    response = await h.post_webhook(client, body, header=forge(body, h))

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Stripe-Signature"
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 0}


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        pytest.param("refund.created", {"payment_intent": "pi_never_seen", "charge": "ch_never_seen"}, id="refund"),
        pytest.param(
            "charge.refunded", {"payment_intent": "pi_never_seen", "id": "ch_never_seen", "invoice": None}, id="charge"
        ),
        pytest.param(
            "charge.dispute.created", {"payment_intent": "pi_never_seen", "charge": "ch_never_seen"}, id="dispute"
        ),
    ],
)
async def test_money_events_for_a_payment_never_seen_are_ignored_and_recorded(pool, client, h, name, changes):
    response = await h.post_webhook(client, stripe(name, **changes))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert await pool.fetchval("SELECT outcome FROM stripe_events") == "ignored:unknown_payment"
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 1}


async def test_failed_intent_that_was_never_processing_is_ignored(pool, client, h):
    response = await h.post_webhook(client, stripe("payment_intent.payment_failed", id="pi_card_declined"))
    assert response.json()["status"] == "ignored"
    assert await pool.fetchval("SELECT outcome FROM stripe_events") == "ignored:not_processing"


async def test_signed_event_with_an_unreadable_refund_is_a_400_naming_the_field(pool, client, h):
    response = await h.post_webhook(client, stripe("refund.created", amount=12.5))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "data.object.amount"
    assert await h.counts(pool) == {"payments": 0, "outbox": 0, "stripe_events": 0}


def acting_event(name: str, s: dict, invoice_id: str) -> bytes:
    """An event of type `name` that acts on the invoice paid through s (or, for an intent, on a debit)."""
    refund = {"id": f"re_{s['ch'][3:]}", "charge": s["ch"], "payment_intent": s["pi"], "amount": 10000}
    objects = {
        "payment_intent.processing": {"id": f"pi_debit_{s['pi'][3:]}", "metadata": {"dunning_invoice_id": invoice_id}},
        "charge.refunded": {"id": s["ch"], "payment_intent": s["pi"], "invoice": s["in"], "amount_refunded": 10000,
                            "refunds": {"object": "list", "data": [], "has_more": False}},
        "refund.created": refund,
        "refund.updated": refund,
        "charge.refund.updated": refund | {"status": "succeeded"},
        "charge.dispute.created": {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 10000},
        "charge.dispute.closed": {"id": s["dp"], "charge": s["ch"], "payment_intent": s["pi"], "amount": 10000},
        "invoice.voided": {"id": s["in"], "metadata": {"dunning_invoice_id": invoice_id}},
        "invoice.marked_uncollectible": {"id": s["in"], "metadata": {"dunning_invoice_id": invoice_id}},
        "credit_note.created": {"id": f"cn_{s['in'][3:]}", "invoice": s["in"], "amount": 10000},
    }  # fmt: skip
    fixture = "refund.created" if name == "refund.updated" else name
    body = orjson.loads(stripe(fixture, **objects[name]))
    body["type"] = name
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        pytest.param("payment_intent.processing", "processing", id="processing"),
        pytest.param("charge.refunded", "reversed", id="charge-refunded"),
        pytest.param("refund.created", "reversed", id="refund-created"),
        pytest.param("refund.updated", "reversed", id="refund-updated"),
        pytest.param("charge.refund.updated", "reversed", id="charge-refund-updated"),
        pytest.param("charge.dispute.created", "disputed", id="dispute-created"),
        pytest.param("charge.dispute.closed", "dispute_closed", id="dispute-closed"),
        pytest.param("invoice.voided", "closed", id="voided"),
        pytest.param("invoice.marked_uncollectible", "closed", id="uncollectible"),
        pytest.param("credit_note.created", "credited", id="credit-note"),
    ],
)
async def test_each_new_event_type_acts_once_and_its_replay_changes_nothing(pool, client, h, name, status):
    s = ids()
    invoice_id = await open_invoice(pool, h, amount_due="1250.00")
    if name != "payment_intent.processing":
        await paid_by_stripe_invoice(pool, client, h, invoice_id, s, amount=100000)
    body = acting_event(name, s, invoice_id)

    first = await h.post_webhook(client, body)
    after_first = (await h.counts(pool), await balance(pool, invoice_id))
    replay = await h.post_webhook(client, body)

    assert first.status_code == 200 and first.json()["status"] == status
    assert replay.status_code == 200 and replay.json() == {
        "status": "duplicate",
        "payment_id": None,
        "invoice_id": None,
        "settled": None,
    }
    assert (await h.counts(pool), await balance(pool, invoice_id)) == after_first
