"""Operator commands: create a tenant (prints its API key and Stripe webhook secret), add API keys.

    python -m dunning.admin create-tenant --name "Acme Ltd" [--json]
    python -m dunning.admin create-api-key --tenant ten_...
    python -m dunning.admin relay pause|resume|status --service reconciliation
    (`make tenant NAME="Acme Ltd"` runs the first one)

The tenant and the hash of its API key are written to every service's schema (each service
authenticates on its own); the webhook secret goes to reconciliation only.
Keys and secrets are shown once: only their hashes (API keys) are kept where they are not needed
in clear (the webhook secret must stay usable as an HMAC key). Uses DATABASE_URL, or with none set,
the embedded server of a running `make run`.
"""

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from dunning import tenancy
from dunning.db import connect, migrate, migrations_of
from dunning.http import new_api_key
from dunning.ids import new_id
from dunning.settings import CommonSettings

# schema -> package of the service that owns it
SERVICES = {
    "ingest": "dunning_ingest",
    "scheduler": "dunning_scheduler",
    "notifier": "dunning_notifier",
    "reconciliation": "dunning_reconciliation",
}


def migrate_all(dsn: str) -> None:
    for schema, package in SERVICES.items():
        migrate(dsn, schema, migrations_of(package))


async def create_tenant(dsn: str, name: str, tenant_id: str | None = None) -> dict:
    tenant_id = tenant_id or new_id("ten")
    api_key = new_api_key()
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    for schema in SERVICES:
        conn = await connect(dsn, schema)
        try:
            async with conn.transaction():
                await tenancy.provision(conn, tenant_id, name, api_key)
                if schema == "reconciliation":
                    await conn.execute(
                        "INSERT INTO webhook_secrets (tenant_id, secret) VALUES ($1, $2)", tenant_id, webhook_secret
                    )
        finally:
            await conn.close()
    return {"tenant_id": tenant_id, "name": name, "api_key": api_key, "webhook_secret": webhook_secret}


async def create_api_key(dsn: str, tenant_id: str) -> dict:
    api_key = new_api_key()
    for schema in SERVICES:
        conn = await connect(dsn, schema)
        try:
            name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id)
            if name is None:
                raise SystemExit(f"no tenant {tenant_id}")
            await tenancy.provision(conn, tenant_id, name, api_key)
        finally:
            await conn.close()
    return {"tenant_id": tenant_id, "api_key": api_key}


async def relay(dsn: str, action: str, service: str) -> dict:
    """Pause, resume or show a service's outbox relay (all its replicas: the flag is in its schema)."""
    from dunning import outbox

    schema = {"invoice-ingest": "ingest"}.get(service, service)
    if schema not in SERVICES:
        raise SystemExit(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
    conn = await connect(dsn, schema)
    try:
        if action != "status":
            await outbox.set_paused(conn, action == "pause", by=f"admin:{os.environ.get('USER', '?')}")
        row = await conn.fetchrow("SELECT paused, changed_at, changed_by FROM relay_control")
        waiting = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    return {"service": schema, "paused": row["paused"], "changed_at": row["changed_at"].isoformat(),
            "changed_by": row["changed_by"], "outbox_rows_waiting": waiting}


def database_url() -> str:
    """DATABASE_URL when set; else the embedded server of a running `make run` (.run/stack.json)."""
    local = Path(".run/stack.json")
    if "DATABASE_URL" not in os.environ and local.exists():
        return json.loads(local.read_text())["DATABASE_URL"]
    return CommonSettings().database_url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dunning-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-tenant", help="create a tenant; prints its API key and webhook secret")
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    key = sub.add_parser("create-api-key", help="add an API key to a tenant")
    key.add_argument("--tenant", required=True)
    key.add_argument("--json", action="store_true")
    rel = sub.add_parser("relay", help="pause, resume or show a service's outbox relay")
    rel.add_argument("action", choices=["pause", "resume", "status"])
    rel.add_argument("--service", required=True, help="ingest | scheduler | notifier | reconciliation")
    rel.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    dsn = database_url()
    if args.command != "relay":  # an operator's pause must be immediate; the relay's tables exist
        migrate_all(dsn)
    if args.command == "create-tenant":
        result = asyncio.run(create_tenant(dsn, args.name))
    elif args.command == "relay":
        result = asyncio.run(relay(dsn, args.action, args.service))
    else:
        result = asyncio.run(create_api_key(dsn, args.tenant))
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return
    for k, v in result.items():
        print(f"{k:>15}: {v}")
    if "webhook_secret" in result:
        print(f"\nStripe webhook endpoint: http://127.0.0.1:8004/v1/webhooks/stripe/{result['tenant_id']}")
        print("Keep the API key and the webhook secret now: they are not shown again.")


if __name__ == "__main__":
    main()
