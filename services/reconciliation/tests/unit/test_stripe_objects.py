"""Stripe's other money events read into records: what each fixture means, and bad input named."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from dunning_reconciliation.domain import IncomingPayment
from dunning_reconciliation.stripe_events import Ignored, StripeEventError, parse_event
from dunning_reconciliation.stripe_objects import (
    CreditNote,
    Dispute,
    IntentFailed,
    InvoiceClosed,
    Processing,
    Refund,
    Refunds,
    links_of,
    read_event,
)

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
CREATED = datetime.fromtimestamp(1764500000, tz=UTC)


def fixture(name: str, **changes) -> dict:
    event = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    event["data"]["object"].update(changes)
    return event


def read(event: dict):
    return read_event("ten_1", parse_event(orjson.dumps(event)))


def test_processing_intent_is_pending_money_of_its_full_amount():
    action = read(fixture("payment_intent.processing"))
    assert isinstance(action, Processing)
    p = action.payment
    assert (p.amount, p.currency, p.stripe_object_id, p.source_reference) == (
        Decimal("1250.00"),
        "EUR",
        "pi_3QXsepaDebit01AbCdEf",
        "evt_3QXprocessing0001",
    )
    assert p.keys.invoice_id == "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    assert action.links == ("py_3QXsepaDebit01Charge",)


def test_processing_intent_of_a_stripe_invoice_is_keyed_by_the_invoice():
    action = read(fixture("payment_intent.processing", invoice="in_1QXstripeInvoice001", metadata={}))
    assert action.payment.stripe_object_id == "in_1QXstripeInvoice001"
    assert action.payment.keys.external_ids == ("in_1QXstripeInvoice001",)
    assert action.links == ("pi_3QXsepaDebit01AbCdEf", "py_3QXsepaDebit01Charge")


def test_succeeded_intent_is_still_a_payment():
    assert isinstance(read(fixture("payment_intent.succeeded")), IncomingPayment)


def test_failed_intent_names_its_objects_and_why():
    action = read(fixture("payment_intent.payment_failed", invoice="in_1QXstripeInvoice001"))
    assert action == IntentFailed(("pi_3QXsepaDebit01AbCdEf", "in_1QXstripeInvoice001"), "insufficient_funds")


def test_charge_refunded_lists_each_refund_and_the_cumulative_amount():
    action = read(fixture("charge.refunded"))
    assert action == Refunds(
        ("pi_3QXcard0000Intent01", "ch_3QXcard0000Charge01", "in_1QXstripeInvoice001"),
        (
            Refund("re_3QXrefund00000001", "succeeded", "EUR", Decimal("300.00")),
            Refund("re_3QXrefund00000002", "succeeded", "EUR", Decimal("200.00")),
        ),
        charge_id="ch_3QXcard0000Charge01",
        charge_refunded=Decimal("500.00"),
        currency="EUR",
        at=CREATED,
    )


def test_charge_refunded_without_its_list_still_tells_the_cumulative_amount():
    event = fixture("charge.refunded")
    del event["data"]["object"]["refunds"]
    action = read(event)
    assert (action.refunds, action.charge_refunded) == ((), Decimal("500.00"))


@pytest.mark.parametrize("name", ["refund.created", "charge.refund.updated"])
def test_refund_events_name_one_refund(name):
    action = read(fixture(name))
    assert action.object_ids == ("pi_3QXcard0000Intent01", "ch_3QXcard0000Charge01")
    [refund] = action.refunds
    assert (refund.refund_id, refund.amount) == ("re_3QXrefund00000001", Decimal("300.00"))
    assert action.charge_refunded is None


@pytest.mark.parametrize(
    ("name", "status", "outcome"),
    [
        pytest.param("charge.dispute.created", "needs_response", None, id="opened"),
        pytest.param("charge.dispute.created", "warning_needs_response", None, id="inquiry-opened"),
        pytest.param("charge.dispute.closed", "lost", "lost", id="lost"),
        pytest.param("charge.dispute.closed", "won", "won", id="won"),
        pytest.param("charge.dispute.closed", "warning_closed", "won", id="inquiry-closed"),
    ],
)
def test_disputes(name, status, outcome):
    action = read(fixture(name, status=status))
    assert isinstance(action, Dispute)
    assert (action.dispute_id, action.amount, action.outcome) == ("dp_3QXdispute00000001", Decimal("1250.00"), outcome)
    assert action.object_ids == ("pi_3QXcard0000Intent01", "ch_3QXcard0000Charge01")


@pytest.mark.parametrize(
    ("name", "action", "reason"),
    [
        pytest.param("invoice.voided", "void", "voided in Stripe", id="voided"),
        pytest.param("invoice.marked_uncollectible", "write_off", "marked uncollectible in Stripe", id="uncollectible"),
    ],
)
def test_invoice_closed_by_stripe(name, action, reason):
    closed = read(fixture(name))
    assert isinstance(closed, InvoiceClosed)
    assert (closed.action, closed.reason, closed.stripe_invoice_id) == (action, reason, "in_1QXstripeInvoice001")
    assert closed.keys.invoice_id == "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    assert closed.closed_at == datetime.fromtimestamp(1764500000 - 5, tz=UTC)


def test_credit_note_applies_its_pre_payment_amount_with_its_reason():
    note = read(fixture("credit_note.created"))
    assert note == CreditNote(
        "cn_1QXcreditNote00001",
        "in_1QXstripeInvoice001",
        "EUR",
        Decimal("250.00"),
        "product unsatisfactory: Two units returned damaged",
    )
    newer = read(fixture("credit_note.created", pre_payment_amount=10000, post_payment_amount=15000, type="mixed"))
    assert newer.amount == Decimal("100.00")


def test_post_payment_credit_note_applies_nothing():
    assert read(fixture("credit_note.created", type="post_payment")) == Ignored("post_payment_credit_note")


def test_links_of_an_invoice_payment_are_its_intent_and_charge():
    assert links_of(parse_event(orjson.dumps(fixture("invoice.paid")))) == (
        "pi_3QXcard0000Intent01",
        "ch_3QXcard0000Charge01",
    )


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        pytest.param("refund.created", {"amount": 12.5}, "data.object.amount", id="refund-float"),
        pytest.param("refund.created", {"status": None}, "data.object.status", id="refund-no-status"),
        pytest.param("charge.refunded", {"currency": "zzz"}, "data.object.currency", id="charge-bad-currency"),
        pytest.param("charge.dispute.closed", {"status": "under_review"}, "data.object.status", id="not-closed"),
        pytest.param("charge.dispute.created", {"amount": -5}, "data.object.amount", id="dispute-negative"),
        pytest.param("credit_note.created", {"invoice": None}, "data.object.invoice", id="credit-note-no-invoice"),
        pytest.param("payment_intent.processing", {"currency": "isk", "amount": 550}, "data.object.amount", id="isk"),
    ],
)
def test_unreadable_objects_name_the_field(name, changes, field):
    with pytest.raises(StripeEventError) as info:
        read(fixture(name, **changes))
    assert info.value.field == field


def test_a_listed_refund_that_cannot_be_read_names_its_position():
    event = fixture("charge.refunded")
    event["data"]["object"]["refunds"]["data"][1]["amount"] = "200"
    with pytest.raises(StripeEventError) as info:
        read(event)
    assert info.value.field == "data.object.refunds.data[1].amount"
