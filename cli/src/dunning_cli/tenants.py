"""Tenants and API keys. The tenant and the hash of its API key go to every service's schema (each
service authenticates on its own, `dunning.tenancy`); the Stripe webhook secret goes to
reconciliation only (its repository). Keys and secrets are returned once: only API key hashes are
kept (the webhook secret must stay usable as an HMAC key)."""

import secrets

from dunning import tenancy
from dunning.db import connect
from dunning.ids import new_id
from dunning_cli.services import SERVICES, schema_of
from dunning_reconciliation import repository as reconciliation


async def create_tenant(dsn: str, name: str, tenant_id: str | None = None) -> dict:
    tenant_id = tenant_id or new_id("ten")
    api_key = tenancy.new_api_key()
    webhook_secret = "whsec_" + secrets.token_urlsafe(32)
    for service in SERVICES:
        conn = await connect(dsn, schema_of(service))
        try:
            async with conn.transaction():
                await tenancy.provision(conn, tenant_id, name, api_key)
                if service == "reconciliation":
                    await reconciliation.add_webhook_secret(conn, tenant_id, webhook_secret)
        finally:
            await conn.close()
    return {"tenant_id": tenant_id, "name": name, "api_key": api_key, "webhook_secret": webhook_secret}


async def create_api_key(dsn: str, tenant_id: str) -> dict:
    api_key = tenancy.new_api_key()
    for service in SERVICES:
        conn = await connect(dsn, schema_of(service))
        try:
            name = await tenancy.tenant_name(conn, tenant_id)
            if name is None:
                raise SystemExit(f"no tenant {tenant_id}")
            await tenancy.provision(conn, tenant_id, name, api_key)
        finally:
            await conn.close()
    return {"tenant_id": tenant_id, "api_key": api_key}
