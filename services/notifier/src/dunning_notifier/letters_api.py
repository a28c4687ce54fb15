"""HTTP routes of letters: a letter's PDF as sent and its tracking, and the provider's tracking webhook.

- `GET /v1/deliveries/{delivery_id}/letter.pdf` (tenant API key): the PDF exactly as posted to the
  print-and-mail provider (stored bytes, not a re-rendering);
- `GET /v1/deliveries/{delivery_id}/letter`: the provider's letter id, expected delivery date and
  the tracking events received so far;
- `POST /v1/providers/printmail/events`: the provider's webhook (Lob's event shape), verified with
  `Lob-Signature` / `Lob-Signature-Timestamp` and the `printmail_webhook_secret` setting; each event
  is recorded once (by its id) on the letter it names.
"""

from datetime import date, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Path, Request, Response
from pydantic import BaseModel, Field

from dunning.http import Problem, TenantId
from dunning.logging import get_logger
from dunning_notifier import letter_repository as letters_repo
from dunning_notifier.letters import verify_signature
from dunning_notifier.schemas import DELIVERY_ID

log = get_logger(__name__)
TAG = {
    "name": "letters",
    "description": "Letters: the PDF a reminder letter was printed from, and its postal tracking.",
}
_NOT_A_LETTER = "No letter for delivery {!r} of this tenant (not a letter delivery, or not rendered yet)."


class LetterEventOut(BaseModel):
    event_id: str = Field(description="The provider's event id (evt_...)")
    event_type: str = Field(
        description="letter.mailed, letter.in_transit, letter.delivered, letter.returned_to_sender, ..."
    )
    occurred_at: datetime
    received_at: datetime


class LetterOut(BaseModel):
    delivery_id: str
    paper: str = Field(description="A4 (DIN 5008 form B) or LETTER (US Letter)")
    pdf_sha256: str = Field(description="SHA-256 of the PDF (hex), also the PDF's ETag")
    pdf_bytes: int
    provider_letter_id: str | None = Field(description="The provider's letter id (ltr_...) once it accepted it")
    expected_delivery_date: date | None
    rendered_at: datetime
    accepted_at: datetime | None
    events: list[LetterEventOut]


# Lob's event object, as far as the notifier reads it (the raw body is verified and kept whole).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event_type", "date_created"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "description": "evt_..."},
        "object": {"type": "string", "const": "event"},
        "reference_id": {"type": "string", "description": "The letter's id (ltr_...)"},
        "event_type": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string", "pattern": "^letter\\."}},
        },
        "date_created": {"type": "string", "format": "date-time"},
        "body": {"type": "object", "description": "The letter object"},
    },
}


class EventRecorded(BaseModel):
    recorded: bool = Field(description="false: this event id was already recorded (a retry of the webhook)")
    delivery_id: str


