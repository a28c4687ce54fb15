"""GoCardless: the signature exactly as GoCardless signs (its client libraries' vector and ours), and
its batched events read into what they ask of us. Pure: no database."""

import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from dunning_reconciliation.processors import events as ev
from dunning_reconciliation.processors import gocardless

REFERENCE = Path(__file__).resolve().parents[5] / "shared" / "reference-data" / "gocardless"
SECRET = "gc-endpoint-secret-0123456789abcdef"


def payment_event(action: str, *, cause: str = "payment_confirmed", metadata: dict | None = None, **extra) -> dict:
    """A payments event shaped as GoCardless's API reference shows them (EV… id, created_at with
    milliseconds, details.origin/cause/description, links.payment, resource_metadata)."""
    return {
        "id": extra.pop("id", "EV00BD05S5VM2T"),
        "created_at": "2026-11-30T09:13:51.404Z",
        "resource_type": "payments",
        "action": action,
        "links": {"payment": extra.pop("payment", "PM000260X9VKF4")},
        "details": {"origin": "gocardless", "cause": cause, "description": "Payment was confirmed as collected"},
        "metadata": {},
        "resource_metadata": metadata
        if metadata is not None
        else {"invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "amount": "125000", "currency": "EUR"},
        **extra,
    }


def test_our_own_vector_is_the_hex_hmac_of_the_raw_body():
    body = b'{"events":[]}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

    gocardless.verify(body, expected, [SECRET])
    gocardless.verify(body, expected.upper(), [SECRET])  # hex is hex, whatever the case

    with pytest.raises(ev.SignatureError):
        gocardless.verify(body + b" ", expected, [SECRET])  # a byte more: another body


@pytest.mark.skipif(not (REFERENCE / "signature_vector.json").exists(), reason="reference data not present")
def test_the_client_libraries_vector():
    vector = json.loads((REFERENCE / "signature_vector.json").read_text())
    body = vector["body"].encode()
    assert body == (REFERENCE / vector["body_file"]).read_bytes().strip()

    gocardless.verify(body, vector["signature"], [vector["secret"]])
    for wrong in vector["wrong_secret_must_fail"]:
        with pytest.raises(ev.SignatureError):
            gocardless.verify(body, vector["signature"], [wrong])
    # The vector's events are a subscription and a mandate: recorded, nothing to do.
    assert [e.action for e in gocardless.parse("ten_x", body)] == [ev.IGNORED, ev.IGNORED]


@pytest.mark.parametrize(
    ("header", "secrets"),
    [
        pytest.param(None, [SECRET], id="no-header"),
        pytest.param("", [SECRET], id="empty-header"),
        pytest.param("0" * 64, [SECRET], id="forged"),
        pytest.param(None, [], id="no-secret"),
    ],
)
def test_refused_signatures(header, secrets):
    body = b'{"events":[]}'
    if header is None and not secrets:
        header = gocardless.signature(body, SECRET)
    with pytest.raises(ev.SignatureError):
        gocardless.verify(body, header, secrets)


def test_any_active_secret_verifies_during_a_rotation():
    body = b'{"events":[]}'
    gocardless.verify(body, gocardless.signature(body, "old-secret-0123456789"), [SECRET, "old-secret-0123456789"])


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        pytest.param("submitted", ev.PROCESSING, id="submitted-pauses"),
        pytest.param("confirmed", ev.SUCCEEDED, id="confirmed-pays"),
        pytest.param("paid_out", ev.SUCCEEDED, id="paid_out-pays-when-no-confirmed"),
        pytest.param("failed", ev.FAILED, id="failed"),
        pytest.param("cancelled", ev.FAILED, id="cancelled"),
        pytest.param("charged_back", ev.CHARGEBACK, id="charged_back"),
        pytest.param("late_failure_settled", ev.LATE_FAILURE, id="late_failure"),
        pytest.param("chargeback_settled", ev.IGNORED, id="chargeback_settled-is-recorded-only"),
        pytest.param("created", ev.IGNORED, id="created-is-recorded-only"),
    ],
)
def test_payment_actions(action, expected):
    [event] = gocardless.parse("ten_x", orjson.dumps({"events": [payment_event(action)]}))

    assert (event.action, event.type, event.payment_reference) == (expected, f"payments.{action}", "PM000260X9VKF4")


def test_the_payment_comes_from_the_metadata_in_minor_units():
    [event] = gocardless.parse("ten_x", orjson.dumps({"events": [payment_event("confirmed")]}))

    p = event.payment
    assert (p.source, p.source_reference, p.currency, p.amount) == (
        "gocardless",
        "PM000260X9VKF4",
        "EUR",
        Decimal("1250.00"),
    )
    assert p.keys.invoice_id == "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    assert p.received_at.isoformat() == "2026-11-30T09:13:51.404000+00:00"


def test_an_event_without_invoice_metadata_has_no_payment_to_apply():
    [event] = gocardless.parse("ten_x", orjson.dumps({"events": [payment_event("confirmed", metadata={})]}))

    assert event.action == ev.SUCCEEDED and event.payment is None


def test_a_batch_keeps_its_order_and_other_resources_are_ignored():
    body = orjson.dumps(
        {
            "events": [
                payment_event("submitted", id="EV1"),
                {**payment_event("created", id="EV2"), "resource_type": "mandates", "links": {"mandate": "MD1"}},
                payment_event("confirmed", id="EV3"),
            ]
        }
    )
    events = gocardless.parse("ten_x", body)

    assert [(e.event_id, e.action) for e in events] == [
        ("EV1", ev.PROCESSING),
        ("EV2", ev.IGNORED),
        ("EV3", ev.SUCCEEDED),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"not json", "(body)", id="not-json"),
        pytest.param(b"[]", "events", id="not-an-object"),
        pytest.param(orjson.dumps({"events": [{"id": "EV1"}]}), "events.0.resource_type", id="no-resource-type"),
        pytest.param(
            orjson.dumps({"events": [payment_event("confirmed", links={})]}),
            "events.0.links.payment",
            id="no-payment-link",
        ),
        pytest.param(
            orjson.dumps({"events": [payment_event("confirmed", created_at="yesterday")]}),
            "events.0.created_at",
            id="bad-time",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "events": [
                        payment_event(
                            "confirmed", metadata={"invoice_id": "inv_1", "amount": "12.50", "currency": "EUR"}
                        )
                    ]
                }
            ),
            "events.0.resource_metadata.amount",
            id="amount-not-minor-units",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "events": [
                        payment_event(
                            "confirmed", metadata={"invoice_id": "inv_1", "amount": "100", "currency": "EURO"}
                        )
                    ]
                }
            ),
            "events.0.resource_metadata.currency",
            id="bad-currency",
        ),
        pytest.param(
            orjson.dumps({"events": [payment_event("confirmed", id=f"EV{i}") for i in range(251)]}),
            "events",
            id="too-many",
        ),
    ],
)
def test_unreadable_deliveries_name_the_field(body, field):
    with pytest.raises(ev.EventError) as caught:
        gocardless.parse("ten_x", body)
    assert caught.value.field == field
