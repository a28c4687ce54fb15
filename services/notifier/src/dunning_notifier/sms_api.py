"""HTTP routes of the SMS channel, called by Twilio (public: no tenant API key; each request is signed
with X-Twilio-Signature, checked with the auth token: twilio_signature.py).

- `GET /v1/deliveries/{delivery_id}/sms` (tenant API key): the messages Twilio accepted for the delivery
  (sid, To, encoding, segments, whether the text was cut) with every status callback and its time;
- `POST /v1/providers/twilio/status`: a message's status callback (`MessageSid`, `MessageStatus`,
  `ErrorCode`): kept once per (message, status); the delivery's `provider_status` moves to it when it
  is later than what it holds; an SMS `undelivered` or `failed` publishes ReminderDeliveryUpdated
  (the invoice's timeline shows it);
- `POST /v1/providers/twilio/inbound`: an SMS a customer sent to our number; `STOP` (or STOPALL,
  UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT) opts every customer at that number out of SMS
  (optouts.record_opt_out: ContactOptedOut). Answered with empty TwiML (Twilio itself sends the
  carrier-mandated STOP confirmation).
"""

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, Field

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import ReminderDeliveryUpdated
from dunning.http import Problem, TenantId
from dunning.logging import get_logger
from dunning_notifier import optouts, twilio_signature
from dunning_notifier import sms_repository as sms_repo
from dunning_notifier.schemas import DELIVERY_ID
from dunning_notifier.sms import INBOUND_PATH, STATUS_PATH

log = get_logger(__name__)
TAG = {"name": "providers", "description": "Callbacks from delivery providers (signed by the provider, not tenants)."}
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
REPORTED = frozenset({"undelivered", "failed"})  # the statuses that publish ReminderDeliveryUpdated
STATUSES = frozenset(sms_repo.STATUS_RANK)
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_SIGNED: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "X-Twilio-Signature is missing or not Twilio's for this URL and body (or no auth token is"
        " configured to check it with)"
    },
    422: {"description": "A required form field is missing or malformed (named in `errors`)"},
}


