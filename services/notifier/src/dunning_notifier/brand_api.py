"""Routes of a tenant's brand (brand.py): the settings document, the uploaded logo, and the logo's
public URL (e-mail clients fetch it without a key: its name is the content's hash)."""

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Request, Response

from dunning.http import Problem, TenantId
from dunning.http.preconditions import check_if_match, etag, if_match_header
from dunning.settings import CommonSettings
from dunning_notifier import template_repository as repo
from dunning_notifier.brand import EXAMPLE_BRAND, LOGO_TYPES, BrandIn, LogoError, check_logo
from dunning_notifier.settings import Settings

TAG = "brand"
TAG_DOC = {"name": TAG, "description": "The tenant's brand: sender, reply-to, logo, colours, signature, address, bank."}
_LOGO_ID = r"^[0-9a-f]{32}\.(?:png|svg)$"
_LOGO_HEADERS = {  # an SVG is served as an image, never as a document that could run anything
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


class BrandOut(BrandIn):
    tenant_id: str
    version: int  # 0: nothing stored yet
    updated_at: datetime | None
    logo: dict[str, Any] | None = None  # the upload: {"content_type", "bytes", "url"}


def _out(tenant_id: str, row: asyncpg.Record | None, public_url: str | None) -> BrandOut:
    if row is None:
        return BrandOut(tenant_id=tenant_id, version=0, updated_at=None)
    logo = None
    if row["logo_id"]:
        url = f"{public_url.rstrip('/')}/v1/brand-logos/{row['logo_id']}" if public_url else None
        logo = {"content_type": row["logo_type"], "bytes": row["logo_bytes"], "url": url}
    return BrandOut(
        tenant_id=tenant_id, version=row["version"], updated_at=row["updated_at"], logo=logo, **row["settings"]
    )


def add_routes(app: FastAPI, pool: asyncpg.Pool, common: CommonSettings) -> None:
    """The routes above on `app`; `common`: the notifier's Settings (api.ApiDeps types it as the common base)."""
    settings = common if isinstance(common, Settings) else Settings()
    max_logo = settings.brand_logo_max_bytes

    @app.get(
        "/v1/brand",
        response_model=BrandOut,
        tags=[TAG],
        operation_id="getBrand",
        summary="The tenant's brand: sender, reply-to, logo, colours, signature, postal address, bank details",
        description="Version 0 and every field null: nothing set (reminders use the service's defaults).",
    )
    async def get_brand(tenant_id: TenantId, response: Response) -> BrandOut:
        out = _out(tenant_id, await repo.get_brand(pool, tenant_id), settings.public_url)
        response.headers["ETag"] = etag(out.version)
        return out

    @app.put(
        "/v1/brand",
        response_model=BrandOut,
        tags=[TAG],
        operation_id="putBrand",
        summary="Store the tenant's brand (the whole document; fields left out are unset)",
        description="Colours #rrggbb, logo_url https only, IBAN verified by its check digits, BIC by its shape. "
        "Used by reminders sent from a few seconds on: `brand` in templates, the e-mail From name and Reply-To, "
        "letters' return address and bank details. An uploaded logo (PUT /v1/brand/logo) is kept.",
        openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE_BRAND}}}},
        responses={
            412: {"description": "`If-Match` is not the current version"},
            422: {"description": "A field is not valid (`errors` name it, e.g. `bank.iban`)"},
        },
    )
    async def put_brand(
        tenant_id: TenantId,
        body: BrandIn,
        response: Response,
        if_match: Annotated[str | None, if_match_header("brand")] = None,
    ) -> BrandOut:
        async with pool.acquire() as conn, conn.transaction():
            await repo.bump_stamp(conn, tenant_id)
            current = await repo.get_brand(conn, tenant_id)
            check_if_match(if_match, current["version"] if current else 0, what="brand")
            row = await repo.put_brand_settings(conn, tenant_id, body.model_dump(exclude_none=True))
        response.headers["ETag"] = etag(row["version"])
        return _out(tenant_id, row, settings.public_url)

    @app.put(
        "/v1/brand/logo",
        response_model=BrandOut,
        tags=[TAG],
        operation_id="putBrandLogo",
        summary="Upload the logo (PNG or SVG, the raw bytes as the body)",
        description="At most NOTIFIER_BRAND_LOGO_MAX_BYTES (256 KiB). An SVG must be plain XML: no DOCTYPE, "
        "scripts, event handlers or external references. Served at `logo.url` (public: e-mail clients load it); "
        "it replaces `logo_url` in templates when the notifier's public URL is set.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in LOGO_TYPES},
            }
        },
        responses={
            413: {"description": "Larger than the limit"},
            415: {"description": "Content-Type is not image/png or image/svg+xml"},
            422: {"description": "Not a PNG, or an SVG with what a logo must not have"},
        },
    )
    async def put_logo(tenant_id: TenantId, request: Request) -> BrandOut:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type not in LOGO_TYPES:
            raise Problem.invalid(
                "Content-Type", f"must be {' or '.join(LOGO_TYPES)}", "unsupported_media_type", status=415
            )
        content = await request.body()
        if len(content) > max_logo:
            raise Problem.invalid(
                "(body)", f"the logo is {len(content)} bytes; at most {max_logo}", "too_large", status=413
            )
        try:
            logo_id = check_logo(content, content_type, max_logo)
        except LogoError as exc:
            raise Problem.invalid("(body)", str(exc), "invalid_logo") from None
        async with pool.acquire() as conn, conn.transaction():
            await repo.bump_stamp(conn, tenant_id)
            row = await repo.put_logo(conn, tenant_id, content, content_type, logo_id)
        return _out(tenant_id, row, settings.public_url)

    @app.delete(
        "/v1/brand/logo",
        status_code=204,
        tags=[TAG],
        operation_id="deleteBrandLogo",
        summary="Remove the uploaded logo (`logo_url`, if set, applies again)",
        responses={404: {"description": "No logo uploaded"}},
    )
    async def delete_logo(tenant_id: TenantId) -> Response:
        async with pool.acquire() as conn, conn.transaction():
            if await repo.logo_of(conn, tenant_id) is None:
                raise Problem.not_found("logo", "No logo uploaded for this tenant.")
            await repo.bump_stamp(conn, tenant_id)
            await repo.put_logo(conn, tenant_id, None, None, None)
        return Response(status_code=204)

    @app.get(
        "/v1/brand/logo",
        tags=[TAG],
        operation_id="getBrandLogo",
        summary="The uploaded logo's bytes",
        response_class=Response,
        responses={200: {"content": {t: {} for t in LOGO_TYPES}}, 404: {"description": "No logo uploaded"}},
    )
    async def get_logo(tenant_id: TenantId) -> Response:
        row = await repo.logo_of(pool, tenant_id)
        if row is None:
            raise Problem.not_found("logo", "No logo uploaded for this tenant.")
        return Response(bytes(row["logo"]), media_type=row["logo_type"], headers=_LOGO_HEADERS)

    @app.get(
        "/v1/brand-logos/{logo_id}",
        tags=[TAG],
        operation_id="getPublicBrandLogo",
        summary="An uploaded logo by its content hash, without a key (what reminder e-mails link to)",
        response_class=Response,
        responses={200: {"content": {t: {} for t in LOGO_TYPES}}, 404: {"description": "No such logo"}},
    )
    async def public_logo(logo_id: Annotated[str, Path(pattern=_LOGO_ID)]) -> Response:
        row = await repo.logo_by_id(pool, logo_id)
        if row is None or row["logo"] is None:
            raise Problem.not_found("logo_id", f"No logo {logo_id!r}.")
        headers = {**_LOGO_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
        return Response(bytes(row["logo"]), media_type=row["logo_type"], headers=headers)
