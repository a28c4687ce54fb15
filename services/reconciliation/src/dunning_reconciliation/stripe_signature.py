"""Stripe webhook signatures, exactly as Stripe signs them.

Header: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`. Each v1 is
hex(HMAC-SHA256(key=endpoint secret as written, "whsec_..." included; message=f"{t}.{raw body}")).
Stripe sends one v1 per active secret of the endpoint while a secret rolls; other schemes (v0, the
test-mode scheme) are ignored. A request is accepted when any v1 matches any of the tenant's active
secrets and the timestamp is within the tolerance of now (either side: a future timestamp is as
suspect as an old one).

`sign()` produces Stripe-identical headers for tests and the demo.
"""

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
VERIFICATION_FAILED = "signature verification failed"
# Used when a tenant has no secret (or does not exist), so that the answer takes as long as a wrong
# signature does: an unknown tenant must not be told apart from a bad signature.
_NO_SECRET = "whsec_no-active-secret-for-this-endpoint"
_MAX_SIGNATURES = 16


class SignatureError(ValueError):
    """The request is refused; the message is safe to show the caller."""


@dataclass(frozen=True)
class SignatureHeader:
    timestamp: int
    signatures: tuple[str, ...]


def parse_header(header: str | None) -> SignatureHeader:
    if header is None or not header.strip():
        raise SignatureError("Missing Stripe-Signature header.")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value.strip())
        elif key == SCHEME:
            signatures.append(value.strip())
    if len(timestamps) != 1 or not _is_unix_seconds(timestamps[0]):
        raise SignatureError("Malformed Stripe-Signature header: expected one t=<unix timestamp>.")
    if not signatures:
        raise SignatureError("No v1 signature in the Stripe-Signature header.")
    return SignatureHeader(int(timestamps[0]), tuple(signatures[:_MAX_SIGNATURES]))


def _is_unix_seconds(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def _payload_bytes(payload: bytes | str) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else payload


def compute_signature(payload: bytes | str, secret: str, timestamp: int) -> str:
    message = f"{timestamp}.".encode() + _payload_bytes(payload)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for payload, as Stripe would send it."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},{SCHEME}={compute_signature(payload, secret, ts)}"


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check the header against the raw payload; returns the signed timestamp or raises SignatureError."""
    parsed = parse_header(header)
    candidates = [s.encode("utf-8", "replace") for s in parsed.signatures]
    matched = False
    for secret in secrets or (_NO_SECRET,):
        expected = compute_signature(payload, secret, parsed.timestamp).encode()
        for candidate in candidates:
            # No early exit: the time taken does not depend on which signature matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not secrets or not matched:
        raise SignatureError(VERIFICATION_FAILED)
    current = time.time() if now is None else now
    if abs(current - parsed.timestamp) > tolerance:
        raise SignatureError("Timestamp outside the tolerance zone.")
    return parsed.timestamp
