"""Standard Webhooks: verification through the `standardwebhooks` package against the specification's
vectors and ours (forged, stale, future, rotated secrets), and our event vocabulary. Pure."""

import base64
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import standardwebhooks.webhooks as library

from dunning_reconciliation.processors import events as ev
from dunning_reconciliation.processors import standard_webhooks as sw

REFERENCE = Path(__file__).resolve().parents[5] / "shared" / "reference-data" / "standard_webhooks" / "vectors.json"
SECRET = "whsec_" + base64.b64encode(b"our-own-standard-webhooks-key-32b").decode()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _at(monkeypatch, unix: int) -> None:
    """The package reads the clock through its module's `datetime`: pin it for vectors of the past."""

    class Pinned(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(unix, tz=tz)

    monkeypatch.setattr(library, "datetime", Pinned)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference data not present")
def test_the_specifications_vectors(monkeypatch):
    for vector in json.loads(REFERENCE.read_text())["vectors"]:
        payload, ts = vector["payload"].encode(), vector["timestamp"]
        header = vector.get("signature_header") or vector["expected_signature"]
        if "expected_signature" in vector:
            assert sw.sign(payload, vector["secret"], vector["msg_id"], ts)["webhook-signature"] == header
        headers = {"webhook-id": vector["msg_id"], "webhook-timestamp": str(ts), "webhook-signature": header}
        _at(monkeypatch, ts)
        if vector["expect"] == "valid":
            assert sw.verify(payload, headers, [vector["secret"]]) == vector["msg_id"], vector["name"]
        else:
            with pytest.raises(ev.SignatureError):
                sw.verify(payload, headers, [vector["secret"]])


def test_our_own_vector():
    # Computed by hand: base64(HMAC-SHA256(key=b"our-own-standard-webhooks-key-32b", "msg_1.1764504000.{}")).
    import hashlib
    import hmac

    expected = base64.b64encode(
        hmac.new(b"our-own-standard-webhooks-key-32b", b"msg_1.1764504000.{}", hashlib.sha256).digest()
    ).decode()
    assert sw.sign(b"{}", SECRET, "msg_1", 1764504000)["webhook-signature"] == f"v1,{expected}"


def test_a_fresh_signed_delivery_is_accepted_and_its_id_returned():
    headers = sw.sign(b'{"a": 1}', SECRET, "msg_fresh", int(time.time()))

    assert sw.verify(b'{"a": 1}', headers, [SECRET]) == "msg_fresh"


def test_either_secret_verifies_during_a_rotation():
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    headers = sw.sign(b"{}", other, "msg_rot", int(time.time()))

    assert sw.verify(b"{}", headers, [SECRET, other]) == "msg_rot"
    with pytest.raises(ev.SignatureError):
        sw.verify(b"{}", headers, [SECRET])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"webhook-signature": "v1,AAAA"}, "webhook-signature", id="forged"),
        pytest.param({"webhook-signature": "garbage"}, "webhook-signature", id="malformed"),
        pytest.param({"webhook-timestamp": -301}, "webhook-timestamp", id="stale"),
        pytest.param({"webhook-timestamp": +301}, "webhook-timestamp", id="future"),
        pytest.param({"webhook-id": None}, "webhook-id", id="no-id"),
        pytest.param({"webhook-signature": None}, "webhook-signature", id="no-signature"),
    ],
)
def test_refused_deliveries(change, field):
    headers = sw.sign(b"{}", SECRET, "msg_x", int(time.time()))
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        elif name == "webhook-timestamp":
            headers = sw.sign(b"{}", SECRET, "msg_x", int(time.time()) + value)  # signed, out of the tolerance
        else:
            headers[name] = value
    with pytest.raises(ev.SignatureError) as caught:
        sw.verify(b"{}", headers, [SECRET])
    assert caught.value.field == field


def test_no_secret_refuses_everything():
    headers = sw.sign(b"{}", SECRET, "msg_x", int(time.time()))
    with pytest.raises(ev.SignatureError):
        sw.verify(b"{}", headers, [])


def body(type_: str, **data) -> bytes:
    """A delivery as the Standard Webhooks specification shapes it: type, timestamp, data."""
    return orjson.dumps({"type": type_, "timestamp": "2026-11-30T11:59:58Z", "data": data})


