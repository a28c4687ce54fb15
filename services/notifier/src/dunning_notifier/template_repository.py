"""SQL for a tenant's templates, brand and the stamp that keys the renderer's cache of both
(migrations/20261202500000_tenant_templates.sql). Every write bumps the tenant's stamp in its own
transaction, first: the stamp row's lock also serialises a tenant's concurrent saves, so the
version read for `If-Match` is still the latest when the new one is inserted."""

from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

_TEMPLATE = "tenant_id = $1 AND key = $2 AND channel = $3 AND locale = $4"
_LATEST = (
    "SELECT DISTINCT ON (key, channel, locale) key, channel, locale, version, parts, saved_at"
    " FROM template_versions WHERE tenant_id = $1 ORDER BY key, channel, locale, version DESC"
)


async def bump_stamp(conn: asyncpg.Connection, tenant_id: str) -> int:
    """The tenant's next stamp; holds its row lock to the end of the caller's transaction."""
    return await conn.fetchval(
        "INSERT INTO template_stamps AS s (tenant_id) VALUES ($1) ON CONFLICT (tenant_id)"
        " DO UPDATE SET stamp = s.stamp + 1, changed_at = now() RETURNING stamp",
        tenant_id,
    )


async def stamp_of(conn: Executor, tenant_id: str) -> int:
    """The tenant's stamp; 0 if it never saved a template or a brand."""
    return await conn.fetchval("SELECT stamp FROM template_stamps WHERE tenant_id = $1", tenant_id) or 0


async def active_templates(conn: Executor, tenant_id: str) -> list[asyncpg.Record]:
    """The tenant's overrides in force: the latest version of each, unless that one is a deletion."""
    return await conn.fetch(f"SELECT * FROM ({_LATEST}) latest WHERE parts IS NOT NULL", tenant_id)


async def latest(conn: Executor, tenant_id: str, key: str, channel: str, locale: str) -> asyncpg.Record | None:
    """The latest version (a deletion has `parts` NULL); None if never saved."""
    return await conn.fetchrow(
        f"SELECT version, parts, saved_at FROM template_versions WHERE {_TEMPLATE} ORDER BY version DESC LIMIT 1",
        tenant_id,
        key,
        channel,
        locale,
    )


async def versions(conn: Executor, tenant_id: str, key: str, channel: str, locale: str) -> list[asyncpg.Record]:
    """Every version, newest first."""
    return await conn.fetch(
        f"SELECT version, parts, saved_at FROM template_versions WHERE {_TEMPLATE} ORDER BY version DESC",
        tenant_id,
        key,
        channel,
        locale,
    )


async def insert_version(
    conn: asyncpg.Connection, tenant_id: str, key: str, channel: str, locale: str, version: int, parts: Any
) -> asyncpg.Record:
    """A new version (`parts` None: the override deleted). Call inside the transaction that bumped the stamp."""
    return await conn.fetchrow(
        "INSERT INTO template_versions (tenant_id, key, channel, locale, version, parts)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING version, parts, saved_at",
        tenant_id,
        key,
        channel,
        locale,
        version,
        parts,
    )


async def last_stage_payload(conn: Executor, tenant_id: str, invoice_id: str) -> dict[str, Any] | None:
    """The StageEscalated data the notifier last recorded for the invoice (its newest delivery's payload)."""
    return await conn.fetchval(
        "SELECT payload FROM deliveries WHERE tenant_id = $1 AND invoice_id = $2"
        " ORDER BY created_at DESC, delivery_id DESC LIMIT 1",
        tenant_id,
        invoice_id,
    )


# --- brand ---------------------------------------------------------------------------------------

_BRAND_COLUMNS = "settings, logo_type, logo_id, octet_length(logo) AS logo_bytes, version, updated_at"


async def get_brand(conn: Executor, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_BRAND_COLUMNS} FROM brands WHERE tenant_id = $1", tenant_id)


async def put_brand_settings(conn: asyncpg.Connection, tenant_id: str, settings: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO brands AS b (tenant_id, settings) VALUES ($1, $2::jsonb) ON CONFLICT (tenant_id)"
        " DO UPDATE SET settings = EXCLUDED.settings, version = b.version + 1, updated_at = now()"
        f" RETURNING {_BRAND_COLUMNS}",
        tenant_id,
        settings,
    )


async def put_logo(
    conn: asyncpg.Connection, tenant_id: str, logo: bytes | None, logo_type: str | None, logo_id: str | None
) -> asyncpg.Record:
    """Store (or, all None, remove) the uploaded logo; a brand row with empty settings if none yet."""
    return await conn.fetchrow(
        "INSERT INTO brands AS b (tenant_id, settings, logo, logo_type, logo_id) VALUES ($1, '{}'::jsonb, $2, $3, $4)"
        " ON CONFLICT (tenant_id) DO UPDATE SET logo = EXCLUDED.logo, logo_type = EXCLUDED.logo_type,"
        " logo_id = EXCLUDED.logo_id, version = b.version + 1, updated_at = now()"
        f" RETURNING {_BRAND_COLUMNS}",
        tenant_id,
        logo,
        logo_type,
        logo_id,
    )


async def logo_of(conn: Executor, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT logo, logo_type, logo_id FROM brands WHERE tenant_id = $1 AND logo IS NOT NULL", tenant_id
    )


async def logo_by_id(conn: Executor, logo_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT logo, logo_type FROM brands WHERE logo_id = $1", logo_id)
