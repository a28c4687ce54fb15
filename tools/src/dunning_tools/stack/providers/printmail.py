"""Stand-in for a print-and-mail provider with Lob's Print & Mail API (letters).

- `POST /v1/letters`: HTTP Basic with the API key as username (`secrets["printmail_api_key"]`), a
  multipart form: `to[...]` and `from[...]` addresses (`name`, `address_line1`, `address_line2`,
  `address_city`, `address_state`, `address_zip`, `address_country`), `file` (a PDF), `color`,
  `double_sided`, `address_placement`, `use_type`, `description`, `metadata[...]`. Errors in Lob's
  shape `{"error": {"message", "status_code", "code"}}` (401 bad key, 422 a field). An
  `Idempotency-Key` seen before answers the letter made the first time (nothing printed twice).
  Answers Lob's letter object (`id` "ltr_...", `expected_delivery_date`, `to`, `from`, ...).
- `GET /v1/letters/{id}`: the letter object.
- Dev only: `GET /_dev/letters` (every letter, with its idempotency key and PDF's SHA-256),
  `GET /_dev/letters/{id}.pdf` (the PDF as received), `PUT /_dev/webhook` {"url", "secret"} (where
  tracking events go: Lob configures this in its dashboard; `secrets["printmail_webhook_url"]` and
  `["printmail_webhook_secret"]` configure it from the start), `POST /_dev/letters/{id}/events`
  {"event_type": "letter.mailed"} sends that event, signed as Lob does (`Lob-Signature`: hex
  HMAC-SHA256 of `<Lob-Signature-Timestamp>.<body>`), and answers the receiver's status.
State (letters, PDFs, keys, the webhook) is kept in files under `directory`.
"""

import base64
import hashlib
import hmac
import json
import secrets as _secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

ADDRESS_FIELDS = (
    "name",
    "company",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)
PLACEMENTS = ("top_first_page", "insert_blank_page", "bottom_first_page_center", "bottom_first_page")
EVENT_TYPES = (
    "letter.mailed",
    "letter.in_transit",
    "letter.in_local_area",
    "letter.processed_for_delivery",
    "letter.delivered",
    "letter.re-routed",
    "letter.returned_to_sender",
)


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "status_code": status, "code": code}}, status_code=status)


def _authorized(request: Request, key: str | None) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not key:
        return False
    try:
        username = base64.b64decode(encoded).decode().split(":", 1)[0]
    except ValueError:
        return False
    return hmac.compare_digest(username, key)


def _address(form: Any, prefix: str) -> tuple[dict[str, str] | None, str | None]:
    """The `prefix[...]` address, or Lob's message for what is missing."""
    address = {f: str(form.get(f"{prefix}[{f}]") or "").strip() for f in ADDRESS_FIELDS}
    address = {k: v for k, v in address.items() if v}
    if not address.get("name") and not address.get("company"):
        return None, f"{prefix}.name or {prefix}.company is required"
    for field in ("address_line1", "address_city", "address_country"):
        if not address.get(field):
            return None, f"{prefix}.{field} is required"
    country = address["address_country"].upper()
    if len(country) != 2 or not country.isalpha():
        return None, f"{prefix}.address_country must be a 2-letter country short-name code (ISO 3166)"
    if country == "US" and not (address.get("address_state") and address.get("address_zip")):
        return None, f"{prefix}.address_state and {prefix}.address_zip are required for US addresses"
    return {**address, "address_country": country}, None


class _Store:
    def __init__(self, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)

    def letter(self, letter_id: str) -> dict[str, Any] | None:
        path = self.dir / f"{letter_id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def by_key(self, key: str) -> dict[str, Any] | None:
        path = self.dir / "keys" / hashlib.sha256(key.encode()).hexdigest()
        return self.letter(path.read_text()) if path.is_file() else None

    def save(self, letter: dict[str, Any], pdf: bytes, key: str | None) -> None:
        (self.dir / f"{letter['id']}.pdf").write_bytes(pdf)
        (self.dir / f"{letter['id']}.json").write_text(json.dumps(letter))
        if key:
            (self.dir / "keys").mkdir(exist_ok=True)
            (self.dir / "keys" / hashlib.sha256(key.encode()).hexdigest()).write_text(letter["id"])

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(p.read_text()) for p in self.dir.glob("ltr_*.json")), key=lambda x: x["date_created"])

    def webhook(self) -> dict[str, str] | None:
        path = self.dir / "webhook.json"
        return json.loads(path.read_text()) if path.is_file() else None