def test_a_succeeded_payment_with_its_invoice_and_payer():
    event = sw.parse(
        "ten_x",
        "msg_1",
        body(
            "payment.succeeded",
            id="pay_proc_1",
            amount="1250.00",
            currency="EUR",
            invoice_external_id="INV-1001",
            payer={"name": "ACME GmbH", "account": "de89 3704 0044 0532 0130 00"},
        ),
        received_at=NOW,
    )

    assert (event.action, event.payment_reference, event.event_id) == (ev.SUCCEEDED, "pay_proc_1", "msg_1")
    p = event.payment
    assert (p.source, p.source_reference, p.amount, p.currency) == (
        "standard_webhooks",
        "pay_proc_1",
        Decimal("1250.00"),
        "EUR",
    )
    assert p.keys.external_ids == ("INV-1001",) and p.payer_account == "DE89370400440532013000"
    assert p.received_at == datetime(2026, 11, 30, 11, 59, 58, tzinfo=UTC)


def test_a_remittance_alone_names_the_invoice_for_matching():
    event = sw.parse(
        "ten_x",
        "m",
        body("payment.succeeded", id="p1", amount="10", currency="JPY", remittance="INV-7 INV-9"),
        received_at=NOW,
    )
    assert event.payment.remittance == "INV-7 INV-9" and event.payment.amount == Decimal("10")


def test_refunds_and_disputes():
    refund = sw.parse(
        "ten_x",
        "m1",
        body("payment.refunded", id="p1", refund_id="re_1", amount="5.00", currency="EUR"),
        received_at=NOW,
    )
    opened = sw.parse("ten_x", "m2", body("payment.disputed", id="p1", dispute_id="dp_1"), received_at=NOW)
    closed = sw.parse(
        "ten_x", "m3", body("payment.dispute_closed", id="p1", dispute_id="dp_1", status="lost"), received_at=NOW
    )
    whole = sw.parse("ten_x", "m4", body("payment.refunded", id="p1", refund_id="re_2"), received_at=NOW)

    assert (refund.action, refund.reference, refund.amount) == (ev.REFUND, "re_1", Decimal("5.00"))
    assert (opened.action, opened.reference) == (ev.DISPUTE_OPENED, "dp_1")
    assert (closed.action, closed.outcome) == (ev.DISPUTE_CLOSED, "lost")
    assert whole.amount is None  # all that is left


def test_an_unknown_type_is_recorded_and_ignored():
    assert sw.parse("ten_x", "m", body("invoice.created", id="x"), received_at=NOW).action == ev.IGNORED


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(b"{", "(body)", id="not-json"),
        pytest.param(orjson.dumps({"data": {}}), "type", id="no-type"),
        pytest.param(orjson.dumps({"type": "payment.succeeded", "data": []}), "data", id="data-not-object"),
        pytest.param(
            body("payment.succeeded", amount="1.00", currency="EUR", invoice_id="inv_1"), "data.id", id="no-id"
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount=1.0, currency="EUR", invoice_id="i"), "data.amount", id="float"
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="1.001", currency="EUR", invoice_id="i"),
            "data.amount",
            id="too-precise",
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="1", currency="JPY", invoice_id="i").replace(b'"1"', b'"1.5"'),
            "data.amount",
            id="jpy-decimals",
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="1.00", currency="eur", invoice_id="i"),
            "data.currency",
            id="currency",
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="1.00", currency="EUR"), "data.invoice_id", id="no-invoice"
        ),
        pytest.param(
            body("payment.refunded", id="p", amount="1.00", currency="EUR"), "data.refund_id", id="no-refund-id"
        ),
        pytest.param(
            body("payment.dispute_closed", id="p", dispute_id="d", status="maybe"), "data.status", id="dispute-status"
        ),
        pytest.param(
            body("payment.succeeded", id="p", amount="1.00", currency="EUR", invoice_id="i", payer="x"),
            "data.payer",
            id="payer",
        ),
        pytest.param(
            orjson.dumps({"type": "payment.failed", "timestamp": 5, "data": {"id": "p"}}), "timestamp", id="timestamp"
        ),
    ],
)
def test_bad_bodies_name_the_field(payload, field):
    with pytest.raises(ev.EventError) as caught:
        sw.parse("ten_x", "m", payload, received_at=NOW)
    assert caught.value.field == field
