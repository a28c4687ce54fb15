"""Stand-in for Twilio's Programmable Messaging (SMS), speaking its REST API as Twilio does.

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: HTTP Basic (AccountSid, AuthToken; the
  `twilio_account_sid` / `twilio_auth_token` secrets), a form with `To`, `From` or
  `MessagingServiceSid`, `Body`, optional `StatusCallback`. 201 with Twilio's message resource (`sid`
  "SM...", `status` "queued", `num_segments`, RFC 2822 dates, `uri`...). Errors in Twilio's shape
  `{"code", "message", "more_info", "status"}`: 20003 (401, authentication), 21602 / 21603 / 21604
  (a required field), 21211 (To not a valid number), 21617 (Body over 1600 characters), and Twilio's
  magic test numbers: To +15005550001 -> 21211, +15005550002 -> 21612 (cannot route), +15005550003 ->
  21408 (region not enabled), +15005550004 -> 21610 (recipient replied STOP), +15005550009 -> 21614
  (not a mobile number).
- `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`: the message as it is now.
- Then the status callbacks, as Twilio posts them to the message's StatusCallback: form fields
  `MessageSid`, `SmsSid`, `MessageStatus`, `SmsStatus`, `AccountSid`, `From`, `To`, `ApiVersion`
  (and `ErrorCode` on a failure), signed with `X-Twilio-Signature` by the official `twilio` library's
  RequestValidator: queued -> sent -> delivered; a `To` ending in 0000 goes queued -> sent ->
  undelivered with ErrorCode 30003 (unreachable handset).
- Dev only: `GET /_dev/sms` (every message, newest last; `?to=` filters), `POST /_dev/sms/inbound`
  {"url", "from", "body", "to"?} posts an incoming SMS to `url` signed the same way (what Twilio does
  for the number's messaging webhook) and answers the receiver's status and body.
State: every version of every message, one JSON line each (`messages.jsonl` under `directory`): the
last line of a sid is the message as it is; a restart reads them back.
"""

import asyncio
import base64
import hmac
import json
import re
import secrets as _secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from twilio.request_validator import RequestValidator

from dunning_notifier.sms_text import measure

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAGIC = {  # Twilio's test numbers and the errors they answer
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: +15005550002, is not currently reachable using the 'From' phone number via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +15005550003.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
STEP_SECONDS = 0.05  # between one status callback and the next


def _error(status: int, code: int, message: str) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


def _rfc2822(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=False).replace("-0000", "+0000")


class _Store:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "messages.jsonl"
        self.messages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    message = json.loads(line)
                    self.messages[message["sid"]] = message

    def save(self, message: dict[str, Any]) -> None:
        self.messages[message["sid"]] = message
        with self.path.open("a") as f:
            f.write(json.dumps(message, ensure_ascii=False) + "\n")


def router(directory: Path, secrets: dict[str, str]) -> APIRouter:
    api = APIRouter(tags=["twilio (SMS)"])
    store = _Store(directory)
    account, token = secrets.get("twilio_account_sid", ""), secrets.get("twilio_auth_token", "")
    validator = RequestValidator(token or "unset")

    def authorized(request: Request, account_sid: str) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not account or not token:
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return user == account_sid == account and hmac.compare_digest(password, token)

    clients: list[httpx.AsyncClient] = []
    pending: set[asyncio.Future] = set()  # callbacks in flight (a reference keeps each task alive)

    def shared_client() -> httpx.AsyncClient:
        if not clients:
            clients.append(httpx.AsyncClient(timeout=10))
        return clients[0]

    async def post_signed(client: httpx.AsyncClient, url: str, form: dict[str, str]) -> httpx.Response:
        signature = validator.compute_signature(url, form)
        return await client.post(url, data=form, headers={"X-Twilio-Signature": signature})

    async def callbacks(sid: str) -> None:
        """queued -> sent -> delivered (or undelivered, 30003, for a To ending in 0000), each posted."""
        message = store.messages[sid]
        failing = message["to"].endswith("0000")
        steps = [("sent", None), ("undelivered", 30003) if failing else ("delivered", None)]
        url = message.pop("_status_callback", None)
        client = shared_client()  # one client for every message: building one costs ~25 ms of CPU
        for position, (status, code) in enumerate([("queued", None), *steps]):
            await asyncio.sleep(STEP_SECONDS)
            now = datetime.now(UTC)
            message = {**store.messages[sid], "status": status, "date_updated": _rfc2822(now)}
            if status == "sent":
                message["date_sent"] = _rfc2822(now)
            if code is not None:
                message["error_code"], message["error_message"] = code, "Unreachable destination handset"
            if position:  # queued is what the create answered
                store.save(message)
            if not url:
                continue
            form = {
                "SmsSid": sid,
                "SmsStatus": status,
                "MessageStatus": status,
                "To": message["to"],
                "MessageSid": sid,
                "AccountSid": message["account_sid"],
                "From": message["from"] or "",
                "ApiVersion": API_VERSION,
            }
            if code is not None:
                form["ErrorCode"] = str(code)
            for attempt in range(3):
                try:
                    await post_signed(client, url, form)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.2 * (attempt + 1))

    @api.post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", status_code=201)
    async def create_message(account_sid: str, request: Request) -> Response:
        if not authorized(request, account_sid):
            return _error(401, 20003, "Authenticate")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to, sender, service = form.get("To", ""), form.get("From", ""), form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if not E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in MAGIC:
            code, message = MAGIC[to]
            return _error(400, code, message)
        if len(body) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        now = datetime.now(UTC)
        sid = "SM" + _secrets.token_hex(16)
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
        resource: dict[str, Any] = {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(now),
            "date_sent": None,
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(measure(body).segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "tags": {},
            "to": to,
            "uri": f"{uri}.json",
        }
        store.save(resource)
        if form.get("StatusCallback"):
            store.messages[sid] = {**resource, "_status_callback": form["StatusCallback"]}
        # Its own task, as Twilio calls back on its own time: a background task of the response would hold
        # the client's keep-alive connection (its next create) until every callback was answered.
        task = asyncio.ensure_future(callbacks(sid))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return JSONResponse(resource, status_code=201)

    @api.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}.json")
    async def fetch_message(account_sid: str, sid: str, request: Request) -> Response:
        if not authorized(request, account_sid):
            return _error(401, 20003, "Authenticate")
        message = store.messages.get(sid)
        if message is None or message["account_sid"] != account_sid:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse({k: v for k, v in message.items() if not k.startswith("_")})

    @api.get("/_dev/sms")
    async def list_messages(to: str | None = None) -> dict[str, Any]:
        found = [
            {k: v for k, v in m.items() if not k.startswith("_")}
            for m in store.messages.values()
            if to is None or m["to"] == to
        ]
        return {"messages": found}

    @api.post("/_dev/sms/inbound")
    async def inbound(request: Request) -> dict[str, Any]:
        spec = await request.json()
        form = {
            "MessageSid": "SM" + _secrets.token_hex(16),
            "SmsSid": "",
            "AccountSid": account,
            "From": spec["from"],
            "To": spec.get("to", "+15005550006"),
            "Body": spec["body"],
            "NumMedia": "0",
            "NumSegments": "1",
            "ApiVersion": API_VERSION,
        }
        form["SmsSid"] = form["MessageSid"]
        async with httpx.AsyncClient(timeout=10) as client:
            response = await post_signed(client, spec["url"], form)
        return {"status": response.status_code, "body": response.text}

    return api
