"""HTTP routes for opt-outs, contact preferences, channel fallback, replies and the response rate.

`/v1/unsubscribe/{token}` is public (no API key: the customer's mail client calls it): POST with
`List-Unsubscribe=One-Click` opts out (RFC 8058: 200, no redirect); GET only shows a page whose
button makes that POST (a link scanner's GET must not unsubscribe). The others are the tenant's.
"""

import html
import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from dunning.clock import utcnow
from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page
from dunning.logging import get_logger
from dunning_notifier import optouts
from dunning_notifier import optouts_repository as repo
from dunning_notifier.schemas import INVOICE_ID
from dunning_notifier.settings import Settings

log = get_logger(__name__)
TAG = {
    "name": "contact-preferences",
    "description": "Opt-outs (RFC 8058 one-click unsubscribe), invalid contacts, the channel fallback order,"
    " replies to reminders and the response rate.",
}
Channel = Literal["email", "sms", "letter", "webhook"]
CUSTOMER_ID = r"^cus_[0-9A-Za-z]{10,40}$"
TOKEN = r"^[a-z2-7]{8,600}\.[a-z2-7]{26}$"
_REPLY_ID = re.compile(r"^rpl_[0-9A-Za-z]{10,40}$")
_PUBLIC: dict[str, Any] = {"security": []}  # no API key: called by the customer's mail client or browser


class BlockOut(BaseModel):
    channel: str
    address: str
    kind: Literal["opted_out", "invalid"]
    reason: str = Field(description="one_click, mailto, sms_stop; smtp_550 or dsn_5.1.1 for an invalid address")
    source: str = Field(description="what recorded it: http, inbound_smtp, sms, dispatcher")
    delivery_id: str | None = Field(description="the delivery that showed the address invalid, if any")
    created_at: datetime
    cleared_at: datetime | None = Field(description="when it was cleared by hand (re-subscribed); null: active")
    cleared_by: str | None


class BlockChange(BaseModel):
    channel: str
    address: str
    kind: str
    action: Literal["blocked", "cleared"]
    reason: str
    actor: str
    at: datetime


class ContactPreferencesOut(BaseModel):
    customer_id: str
    channels: dict[str, list[BlockOut]] = Field(description="per channel, its opt-outs and invalid addresses")
    history: list[BlockChange] = Field(description="the last 200 changes, newest first (the audit trail)")


class ResubscribedOut(BaseModel):
    customer_id: str
    channel: str
    cleared: list[BlockOut]


class ChannelPreferencesIn(BaseModel):
    fallback: list[Channel] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="the order a stage tries channels in when one cannot take it (opted out, invalid, bounced)",
        examples=[["email", "sms", "letter"]],
    )
    pause_on_reply: bool | None = Field(None, description="a customer's reply pauses dunning of the invoice")
    pause_days: int | None = Field(None, ge=1, le=90, description="how long a reply pauses it (default 7)")

    @field_validator("fallback")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a channel may appear only once")
        return value


class ChannelPreferencesOut(BaseModel):
    fallback: list[str]
    pause_on_reply: bool
    pause_days: int
    updated_at: datetime | None = Field(description="null while the tenant has the defaults")


class ReplyOut(BaseModel):
    reply_id: str
    delivery_id: str
    invoice_id: str
    customer_id: str | None
    channel: str
    stage: str
    from_address: str
    subject: str
    text: str
    auto_reply: bool = Field(description="an automatic answer (out of office...): not counted, never pauses")
    received_at: datetime


class RateRow(BaseModel):
    channel: str
    stage: str
    sent: int
    replied: int
    rate: float = Field(description="replied / sent (0 when none was sent)")


class ResponseRateOut(BaseModel):
    since: datetime
    sent: int
    replied: int
    rate: float
    by_channel_stage: list[RateRow]


def _page(title: str, body: str) -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title></head>'
        f'<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>'
    )
    return HTMLResponse(doc)


