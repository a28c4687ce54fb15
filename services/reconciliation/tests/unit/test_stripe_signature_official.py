"""Our Stripe signatures against Stripe's own library: a header we sign verifies with
`stripe.Webhook.construct_event`, and one Stripe's code computes verifies with ours; each refuses
what the other refuses (wrong secret, stale)."""

import time
from pathlib import Path

import pytest

from dunning_reconciliation.stripe_signature import SignatureError, sign, verify

stripe = pytest.importorskip("stripe")
pytestmark = pytest.mark.unit
SECRET = "whsec_test_official_library_check"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def official_header(payload: bytes, secret: str, timestamp: int) -> str:
    """The header as stripe-python computes a signature (its WebhookSignature helper)."""
    signed = f"{timestamp}.{payload.decode('utf-8')}"
    return f"t={timestamp},v1={stripe.WebhookSignature._compute_signature(signed, secret)}"


@pytest.mark.parametrize("name", NAMES)
def test_our_signature_verifies_with_stripes_library(name):
    payload = (FIXTURES / f"{name}.json").read_bytes()
    event = stripe.Webhook.construct_event(payload.decode("utf-8"), sign(payload, SECRET), SECRET)
    assert event.type == name and event.id.startswith("evt_")


@pytest.mark.parametrize("name", NAMES)
def test_stripes_signature_verifies_with_ours(name):
    payload = (FIXTURES / f"{name}.json").read_bytes()
    now = int(time.time())
    assert verify(payload, official_header(payload, SECRET, now), [SECRET]) == now


@pytest.mark.parametrize(
    ("secret", "age"),
    [pytest.param("whsec_someone_else", 0, id="wrong-secret"), pytest.param(SECRET, 301, id="stale")],
)
def test_both_refuse_the_same_headers(secret, age):
    payload = (FIXTURES / "charge.refunded.json").read_bytes()
    header = sign(payload, secret, int(time.time()) - age)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode("utf-8"), header, SECRET, tolerance=300)
    with pytest.raises(SignatureError):
        verify(payload, header, [SECRET], tolerance=300)
