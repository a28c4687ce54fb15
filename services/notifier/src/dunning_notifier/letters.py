"""The `letter` channel: a PDF per reminder (letter_content.py, letter_pdf.py), mailed through a
print-and-mail provider with Lob's Print & Mail API shape.

One attempt: compose and render the PDF (deterministic: a retry makes the same bytes), save it in
`letters` (letter_repository.py), then `POST {printmail_api_url}/v1/letters` (HTTP Basic, the API key
as username, no password; multipart: `to[...]`, `from[...]`, `file`, `color`, `double_sided`,
`address_placement`, `use_type=operational`, `metadata[...]`) with `Idempotency-Key: <delivery id>`:
the provider answers a repeated key with the letter it already made, so a retry never prints twice.
Outcomes:
- 200: Sent, the provider's `ltr_...` id recorded with its `expected_delivery_date`;
- no postal address -> Failed("invalid_recipient", permanent); a template or payload that cannot be
  rendered -> Failed("template_error", permanent);
- 400, 404, 413, 422 (the request or the address refused) -> Failed("printmail_<status>", permanent);
- 401, 403 (our key: configuration), 408, 409, 429, 5xx -> Retry("printmail_<status>");
- cannot connect -> Retry("printmail_connect"); a timeout or a dropped connection after the request
  went out -> Retry("printmail_timeout", in_doubt=True): the provider may have made the letter; the
  retry's Idempotency-Key finds it (within the provider's key lifetime, 24 h for Lob).
Tracking: the provider's webhooks (`Lob-Signature`: hex HMAC-SHA256 of `<Lob-Signature-Timestamp>.<body>`
with the webhook secret) are verified by `verify_signature` and recorded by letters_api.py.
"""

import asyncio
import hashlib
import hmac
import time
from datetime import date
from typing import Any

import asyncpg
import httpx

from dunning.clock import utcnow
from dunning.db import create_pool
from dunning.logging import get_logger
from dunning_notifier import letter_repository as letters_repo
from dunning_notifier.letter_content import NoPostalAddress, compose
from dunning_notifier.letter_pdf import render_pdf
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.rendering import Renderer, RenderError
from dunning_notifier.settings import Settings
from dunning_notifier.tenant_templates import TemplatesUnavailable

log = get_logger(__name__)
PERMANENT_STATUS = frozenset({400, 404, 413, 422})
SIGNATURE_TOLERANCE_SECONDS = 300


def lob_address(prefix: str, address: dict[str, Any]) -> dict[str, str]:
    """An address as Lob's form fields (`to[name]`, `to[address_line1]`, ...). Lob has two street
    lines: any further lines are joined into the second."""
    lines = list(address["lines"])
    fields = {
        "name": address["name"][:40],
        "address_line1": lines[0],
        "address_line2": ", ".join(lines[1:]),
        "address_city": address["city"],
        "address_state": address.get("region") or "",
        "address_zip": address.get("postal_code") or "",
        "address_country": address["country"],
    }
    return {f"{prefix}[{k}]": v for k, v in fields.items() if v}


class LetterChannel:
    """The `letter` provider (channels.PROVIDERS). `pool`: the notifier's, where bootstrap passes it;
    else a small pool of its own is opened on first use (the PROVIDERS factory gets settings only)."""

    name = "letter"

    def __init__(self, settings: Settings, renderer: Renderer, pool: asyncpg.Pool | None = None):
        self.settings = settings
        self.renderer = renderer
        self._pool = pool
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    def open_session(self) -> "LetterSession":
        return LetterSession(self)

    async def resources(self) -> tuple[asyncpg.Pool, httpx.AsyncClient]:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self.settings.database_url, self.settings.db_schema, min_size=1, max_size=2
                )
            if self._client is None:
                self._client = httpx.AsyncClient(
                    base_url=self.settings.printmail_api_url or "",
                    auth=httpx.BasicAuth(self.settings.printmail_api_key or "", ""),
                    timeout=httpx.Timeout(self.settings.printmail_timeout, connect=10.0),
                )
            return self._pool, self._client

    def form(self, d: Delivery, address: dict[str, Any], sender: dict[str, Any]) -> dict[str, str]:
        s = self.settings
        return {
            "description": f"dunning reminder {d.delivery_id}",
            **lob_address("to", address),
            **lob_address("from", sender),
            "color": "true" if s.letter_color else "false",
            "double_sided": "true" if s.letter_double_sided else "false",
            "address_placement": s.letter_address_placement,
            "use_type": "operational",
            "metadata[delivery_id]": d.delivery_id,
            "metadata[tenant_id]": d.tenant_id,
        }