def add_routes(app: FastAPI, deps: Any) -> None:
    """The routes above, on the app itself (the input guard names a refused path parameter from the
    app's own routes); `deps`: api.ApiDeps (pool, settings)."""

    @app.get(
        "/v1/deliveries/{delivery_id}/letter.pdf",
        tags=["letters"],
        operation_id="getLetterPdf",
        summary="The PDF of a letter delivery, as sent to the print-and-mail provider",
        description=(
            "The exact bytes posted to the provider for this delivery (a consolidated notice's delivery id works"
            " too). A4 letters follow DIN 5008 form B (address window 20 mm from the left, 45 mm from the top,"
            " 85 x 45 mm); US Letter ones a #10 window envelope. `ETag` is the SHA-256 of the bytes."
        ),
        response_class=Response,
        responses={
            200: {
                "description": "The PDF",
                "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
            },
            404: {"description": "No letter for this delivery (another channel, or not rendered yet)"},
        },
    )
    async def get_letter_pdf(delivery_id: Annotated[str, Path(pattern=DELIVERY_ID)], tenant_id: TenantId) -> Response:
        row = await letters_repo.get_pdf(deps.pool, tenant_id, delivery_id)
        if row is None:
            raise Problem.not_found("delivery_id", _NOT_A_LETTER.format(delivery_id))
        return Response(
            content=bytes(row["pdf"]),
            media_type="application/pdf",
            headers={
                "ETag": f'"{row["pdf_sha256"]}"',
                "Content-Disposition": f'inline; filename="{delivery_id}.pdf"',
            },
        )

    @app.get(
        "/v1/deliveries/{delivery_id}/letter",
        response_model=LetterOut,
        tags=["letters"],
        operation_id="getLetter",
        summary="A letter delivery's provider id, expected delivery date and tracking events",
        responses={404: {"description": "No letter for this delivery"}},
    )
    async def get_letter(delivery_id: Annotated[str, Path(pattern=DELIVERY_ID)], tenant_id: TenantId) -> LetterOut:
        found = await letters_repo.get_letter(deps.pool, tenant_id, delivery_id)
        if found is None:
            raise Problem.not_found("delivery_id", _NOT_A_LETTER.format(delivery_id))
        row, events = found
        return LetterOut(**dict(row), events=[LetterEventOut(**dict(e)) for e in events])

    @app.post(
        "/v1/providers/printmail/events",
        response_model=EventRecorded,
        tags=["letters"],
        operation_id="receivePrintmailEvent",
        summary="The print-and-mail provider's tracking webhook (Lob's event shape, signed)",
        description=(
            "Called by the provider, not by tenants: an event `{id, event_type: {id}, reference_id, body,"
            " date_created}` signed with `Lob-Signature` (hex HMAC-SHA256 of `<Lob-Signature-Timestamp>.<raw"
            " body>` with the webhook secret, NOTIFIER_PRINTMAIL_WEBHOOK_SECRET; timestamps older than 5 minutes"
            " are refused). Recorded once per event id on the letter whose provider id it names."
        ),
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": EVENT_SCHEMA}}}},
        responses={
            401: {"description": "Missing, stale or wrong signature (or no webhook secret configured)"},
            404: {"description": "No letter with the event's reference_id"},
        },
    )
    async def receive_event(
        request: Request,
        lob_signature: Annotated[str | None, Header(alias="Lob-Signature")] = None,
        lob_signature_timestamp: Annotated[str | None, Header(alias="Lob-Signature-Timestamp")] = None,
    ) -> EventRecorded:
        secret = getattr(deps.settings, "printmail_webhook_secret", None)
        if not secret:  # nothing can be verified: refused like a bad signature (not a 5xx the provider retries)
            why = (
                "Lob-Signature cannot be verified: no webhook secret is configured (NOTIFIER_PRINTMAIL_WEBHOOK_SECRET)"
            )
            raise Problem(401, why, errors=[{"field": "Lob-Signature", "message": why, "code": "unauthorized"}])
        body = await request.body()
        fault = verify_signature(secret, lob_signature_timestamp, lob_signature, body)
        if fault is not None:
            field = fault.split(" ", 1)[0]
            raise Problem(401, fault, errors=[{"field": field, "message": fault, "code": "unauthorized"}])
        event = _parse_event(body)
        delivery_id, new = await letters_repo.record_event(
            deps.pool, event["id"], event["letter_id"], event["type"], event["at"], event["raw"]
        )
        if delivery_id is None:
            raise Problem.not_found("reference_id", f"No letter {event['letter_id']!r} was sent by this notifier.")
        log.info("notifier.letter.event", delivery_id=delivery_id, event_type=event["type"], new=new)
        return EventRecorded(recorded=new, delivery_id=delivery_id)


def _parse_event(body: bytes) -> dict[str, Any]:
    """The fields an event must have, each named in a 422 when missing or malformed."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem.invalid("body", f"not JSON: {exc}", "invalid_json") from exc
    if not isinstance(raw, dict):
        raise Problem.invalid("body", "must be a JSON object", "type")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise Problem.invalid("id", "the event id is required", "required")
    event_type = raw.get("event_type")
    type_id = event_type.get("id") if isinstance(event_type, dict) else event_type
    if not isinstance(type_id, str) or not type_id.startswith("letter."):
        raise Problem.invalid("event_type.id", "must be a letter event type (letter.*)", "invalid")
    inner: dict[str, Any] = raw["body"] if isinstance(raw.get("body"), dict) else {}
    letter_id = raw.get("reference_id") or inner.get("id")
    if not isinstance(letter_id, str) or not letter_id:
        raise Problem.invalid("reference_id", "the letter id (reference_id or body.id) is required", "required")
    try:
        at = datetime.fromisoformat(str(raw.get("date_created")).replace("Z", "+00:00"))
        if at.tzinfo is None:
            raise ValueError("no time zone")
    except ValueError as exc:
        raise Problem.invalid("date_created", f"not an ISO 8601 timestamp with a zone: {exc}", "format") from exc
    return {"id": event_id, "type": type_id, "letter_id": letter_id, "at": at, "raw": raw}