def router(directory: Path, secrets: dict[str, str]) -> APIRouter:
    api = APIRouter(tags=["printmail (Lob)"])
    store = _Store(directory)
    # The stack may configure the webhook up front (what Lob's dashboard holds); PUT /_dev/webhook overrides.
    url, secret = secrets.get("printmail_webhook_url"), secrets.get("printmail_webhook_secret")
    configured = {"url": url, "secret": secret} if url and secret else None

    @api.post("/v1/letters")
    async def create_letter(request: Request) -> Response:
        if not _authorized(request, secrets.get("printmail_api_key")):
            return _error(
                401, "Your API key is not valid. Please sign up on lob.com to get a valid api key.", "unauthorized"
            )
        key = request.headers.get("idempotency-key") or request.query_params.get("idempotency_key")
        if key and (seen := store.by_key(key)) is not None:
            return JSONResponse(seen)
        try:
            form = await request.form()
        except Exception as exc:  # not multipart / urlencoded
            return _error(422, f"the request body could not be read: {exc}", "invalid")
        to, problem = _address(form, "to")
        sender, problem = (None, problem) if problem else _address(form, "from")
        if problem or to is None or sender is None:
            return _error(422, problem or "an address is invalid", "invalid")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(422, "file is required", "invalid")
        pdf = await upload.read()
        if not pdf.startswith(b"%PDF-"):
            return _error(422, "file must be a PDF", "invalid_file")
        use_type = form.get("use_type")
        if use_type not in ("marketing", "operational"):
            return _error(422, "use_type must be one of [marketing, operational]", "invalid")
        color = form.get("color")
        if color not in ("true", "false"):
            return _error(422, "color is required and must be a boolean", "invalid")
        placement = form.get("address_placement") or "top_first_page"
        if placement not in PLACEMENTS:
            return _error(422, f"address_placement must be one of {list(PLACEMENTS)}", "invalid")
        now = datetime.now(UTC)
        letter: dict[str, Any] = {
            "id": "ltr_" + _secrets.token_hex(10),
            "object": "letter",
            "description": form.get("description"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[") and isinstance(v, str)},
            "to": {"id": "adr_" + _secrets.token_hex(8), "object": "address", **to},
            "from": {"id": "adr_" + _secrets.token_hex(8), "object": "address", **sender},
            "color": color == "true",
            "double_sided": form.get("double_sided", "true") == "true",
            "address_placement": placement,
            "use_type": use_type,
            "mail_type": form.get("mail_type") or "usps_first_class",
            "carrier": "USPS",
            "tracking_events": [],
            "expected_delivery_date": (now + timedelta(days=5)).date().isoformat(),
            "send_date": now.isoformat().replace("+00:00", "Z"),
            "date_created": now.isoformat().replace("+00:00", "Z"),
            "date_modified": now.isoformat().replace("+00:00", "Z"),
            "idempotency_key": key,
            "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
            "pdf_bytes": len(pdf),
        }
        store.save(letter, pdf, key)
        return JSONResponse(letter)

    @api.get("/v1/letters/{letter_id}")
    async def get_letter(letter_id: str, request: Request) -> Response:
        if not _authorized(request, secrets.get("printmail_api_key")):
            return _error(401, "Your API key is not valid.", "unauthorized")
        letter = store.letter(letter_id) if letter_id.startswith("ltr_") else None
        return JSONResponse(letter) if letter else _error(404, "letter not found", "not_found")

    @api.get("/_dev/letters")
    async def list_letters() -> dict[str, Any]:
        return {"object": "list", "data": store.all()}

    @api.get("/_dev/letters/{letter_id}.pdf")
    async def letter_pdf(letter_id: str) -> Response:
        path = directory / f"{letter_id}.pdf"
        if not letter_id.startswith("ltr_") or not path.is_file():
            return _error(404, "letter not found", "not_found")
        return Response(path.read_bytes(), media_type="application/pdf")

    @api.put("/_dev/webhook")
    async def set_webhook(request: Request) -> dict[str, str]:
        body = await request.json()
        (directory / "webhook.json").write_text(json.dumps({"url": body["url"], "secret": body["secret"]}))
        return {"url": body["url"]}

    @api.post("/_dev/letters/{letter_id}/events")
    async def send_event(letter_id: str, request: Request) -> Response:
        letter, hook = store.letter(letter_id), store.webhook() or configured
        event_type = (await request.json()).get("event_type")
        if letter is None:
            return _error(404, "letter not found", "not_found")
        if hook is None:
            return _error(409, "no webhook configured (PUT /_dev/webhook)", "conflict")
        if event_type not in EVENT_TYPES:
            return _error(422, f"event_type must be one of {list(EVENT_TYPES)}", "invalid")
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {
            "id": "evt_" + _secrets.token_hex(10),
            "object": "event",
            "body": letter,
            "reference_id": letter_id,
            "event_type": {"id": event_type, "resource": "letters", "enabled_for_test": True, "object": "event_type"},
            "date_created": now,
        }
        body = json.dumps(event).encode()
        stamp = str(int(time.time()))
        signature = hmac.new(hook["secret"].encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "Lob-Signature": signature, "Lob-Signature-Timestamp": stamp}
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(hook["url"], content=body, headers=headers)
        return JSONResponse({"event": event, "status_code": answer.status_code, "response": answer.text[:2000]})

    return api