class LetterSession:
    def __init__(self, channel: LetterChannel):
        self.channel = channel

    async def close(self) -> None:  # the channel's client and pool are shared by every worker
        return None

    async def send(self, d: Delivery) -> Outcome:
        ch = self.channel
        if not ch.settings.printmail_api_url:
            return Failed("channel_not_configured", "NOTIFIER_PRINTMAIL_API_URL is not set", permanent=True)
        try:  # the tenant's own templates and brand, loaded before the (sync) render: tenant_templates.py
            await ch.renderer.prepare(d.tenant_id)
        except TemplatesUnavailable as exc:
            return Retry("templates_unavailable", str(exc))
        try:
            letter, address, sender = compose(d.payload, ch.renderer, ch.settings)
            pdf = render_pdf(letter)
        except NoPostalAddress as exc:
            return Failed("invalid_recipient", str(exc), permanent=True)
        except RenderError as exc:
            return Failed("template_error", str(exc), permanent=True)
        pool, client = await ch.resources()
        await letters_repo.save_pdf(pool, d.delivery_id, d.tenant_id, letter.paper, pdf)
        files = {"file": (f"{d.delivery_id}.pdf", pdf, "application/pdf")}
        try:
            response = await client.post(
                "/v1/letters", data=ch.form(d, address, sender), files=files, headers={"Idempotency-Key": d.delivery_id}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return Retry("printmail_connect", f"{type(exc).__name__}: {exc}")
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            return Retry("printmail_timeout", f"{type(exc).__name__}: {exc}", in_doubt=True)
        except httpx.HTTPError as exc:
            return Retry("printmail_connect", f"{type(exc).__name__}: {exc}")
        return await self._outcome(pool, d, response)

    @staticmethod
    async def _outcome(pool: asyncpg.Pool, d: Delivery, response: httpx.Response) -> Outcome:
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
                letter_id = str(body["id"])
            except (ValueError, KeyError, TypeError) as exc:
                return Retry("printmail_bad_response", f"200 without a letter id: {exc}", in_doubt=True)
            expected = _date(body.get("expected_delivery_date"))
            now = utcnow()
            await letters_repo.accepted(pool, d.delivery_id, letter_id, expected, now)
            log.info("notifier.letter.accepted", letter_id=letter_id, expected_delivery_date=str(expected))
            return Sent(provider_message_id=letter_id, sent_at=now)
        message = _error_message(response)
        code = f"printmail_{status}"
        if status in PERMANENT_STATUS:
            return Failed(code, f"{status} {message}", permanent=True)
        return Retry(code, f"{status} {message}")


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    """Lob's error shape: {"error": {"message", "status_code", "code"}}; else the body's start."""
    try:
        error = response.json().get("error") or {}
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")[:1000]
    except (ValueError, AttributeError):
        return response.text[:500]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Lob's webhook signature: hex HMAC-SHA256 of `<timestamp>.<raw body>` keyed with the secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, timestamp: str | None, given: str | None, body: bytes, now: float | None = None
) -> str | None:
    """None if the request is authentic and fresh; else which header is at fault and why."""
    if not timestamp:
        return "Lob-Signature-Timestamp is missing"
    if not given:
        return "Lob-Signature is missing"
    try:
        seconds = float(timestamp)
    except ValueError:
        return "Lob-Signature-Timestamp is not a number"
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    if abs((now or time.time()) - seconds) > SIGNATURE_TOLERANCE_SECONDS:
        return "Lob-Signature-Timestamp is more than 5 minutes away from now"
    if not hmac.compare_digest(signature(secret, timestamp, body), given.strip().lower()):
        return "Lob-Signature does not match"
    return None
