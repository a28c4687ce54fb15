"""Stripe-Signature verification: what Stripe accepts, we accept; everything else is refused."""

import pytest

from dunning_reconciliation.stripe_signature import (
    VERIFICATION_FAILED,
    SignatureError,
    compute_signature,
    sign,
    verify,
)

pytestmark = pytest.mark.unit

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
BODY = b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}}'
NOW = 1_790_000_000


def v1(secret: str, body: bytes = BODY, ts: int = NOW) -> str:
    return compute_signature(body, secret, ts)


@pytest.mark.parametrize(
    ("header", "secrets", "now"),
    [
        pytest.param(sign(BODY, SECRET, NOW), [SECRET], NOW, id="valid"),
        pytest.param(f"t={NOW},v1={v1('whsec_other')},v1={v1(SECRET)}", [SECRET], NOW, id="second-v1-matches"),
        pytest.param(sign(BODY, OLD_SECRET, NOW), [SECRET, OLD_SECRET], NOW, id="rotation-old-secret-still-active"),
        pytest.param(f"t={NOW},v1={v1(SECRET)},v1={v1(OLD_SECRET)}", [OLD_SECRET], NOW, id="rotation-two-signatures"),
        pytest.param(
            f"t={NOW},v1={v1(SECRET)},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            [SECRET],
            NOW,
            id="extra-v0-scheme-ignored",
        ),
        pytest.param(f"t={NOW}, v1={v1(SECRET)}, x9=whatever", [SECRET], NOW, id="spaces-and-unknown-scheme"),
        pytest.param(sign(BODY, SECRET, NOW), [SECRET], NOW + 300, id="exactly-at-tolerance"),
    ],
)
def test_accepts(header, secrets, now):
    assert verify(BODY, header, secrets, tolerance=300, now=now) == NOW


@pytest.mark.parametrize(
    ("body", "header", "secrets", "now", "message"),
    [
        pytest.param(BODY, sign(BODY, "whsec_wrong", NOW), [SECRET], NOW, VERIFICATION_FAILED, id="wrong-secret"),
        pytest.param(
            BODY.replace(b"evt_1", b"evt_2"),
            sign(BODY, SECRET, NOW),
            [SECRET],
            NOW,
            VERIFICATION_FAILED,
            id="tampered-body",
        ),
        pytest.param(
            BODY,
            f"t={NOW + 1},v1={v1(SECRET)}",
            [SECRET],
            NOW,
            VERIFICATION_FAILED,
            id="timestamp-changed-after-signing",
        ),
        pytest.param(BODY, sign(BODY, SECRET, NOW), [], NOW, VERIFICATION_FAILED, id="unknown-tenant-no-secrets"),
        pytest.param(BODY, sign(BODY, SECRET, NOW - 301), [SECRET], NOW, "tolerance", id="stale-301s"),
        pytest.param(BODY, sign(BODY, SECRET, NOW + 301), [SECRET], NOW, "tolerance", id="future-301s"),
        pytest.param(BODY, f"v1={v1(SECRET)}", [SECRET], NOW, "t=", id="missing-t"),
        pytest.param(BODY, f"t=abc,v1={v1(SECRET)}", [SECRET], NOW, "t=", id="non-numeric-t"),
        pytest.param(BODY, f"t={NOW},t={NOW},v1={v1(SECRET)}", [SECRET], NOW, "t=", id="two-t"),
        pytest.param(BODY, f"t={NOW},v0={v1(SECRET)}", [SECRET], NOW, "No v1", id="missing-v1"),
        pytest.param(BODY, "garbage", [SECRET], NOW, "t=", id="garbage"),
        pytest.param(BODY, "t=\u00b2\u00b3,v1=\u00e9", [SECRET], NOW, "t=", id="non-ascii"),
        pytest.param(BODY, f"t={NOW},v1=\u00e9\u00e9", [SECRET], NOW, VERIFICATION_FAILED, id="non-ascii-signature"),
        pytest.param(BODY, "", [SECRET], NOW, "Missing", id="empty-header"),
        pytest.param(BODY, None, [SECRET], NOW, "Missing", id="no-header"),
    ],
)
def test_refuses(body, header, secrets, now, message):
    with pytest.raises(SignatureError, match=message):
        verify(body, header, secrets, tolerance=300, now=now)


def test_sign_matches_stripes_documented_construction():
    # Stripe: HMAC-SHA256 with the endpoint secret as key over "{t}.{payload}", hex-encoded.
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY.decode(), SECRET, NOW) == f"t={NOW},v1={expected}"
