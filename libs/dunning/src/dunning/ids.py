"""Prefixed, time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32).

Time-ordered ids keep B-tree inserts local and make ids sortable by creation time; the prefix tells
a reader what the id names (inv_, cus_, stg_, pay_, dlv_, ten_). The random part is base32-encoded
in C (80 bits are exactly 16 characters) and translated to Crockford's alphabet; a bulk import gets
its ids in one batch (one urandom call).
"""

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_last: list = [-1, ""]  # the millisecond last encoded, and its 10 characters


def _time_chars(ms: int) -> str:
    if _last[0] != ms:
        _last[:] = [ms, "".join(_ALPHABET[(ms >> shift) & 31] for shift in range(45, -5, -5))]
    return _last[1]


def new_id(prefix: str) -> str:
    return (
        prefix
        + "_"
        + _time_chars(int(time.time() * 1000))
        + base64.b32encode(os.urandom(10)).translate(_CROCKFORD).decode()
    )


def new_ids(prefix: str, n: int) -> list[str]:
    """n ids `<prefix>_<26 chars>`, all of the same millisecond."""
    head = prefix + "_" + _time_chars(int(time.time() * 1000))
    tails = base64.b32encode(os.urandom(10 * n)).translate(_CROCKFORD).decode()
    return [head + tails[i : i + 16] for i in range(0, 16 * n, 16)]