def _form(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a form Twilio posts."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}}


_TEXT = {"type": "string", "minLength": 1, "maxLength": 1600}
_STATUS_FORM = _form(
    ["MessageSid", "MessageStatus", "AccountSid"],
    {
        "MessageSid": {"type": "string", "pattern": "^(SM|MM)[0-9a-f]{32}$", "description": "the message (SM...)"},
        "MessageStatus": {"type": "string", "enum": sorted(sms_repo.STATUS_RANK)},
        "ErrorCode": {"type": "string", "pattern": "^[0-9]{1,6}$", "description": "with undelivered / failed"},
        "AccountSid": {"type": "string", "pattern": "^AC[0-9a-f]{32}$"},
        "From": _TEXT,
        "To": _TEXT,
        "SmsSid": _TEXT,
        "SmsStatus": _TEXT,
        "ApiVersion": {"type": "string", "const": "2010-04-01"},
    },
)
_INBOUND_FORM = _form(
    ["MessageSid", "From", "To", "Body", "AccountSid"],
    {
        "MessageSid": {"type": "string", "pattern": "^(SM|MM)[0-9a-f]{32}$"},
        "From": {"type": "string", "description": "the customer's number, E.164"},
        "To": {"type": "string", "description": "our Twilio number"},
        "Body": {"type": "string", "maxLength": 1600, "description": "STOP, UNSUBSCRIBE, ... opt the number out"},
        "AccountSid": {"type": "string", "pattern": "^AC[0-9a-f]{32}$"},
        "NumMedia": {"type": "string"},
    },
)


class SmsStatusOut(BaseModel):
    status: str = Field(description="queued, sending, sent, delivered, undelivered, failed")
    error_code: int | None = Field(description="Twilio's ErrorCode with undelivered / failed, e.g. 30003")
    received_at: datetime


class SmsMessageOut(BaseModel):
    message_sid: str = Field(description="Twilio's message sid (SM...), the delivery's provider_message_id")
    to_number: str = Field(description="E.164")
    encoding: str = Field(description="GSM-7 or UCS-2")
    segments: int
    truncated: bool = Field(description="the text was cut at a word to sms_max_segments")
    status: str = Field(description="the latest status Twilio reported")
    error_code: int | None
    created_at: datetime
    updated_at: datetime
    events: list[SmsStatusOut] = Field(description="every status callback, in the order received")


class StatusRecorded(BaseModel):
    delivery_id: str
    status: str = Field(description="the status this callback reported")
    recorded: bool = Field(description="false: this status of this message was already recorded (a retry)")
    provider_status: str = Field(description="the delivery's provider status after it (the latest reported)")


def _field(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise Problem.invalid(name, f"{name} is required", "required")
    return value


def sms_router(deps: Any) -> APIRouter:
    """The routes above; `deps`: api.ApiDeps (pool, settings)."""
    router = APIRouter(tags=["providers"])
    settings = deps.settings

    async def signed_form(request: Request, signature: str | None, path: str) -> dict[str, str]:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        if not token:
            raise Problem(
                403,
                "The signature cannot be checked: no Twilio auth token is configured (NOTIFIER_TWILIO_AUTH_TOKEN)",
                errors=[{"field": "X-Twilio-Signature", "message": "no auth token configured", "code": "forbidden"}],
            )
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        base = settings.public_url.rstrip("/") if settings.public_url else str(request.base_url).rstrip("/")
        url = base + path + (f"?{request.url.query}" if request.url.query else "")
        if not twilio_signature.valid(token, url, pairs, signature):
            log.warning("notifier.sms.bad_signature", path=path)
            raise Problem(
                403,
                "X-Twilio-Signature does not match this request",
                errors=[{"field": "X-Twilio-Signature", "message": "not Twilio's signature", "code": "forbidden"}],
            )
        params = dict(pairs)
        if settings.twilio_account_sid and params.get("AccountSid", settings.twilio_account_sid) != (
            settings.twilio_account_sid
        ):
            raise Problem(403, "AccountSid is not this notifier's Twilio account")
        return params

    @router.get(
        "/v1/deliveries/{delivery_id}/sms",
        response_model=list[SmsMessageOut],
        tags=["deliveries"],
        operation_id="getDeliverySms",
        summary="The SMS Twilio accepted for a delivery, with every status it reported",
        description=(
            "One entry per message Twilio accepted (a retry after an in-doubt timeout may have sent two): its"
            " sid, number, encoding, segments, whether the text was cut to sms_max_segments, the latest status"
            " and each status callback with the time it came."
        ),
        responses={404: {"description": "No SMS was sent for this delivery of this tenant"}},
    )
    async def get_delivery_sms(
        delivery_id: Annotated[str, Path(pattern=DELIVERY_ID)], tenant_id: TenantId
    ) -> list[SmsMessageOut]:
        rows = await sms_repo.messages_of(deps.pool, tenant_id, delivery_id)
        if not rows:
            raise Problem.not_found("delivery_id", f"No SMS was sent for delivery {delivery_id!r} of this tenant.")
        return [SmsMessageOut(**dict(r)) for r in rows]

    @router.post(
        STATUS_PATH,
        response_model=StatusRecorded,
        operation_id="receiveTwilioStatus",
        summary="Twilio's status callback for an SMS the notifier sent (signed)",
        description=(
            "Called by Twilio, not by tenants: the form Twilio posts to a message's StatusCallback"
            " (`MessageSid`, `MessageStatus` queued/sending/sent/delivered/undelivered/failed, `ErrorCode`,"
            " `AccountSid`, `To`, `From`), signed with `X-Twilio-Signature` (base64 HMAC-SHA1 of the URL and the"
            " sorted form fields with the auth token). Each status is recorded once per message; the delivery's"
            " `provider_status` moves to the latest; `undelivered` and `failed` publish ReminderDeliveryUpdated."
        ),
        responses={**_SIGNED, 404: {"description": "No SMS with this MessageSid was sent by this notifier"}},
        openapi_extra=_STATUS_FORM,
    )
    async def receive_status(
        request: Request,
        x_twilio_signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
    ) -> StatusRecorded:
        params = await signed_form(request, x_twilio_signature, STATUS_PATH)
        sid = _field(params, "MessageSid")
        status = _field(params, "MessageStatus").lower()
        if status not in STATUSES:
            raise Problem.invalid("MessageStatus", f"not a Twilio message status: {status!r}", "enum")
        raw_code = params.get("ErrorCode", "").strip()
        if raw_code and not raw_code.isdigit():
            raise Problem.invalid("ErrorCode", "must be a number", "type")
        code = int(raw_code) if raw_code else None
        async with deps.pool.acquire() as conn, conn.transaction():
            change = await sms_repo.record_status(conn, sid, status, code)
            if change is None:
                raise Problem.not_found("MessageSid", f"No SMS {sid!r} was sent by this notifier.")
            d = change.delivery
            if change.new and status in REPORTED:
                await outbox.add(
                    conn,
                    ReminderDeliveryUpdated(
                        d["delivery_id"],
                        d["stage_id"],
                        d["invoice_id"],
                        d["tenant_id"],
                        d["stage"],
                        d["channel"],
                        status,
                        "twilio",
                        sid,
                        d["to_number"],
                        raw_code or None,
                        utcnow(),
                    ),
                )
            current = status if change.moved else (change.delivery["message_status"])
        log.info("notifier.sms.status", message_sid=sid, status=status, error_code=code, moved=change.moved)
        return StatusRecorded(delivery_id=d["delivery_id"], status=status, recorded=change.new, provider_status=current)

    @router.post(
        INBOUND_PATH,
        operation_id="receiveTwilioInbound",
        summary="An SMS a customer sent to the notifier's Twilio number (signed): STOP opts the number out",
        description=(
            "Called by Twilio for each incoming message (`From`, `To`, `Body`, `MessageSid`, `AccountSid`), signed"
            " like the status callback. A Body of STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE or OPTOUT"
            " (any case, surrounding spaces ignored) opts every customer at the `From` number out of the sms"
            " channel (ContactOptedOut); other messages are only logged. Answers empty TwiML."
        ),
        response_class=Response,
        responses={200: {"description": "Empty TwiML", "content": {"text/xml": {}}}, **_SIGNED},
        openapi_extra=_INBOUND_FORM,
    )
    async def receive_inbound(
        request: Request,
        x_twilio_signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
    ) -> Response:
        params = await signed_form(request, x_twilio_signature, INBOUND_PATH)
        sender = _field(params, "From")
        word = params.get("Body", "").strip().upper()
        opted = 0
        if word in STOP_WORDS:
            async with deps.pool.acquire() as conn, conn.transaction():
                for c in await sms_repo.customers_at(conn, sender):
                    opted += await optouts.record_opt_out(conn, c["tenant_id"], c["customer_id"], "sms", sender, "sms")
        log.info("notifier.sms.inbound", stop=word in STOP_WORDS, opted_out=opted)
        return Response(_EMPTY_TWIML, media_type="text/xml")

    return router
