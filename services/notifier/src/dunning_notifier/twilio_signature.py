"""Twilio's request signature (X-Twilio-Signature), computed and checked.

The signature is base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value)), the
parameters in name order (several values of one name sorted, duplicates once), the URL exactly as
Twilio requested it (the StatusCallback or inbound webhook URL, query included). Twilio is known to
sign a URL with the default port written out or left off, so a request is valid if either form
matches (as the official library's RequestValidator does). Written here rather than imported: the
`twilio` package is a large client the service does not otherwise need; tests hold the two equal.
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

HEADER = "X-Twilio-Signature"


def compute(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    message = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _with_and_without_port(url: str) -> tuple[str, str]:
    """The URL with its port written out (443 / 80 when it has none) and without any port."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}")), urlunsplit(parts._replace(netloc=netloc))


def valid(token: str, url: str, params: Sequence[tuple[str, str]], signature: str | None) -> bool:
    """Whether `signature` is Twilio's for this request (the URL with or without its port)."""
    if not signature or not token:
        return False
    return any(
        hmac.compare_digest(compute(token, candidate, params).encode(), signature.encode())
        for candidate in _with_and_without_port(url)
    )
