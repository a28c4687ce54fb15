"""Routes of a tenant's own templates (tenant_templates.py): list, read (theirs or the shipped
default), save a new version (`If-Match` for optimistic concurrency), delete the override, list the
versions, and preview a template against a real invoice or the documented sample. docs/templates.md."""

import re
from email.utils import parseaddr
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Response
from jinja2.exceptions import TemplateError

from dunning.http import Problem, TenantId
from dunning.http.preconditions import check_if_match, etag, if_match_header
from dunning.settings import CommonSettings
from dunning_notifier import template_repository as repo
from dunning_notifier.rendering import Renderer, RenderError, parse_locale
from dunning_notifier.settings import Settings
from dunning_notifier.template_samples import sample_contexts, sample_payload
from dunning_notifier.template_sandbox import run_bounded
from dunning_notifier.template_schemas import (
    Channel,
    OverrideOut,
    PreviewIn,
    PreviewOut,
    StageTemplatesOut,
    TemplateIn,
    TemplateOut,
    TemplatesOut,
    VersionOut,
    VersionsOut,
)
from dunning_notifier.tenant_templates import (
    CHANNEL_PARTS,
    FILE_PART,
    KEY_PATTERN,
    LOCALE_PATTERN,
    TemplateInvalid,
    TenantTemplates,
    shipped_source,
    validate,
)

KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="The stage key: soft, firm, final, ... or generic.")]
ChannelPath = Annotated[Channel, Path(description="email (subject, text, html), sms (text), letter (subject, text)")]
LocalePath = Annotated[str, Path(pattern=LOCALE_PATTERN, description="A language (de) or language-REGION (de-AT).")]
IfMatch = Annotated[str | None, if_match_header("template")]
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]+[ \t]*")  # a subject is one line, as rendering.render makes it
TAG = "templates"
TAG_DOC = {"name": TAG, "description": "A tenant's own reminder templates: versioned, validated, previewed."}


RENDER_ERRORS = (RenderError, TemplateError, KeyError, TypeError, ValueError, AttributeError, RecursionError)


def check_parts(
    renderer: Renderer,
    key: str,
    channel: str,
    locale: str,
    parts: Any,
    data: dict[str, Any] | None = None,
    field: str = "key",
) -> dict[str, str] | None:
    """Validate the parts (TemplateInvalid) and, given a payload, render them with its context, branded
    for its tenant. Runs in template_sandbox's bounded child: nothing returned but strings."""
    compiled = validate(renderer.env, channel, parts, sample_contexts(renderer, key, channel, locale))
    if data is None:
        return None
    try:
        loc, tag = parse_locale(locale)
        ctx = renderer.localized(renderer.branded(renderer.context(data, loc), data["tenant_id"]), tag)
        return {part: template.render(ctx) for part, template in compiled.items()}
    except RENDER_ERRORS as exc:
        message = f"{field}: cannot be rendered: {exc}"
        raise TemplateInvalid([{"field": field, "message": message, "code": "render_error"}]) from None


def _invalid(exc: TemplateInvalid) -> Problem:
    return Problem(422, str(exc), title="Invalid template", errors=exc.errors)


