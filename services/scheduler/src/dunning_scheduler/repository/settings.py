"""SQL of the tenant's versioned documents besides policies (segment rules, tenant settings; the
latest version is in force) and of the customers' own send windows."""

import asyncpg

# The two versioned tables share their shape; the table name is one of these, never caller text.
RULES, SETTINGS = "segment_rules", "tenant_settings"
_TABLES = (RULES, SETTINGS)
_COLUMNS = "version, document, changed_by, created_at"


def _table(table: str) -> str:
    if table not in _TABLES:
        raise ValueError(f"not a versioned settings table: {table}")
    return table


async def latest(conn: asyncpg.Connection, table: str, tenant_id: str) -> asyncpg.Record | None:
    """The tenant's latest version (version, document, changed_by, created_at); None: none stored."""
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM {_table(table)} WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1", tenant_id
    )


async def insert(
    conn: asyncpg.Connection, table: str, tenant_id: str, version: int, document: dict, changed_by: str
) -> asyncpg.Record:
    """Store a version (the caller holds the tenant's policy lock and chose `version`)."""
    return await conn.fetchrow(
        f"INSERT INTO {_table(table)} (tenant_id, version, document, changed_by) VALUES ($1, $2, $3, $4)"
        f" RETURNING {_COLUMNS}",
        tenant_id,
        version,
        document,
        changed_by,
    )


async def rules_use(conn: asyncpg.Connection, tenant_id: str, policy_id: str) -> bool:
    """Whether the rules in force name the policy (the latest version only)."""
    row = await latest(conn, RULES, tenant_id)
    if row is None:
        return False
    document = row["document"]
    return document.get("default_policy_id") == policy_id or any(
        rule.get("policy_id") == policy_id for rule in document.get("rules", [])
    )


# -- customer send windows -----------------------------------------------------------------------

_CUSTOMER_COLUMNS = "customer_id, send_window, changed_by, updated_at"


async def customer_window(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_CUSTOMER_COLUMNS} FROM customer_settings WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id,
    )


async def customer_windows(conn: asyncpg.Connection, tenant_id: str, customer_ids: list[str]) -> list[asyncpg.Record]:
    """The send windows of those customers that have one."""
    return await conn.fetch(
        f"SELECT {_CUSTOMER_COLUMNS} FROM customer_settings WHERE tenant_id = $1 AND customer_id = ANY($2::text[])",
        tenant_id,
        customer_ids,
    )


async def customer_window_count(conn: asyncpg.Connection, tenant_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM customer_settings WHERE tenant_id = $1", tenant_id)


_PUT_CUSTOMER = f"""
INSERT INTO customer_settings AS c (tenant_id, customer_id, send_window, changed_by) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
    send_window = EXCLUDED.send_window, changed_by = EXCLUDED.changed_by, updated_at = now()
RETURNING {_CUSTOMER_COLUMNS}
"""


async def put_customer_window(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, window: dict, changed_by: str
) -> asyncpg.Record:
    return await conn.fetchrow(_PUT_CUSTOMER, tenant_id, customer_id, window, changed_by)


async def delete_customer_window(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> bool:
    """False: the customer had no window of its own."""
    status = await conn.execute(
        "DELETE FROM customer_settings WHERE tenant_id = $1 AND customer_id = $2", tenant_id, customer_id
    )
    return status != "DELETE 0"