def add_routes(app: FastAPI, deps: Any) -> None:
    """The routes, on the app itself (FastAPI keeps an included router whole: the input guard could
    not name a refused path parameter)."""
    settings = cast(Settings, deps.settings)
    pool = deps.pool

    def subject_of(token: str) -> optouts.Subject:
        if settings.unsubscribe_secret is None:  # no secret: no link was ever signed here (check_settings logs it)
            raise Problem.not_found("token", "This unsubscribe link is not valid.")
        try:
            return optouts.verify(token, settings)
        except optouts.BadToken:
            raise Problem.not_found("token", "This unsubscribe link is not valid.") from None

    @app.get(
        "/v1/unsubscribe/{token}",
        tags=["contact-preferences"],
        operation_id="showUnsubscribe",
        summary="The unsubscribe confirmation page (does not unsubscribe)",
        description="A page with one button that POSTs `List-Unsubscribe=One-Click` to the same URL. A GET"
        " never opts out: mail security scanners follow links.",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}, 404: {"description": "Not a valid unsubscribe link"}},
        openapi_extra=_PUBLIC,
    )
    async def show_unsubscribe(token: Annotated[str, Path(pattern=TOKEN)]) -> HTMLResponse:
        subject = subject_of(token)
        what = "e-mail" if subject.channel == "email" else subject.channel.upper()
        return _page(
            "Unsubscribe",
            f"<h1>Stop payment reminders by {what}?</h1><p>To <b>{html.escape(subject.address)}</b>.</p>"
            f'<form method="post" action="/v1/unsubscribe/{token}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    @app.post(
        "/v1/unsubscribe/{token}",
        tags=["contact-preferences"],
        operation_id="unsubscribe",
        summary="One-click unsubscribe (RFC 8058)",
        description="Form body `List-Unsubscribe=One-Click` (application/x-www-form-urlencoded or"
        " multipart/form-data). Opts the customer out of the channel at the address the link names;"
        " answers 200 (never a redirect); repeating it changes nothing. Later reminders go by the"
        " tenant's next channel, or fail `opted_out`.",
        response_class=HTMLResponse,
        responses={
            200: {"content": {"text/html": {}}, "description": "Opted out (or already was)"},
            404: {"description": "Not a valid unsubscribe link"},
            422: {"description": "The body is not `List-Unsubscribe=One-Click`"},
        },
        openapi_extra={
            **_PUBLIC,
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["List-Unsubscribe"],
                            "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                        }
                    }
                },
            },
        },
    )
    async def unsubscribe(token: Annotated[str, Path(pattern=TOKEN)], request: Request) -> HTMLResponse:
        subject = subject_of(token)
        try:
            form = await request.form()
        except Exception:  # not a form body a client meant as one
            form = None
        if form is None or form.get("List-Unsubscribe") != "One-Click":
            raise Problem.invalid("List-Unsubscribe", "must be One-Click (RFC 8058)", "one_click_required")
        async with pool.acquire() as conn, conn.transaction():
            await optouts.record_opt_out(
                conn, subject.tenant_id, subject.customer_id, subject.channel, subject.address, "http"
            )
        return _page(
            "Unsubscribed",
            f"<h1>Unsubscribed</h1><p>{html.escape(subject.address)} will get no more payment reminders this way.</p>",
        )

    @app.get(
        "/v1/customers/{customer_id}/contact-preferences",
        response_model=ContactPreferencesOut,
        tags=["contact-preferences"],
        operation_id="getContactPreferences",
        summary="A customer's opt-outs and invalid contacts per channel, with when and why",
    )
    async def contact_preferences(
        customer_id: Annotated[str, Path(pattern=CUSTOMER_ID)], tenant_id: TenantId
    ) -> ContactPreferencesOut:
        rows, history = await repo.blocks_of(pool, tenant_id, customer_id)
        channels: dict[str, list[BlockOut]] = {}
        for r in rows:
            channels.setdefault(r["channel"], []).append(BlockOut(**dict(r)))
        return ContactPreferencesOut(
            customer_id=customer_id, channels=channels, history=[BlockChange(**dict(h)) for h in history]
        )

    @app.delete(
        "/v1/customers/{customer_id}/opt-outs/{channel}",
        response_model=ResubscribedOut,
        tags=["contact-preferences"],
        operation_id="resubscribe",
        summary="Re-subscribe a customer to a channel by hand (audited)",
        description="Clears the customer's active opt-outs on the channel (`kind=invalid`: its invalid"
        " addresses, `all`: both). The change is kept in the audit trail with `cleared_by`.",
        responses={404: {"description": "Nothing of that kind is active on the channel"}},
    )
    async def resubscribe(
        customer_id: Annotated[str, Path(pattern=CUSTOMER_ID)],
        channel: Channel,
        tenant_id: TenantId,
        kind: Annotated[Literal["opted_out", "invalid", "all"], Query(description="what to clear")] = "opted_out",
        cleared_by: Annotated[str, Query(min_length=1, max_length=200, description="who (audit)")] = "api",
        reason: Annotated[str, Query(min_length=1, max_length=500, description="why (audit)")] = "re-subscribed",
    ) -> ResubscribedOut:
        kinds = ("opted_out", "invalid") if kind == "all" else (kind,)
        rows = await repo.clear(
            pool,
            tenant_id=tenant_id,
            customer_id=customer_id,
            channel=channel,
            kinds=kinds,
            actor=cleared_by,
            reason=reason,
        )
        if not rows:
            raise Problem.not_found("channel", f"No active {kind} block on {channel} for {customer_id}.")
        log.info("notifier.contact.resubscribed", customer_id=customer_id, channel=channel, by=cleared_by)
        blocks, _ = await repo.blocks_of(pool, tenant_id, customer_id)
        cleared = {(r["address"], r["kind"]) for r in rows}
        return ResubscribedOut(
            customer_id=customer_id,
            channel=channel,
            cleared=[
                BlockOut(**dict(b)) for b in blocks if b["channel"] == channel and (b["address"], b["kind"]) in cleared
            ],
        )

    async def current(tenant_id: str) -> ChannelPreferencesOut:
        row = await repo.preferences(pool, tenant_id)
        if row is None:
            return ChannelPreferencesOut(
                fallback=list(optouts.DEFAULT_FALLBACK), pause_on_reply=False, pause_days=7, updated_at=None
            )
        return ChannelPreferencesOut(**dict(row))

    @app.get(
        "/v1/channel-preferences",
        response_model=ChannelPreferencesOut,
        tags=["contact-preferences"],
        operation_id="getChannelPreferences",
        summary="The tenant's fallback order and pause-on-reply",
    )
    async def get_channel_preferences(tenant_id: TenantId) -> ChannelPreferencesOut:
        return await current(tenant_id)

    @app.put(
        "/v1/channel-preferences",
        response_model=ChannelPreferencesOut,
        tags=["contact-preferences"],
        operation_id="putChannelPreferences",
        summary="Set the fallback order and whether a reply pauses dunning",
        description="Fields left out keep their value. `fallback`: a stage whose channel cannot take it"
        " goes to the next channel after it in this list (once per invoice, stage and channel).",
    )
    async def put_channel_preferences(body: ChannelPreferencesIn, tenant_id: TenantId) -> ChannelPreferencesOut:
        now = await current(tenant_id)
        row = await repo.put_preferences(
            pool,
            tenant_id,
            body.fallback if body.fallback is not None else now.fallback,
            body.pause_on_reply if body.pause_on_reply is not None else now.pause_on_reply,
            body.pause_days if body.pause_days is not None else now.pause_days,
        )
        log.info("notifier.channel_preferences.updated", fallback=row["fallback"])
        return ChannelPreferencesOut(**dict(row))

    @app.get(
        "/v1/replies",
        response_model=Page[ReplyOut],
        tags=["contact-preferences"],
        operation_id="listReplies",
        summary="Replies to reminders, newest first",
    )
    async def list_replies(
        tenant_id: TenantId,
        invoice_id: Annotated[str | None, Query(pattern=INVOICE_ID, description="only this invoice's")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        before = decode_cursor(cursor, _REPLY_ID)
        rows = await repo.list_replies(pool, tenant_id, invoice_id=invoice_id, before=before, limit=limit + 1)
        return page(rows, limit, key=lambda r: r["reply_id"], view=lambda r: ReplyOut(**dict(r)))

    @app.get(
        "/v1/response-rate",
        response_model=ResponseRateOut,
        tags=["contact-preferences"],
        operation_id="getResponseRate",
        summary="Reminders sent since a time, how many got a reply, per channel and stage",
        description="Automatic replies (out of office...) are not counted; a reminder answered twice counts once.",
    )
    async def response_rate(
        tenant_id: TenantId,
        since: Annotated[AwareDatetime | None, Query(description="RFC 3339; default: 30 days ago")] = None,
    ) -> ResponseRateOut:
        start = since or datetime.fromtimestamp(utcnow().timestamp() - 30 * 86400, tz=utcnow().tzinfo)
        rows = [
            RateRow(**dict(r), rate=round(r["replied"] / r["sent"], 4) if r["sent"] else 0.0)
            for r in await repo.response_rate(pool, tenant_id, start)
        ]
        sent, replied = sum(r.sent for r in rows), sum(r.replied for r in rows)
        return ResponseRateOut(
            since=start,
            sent=sent,
            replied=replied,
            rate=round(replied / sent, 4) if sent else 0.0,
            by_channel_stage=rows,
        )