def add_routes(app: FastAPI, pool: asyncpg.Pool, common: CommonSettings) -> None:
    """The routes above on `app`; `common`: the notifier's Settings (api.ApiDeps types it as the common base)."""
    settings = common if isinstance(common, Settings) else Settings()
    store = TenantTemplates(pool, ttl_seconds=0, public_url=settings.public_url)
    renderer = Renderer(sender_name=parseaddr(settings.mail_from)[0] or "Accounts Receivable", tenant_templates=store)
    env = renderer.env

    def shipped_keys(channel: str) -> set[str]:
        pattern = re.compile(rf"{channel}/([a-z][a-z0-9_]*)\.[a-z]+\.j2")
        return {m.group(1) for n in env.list_templates() if (m := pattern.fullmatch(n))} - {"consolidated"}

    @app.get(
        "/v1/templates",
        response_model=TemplatesOut,
        tags=[TAG],
        operation_id="listTemplates",
        summary="The tenant's template overrides, per stage key and channel, and where the default is used",
        description="Every stage key with a shipped template, and every key the tenant overrides, per channel.",
    )
    async def list_templates(tenant_id: TenantId) -> dict[str, Any]:
        rows = await repo.active_templates(pool, tenant_id)
        out = []
        for channel in CHANNEL_PARTS:
            shipped = shipped_keys(channel)
            for key in sorted(shipped | {r["key"] for r in rows if r["channel"] == channel}):
                mine = [OverrideOut(**dict(r)) for r in rows if (r["channel"], r["key"]) == (channel, key)]
                out.append(
                    StageTemplatesOut(
                        key=key,
                        channel=channel,
                        shipped=key in shipped,
                        overrides=mine,
                        default_used=not mine,
                    )
                )
        return {"data": out}

    @app.get(
        "/v1/templates/{key}/{channel}/{locale}",
        response_model=TemplateOut,
        tags=[TAG],
        operation_id="getTemplate",
        summary="A template's source: the tenant's, or the shipped default (`source: default`)",
        description="The ETag is the latest version (0: never saved); send it back in `If-Match` when saving.",
        responses={404: {"description": "Neither the tenant nor the service has a template for it"}},
    )
    async def get_template(
        tenant_id: TenantId, key: KeyPath, channel: ChannelPath, locale: LocalePath, response: Response
    ) -> TemplateOut:
        row = await repo.latest(pool, tenant_id, key, channel, locale)
        response.headers["ETag"] = etag(row["version"] if row else 0)
        if row is not None and row["parts"] is not None:
            return _saved(key, channel, locale, row)
        shipped = shipped_source(env, key, channel, locale)
        if shipped is None:
            raise Problem.not_found("key", f"No template for {key!r} on {channel}, neither the tenant's nor shipped.")
        return TemplateOut(
            key=key,
            channel=channel,
            locale=locale,
            source="default",
            version=None,
            saved_at=None,
            default_name=shipped[0],
            parts=shipped[1],
        )

    @app.put(
        "/v1/templates/{key}/{channel}/{locale}",
        response_model=TemplateOut,
        tags=[TAG],
        operation_id="putTemplate",
        summary="Save the tenant's template (a new version; or `revert_to` an earlier one)",
        description="Validated first in the rendering sandbox (syntax with its line, known variables only, no "
        "sandbox escapes, size limits, renders against the sample with and without optional values); a refusal "
        "stores nothing. Applies to reminders sent from a few seconds on (NOTIFIER_TEMPLATE_CACHE_SECONDS).",
        responses={
            412: {"description": "`If-Match` is not the latest version (the current one is in `ETag`)"},
            422: {"description": "The template is refused: `errors` name the part and line (`parts.html`)"},
        },
    )
    async def put_template(
        tenant_id: TenantId,
        key: KeyPath,
        channel: ChannelPath,
        locale: LocalePath,
        body: TemplateIn,
        response: Response,
        if_match: IfMatch = None,
    ) -> TemplateOut:
        if (body.parts is None) == (body.revert_to is None):
            raise Problem.invalid("parts", "give either parts or revert_to", "parts_or_revert_to")
        parts = body.parts
        if body.revert_to is not None:
            old = next(
                (
                    v
                    for v in await repo.versions(pool, tenant_id, key, channel, locale)
                    if v["version"] == body.revert_to
                ),
                None,
            )
            if old is None or old["parts"] is None:
                raise Problem.invalid(
                    "revert_to",
                    f"no saved version {body.revert_to} (a deletion cannot be reverted to)",
                    "unknown_version",
                )
            parts = old["parts"]
        try:
            await run_bounded("parts", check_parts, renderer, key, channel, locale, parts)
        except TemplateInvalid as exc:
            raise _invalid(exc) from None
        async with pool.acquire() as conn, conn.transaction():
            await repo.bump_stamp(conn, tenant_id)
            current = await repo.latest(conn, tenant_id, key, channel, locale)
            version = current["version"] if current else 0
            check_if_match(if_match, version, what="template")
            row = await repo.insert_version(conn, tenant_id, key, channel, locale, version + 1, parts)
        response.headers["ETag"] = etag(row["version"])
        return _saved(key, channel, locale, row)

    @app.delete(
        "/v1/templates/{key}/{channel}/{locale}",
        status_code=204,
        tags=[TAG],
        operation_id="deleteTemplate",
        summary="Remove the tenant's override: the shipped default applies again",
        description="Recorded as a version (`deleted: true` in the versions); an earlier version can be saved again.",
        responses={404: {"description": "No override in force"}, 412: {"description": "`If-Match` is stale"}},
    )
    async def delete_template(
        tenant_id: TenantId, key: KeyPath, channel: ChannelPath, locale: LocalePath, if_match: IfMatch = None
    ) -> Response:
        async with pool.acquire() as conn, conn.transaction():
            await repo.bump_stamp(conn, tenant_id)
            current = await repo.latest(conn, tenant_id, key, channel, locale)
            if current is None or current["parts"] is None:
                raise Problem.not_found("key", f"No override of {key}/{channel}/{locale}: the shipped default applies.")
            check_if_match(if_match, current["version"], what="template")
            await repo.insert_version(conn, tenant_id, key, channel, locale, current["version"] + 1, None)
        return Response(status_code=204, headers={"ETag": etag(current["version"] + 1)})

    @app.get(
        "/v1/templates/{key}/{channel}/{locale}/versions",
        response_model=VersionsOut,
        tags=[TAG],
        operation_id="listTemplateVersions",
        summary="Every version of the tenant's template, newest first (deletions included)",
    )
    async def list_versions(tenant_id: TenantId, key: KeyPath, channel: ChannelPath, locale: LocalePath) -> VersionsOut:
        rows = await repo.versions(pool, tenant_id, key, channel, locale)
        data = [
            VersionOut(version=r["version"], deleted=r["parts"] is None, parts=r["parts"], saved_at=r["saved_at"])
            for r in rows
        ]
        active = rows[0]["version"] if rows and rows[0]["parts"] is not None else None
        return VersionsOut(key=key, channel=channel, locale=locale, active_version=active, data=data)

    @app.post(
        "/v1/templates/preview",
        response_model=PreviewOut,
        tags=[TAG],
        operation_id="previewTemplate",
        summary="Render unsaved parts, or the template in force, for a real invoice or the sample; nothing is sent",
        description="`invoice_id`: the context is built from the last reminder (StageEscalated) the notifier "
        "recorded for the invoice, as the reminder was; `sample: true`: the documented sample invoice and customer "
        "(docs/templates.md). Without `parts`, the template a reminder would use: the tenant's, else the shipped one. "
        "The brand is the tenant's. Nothing is saved or sent.",
        responses={422: {"description": "Invalid parts (as for PUT), or no reminder recorded for the invoice"}},
    )
    async def preview(tenant_id: TenantId, body: PreviewIn) -> PreviewOut:
        if body.sample == (body.invoice_id is not None):
            raise Problem.invalid(
                "invoice_id", "give either invoice_id (a real invoice) or sample: true", "invoice_or_sample"
            )
        if body.invoice_id is not None:
            payload = await repo.last_stage_payload(pool, tenant_id, body.invoice_id)
            if payload is None:
                raise Problem.invalid(
                    "invoice_id",
                    f"the notifier has recorded no reminder (StageEscalated) for "
                    f"{body.invoice_id}; preview it with sample: true",
                    "no_reminder_recorded",
                )
            key = body.key or payload.get("template") or payload["stage"]
            locale = body.locale or parse_locale((payload.get("customer") or {}).get("locale"))[1]
        else:
            if body.key is None:
                raise Problem.invalid("key", "required with sample: true (the stage key to preview)", "missing")
            key, locale = body.key, body.locale or "en-US"
            payload = sample_payload(key, body.channel, locale)
        data = {
            **payload,
            "tenant_id": tenant_id,
            "template": key,
            "channel": body.channel,
            "customer": {**payload["customer"], "locale": locale},
        }
        await renderer.prepare(tenant_id)
        field = "invoice_id" if body.invoice_id else "key"
        try:
            if body.parts is None:
                found = store.find(env, tenant_id, body.channel, key, locale, FILE_PART[CHANNEL_PARTS[body.channel][0]])
                r = renderer.render(data, body.channel)
                return PreviewOut(
                    key=key,
                    channel=body.channel,
                    locale=r.locale,
                    source="tenant" if found else "default",
                    subject=r.subject,
                    text=r.text,
                    html=r.html,
                )
            out = await run_bounded("parts", check_parts, renderer, key, body.channel, locale, body.parts, data, field)
        except TemplateInvalid as exc:
            raise _invalid(exc) from None
        except RENDER_ERRORS as exc:  # the recorded payload cannot render: say why (a 422, never a 500)
            raise Problem.invalid(field, f"cannot be rendered: {exc}", "render_error") from None
        subject = _LINE_BREAKS.sub(" ", out.get("subject", "")).strip()
        return PreviewOut(
            key=key,
            channel=body.channel,
            locale=parse_locale(locale)[1],
            source="parts",
            subject=subject,
            text=out.get("text", ""),
            html=out.get("html", ""),
        )


def _saved(key: str, channel: str, locale: str, row: Any) -> TemplateOut:
    """A version of the tenant's own template (template_versions row) as the API shows it."""
    return TemplateOut(
        key=key,
        channel=channel,
        locale=locale,
        source="tenant",
        version=row["version"],
        saved_at=row["saved_at"],
        parts=row["parts"],
    )
