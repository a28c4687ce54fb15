"""Standard Webhooks on the wire (https://www.standardwebhooks.com): secrets, signatures and one POST.

A secret is `whsec_` + base64 of 32 random bytes. Each request carries `webhook-id` (the message id,
the same on every retry and replay, so a receiver can dedupe), `webhook-timestamp` (Unix seconds of
this attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, signed
with the `standardwebhooks` package's own `Webhook.sign`. During a rotation's overlap the message is
signed with the new and the old secret, both signatures space-separated (the spec allows several), so
a receiver still configured with the old secret keeps verifying.

`post` sends one attempt with httpx and classifies it (`Answer`): 2xx delivered; 408, 409, 429, 5xx
and network errors retryable (429/503 with their Retry-After); any other status final. A timeout
after the request went out is `in_doubt`: the receiver may have acted on it.
"""

import base64
import secrets as _secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from standardwebhooks import Webhook

from dunning.clock import utcnow

SNIPPET_CHARS = 500
RETRYABLE_STATUS = frozenset({408, 409, 429})


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def headers(message_id: str, body: str, signing_secrets: list[str], at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with each secret given (newest first)."""
    at = at or utcnow()
    signatures = " ".join(Webhook(s).sign(message_id, at, body) for s in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "dunning-webhooks/1",
    }


@dataclass(frozen=True)
class Answer:
    """What one attempt came to."""

    attempted_at: datetime
    duration_ms: int
    status_code: int | None  # None: no HTTP answer
    snippet: str | None
    error: str | None
    retry_after: float | None = None  # seconds the receiver asked us to wait (429/503)
    in_doubt: bool = False  # the request went out and no answer came back

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Worth another attempt: network errors, timeouts, 408, 409, 429 and 5xx."""
        code = self.status_code
        return code is None or code in RETRYABLE_STATUS or code >= 500


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) as seconds from now; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


async def post(
    client: httpx.AsyncClient, url: str, message_id: str, body: str, signing_secrets: list[str], timeout: float
) -> Answer:
    """One signed attempt; never raises for what the network or the receiver does."""
    at = utcnow()
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        response = await client.post(
            url,
            content=body.encode(),
            headers=headers(message_id, body, signing_secrets, at),
            timeout=timeout,
            follow_redirects=False,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return Answer(at, took(), None, None, f"connect: {type(exc).__name__}: {exc}"[:2000])
    except httpx.TimeoutException as exc:  # the request went out (or part of it): no answer
        return Answer(at, took(), None, None, f"timeout: {type(exc).__name__}"[:2000], in_doubt=True)
    except httpx.HTTPError as exc:
        return Answer(at, took(), None, None, f"{type(exc).__name__}: {exc}"[:2000], in_doubt=True)
    snippet = response.text[:SNIPPET_CHARS]
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    retry_after = None
    if response.status_code in (429, 503):
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
    return Answer(at, took(), response.status_code, snippet, error, retry_after)


def signing_secrets(row: dict, now: datetime | None = None) -> list[str]:
    """An endpoint row's secrets that sign now: the current one, and the previous one in its overlap."""
    now = now or utcnow()
    found = [row["secret"]]
    expires = row.get("previous_expires_at")
    if row.get("previous_secret") and expires is not None and expires > now:
        found.append(row["previous_secret"])
    return found
