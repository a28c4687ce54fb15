"""Webhook signing secrets per tenant and processor, and their rotation.

A new secret (given by the processor's dashboard, or generated for Standard Webhooks) is active at
once; the processor's previous active secrets stay valid for the overlap (default a day) and then
expire, so no delivery signed with the old secret is refused while the processor switches. A secret
can be revoked at once. The full secret is answered once, when it is stored; listings mask it.
"""

import base64
import binascii
import re
import secrets as random
from datetime import datetime
from typing import Any

import asyncpg

from dunning.clock import isoformat
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_reconciliation.repository import fence
from dunning_reconciliation.repository import secrets as repo

STRIPE, GOCARDLESS, STANDARD_WEBHOOKS = "stripe", "gocardless", "standard_webhooks"
PROCESSORS = (STRIPE, GOCARDLESS, STANDARD_WEBHOOKS)
WHSEC = "whsec_"
# Standard Webhooks: secrets are 24 to 64 random bytes, base64 after "whsec_" (the specification).
MIN_SW_BYTES, MAX_SW_BYTES, GENERATED_SW_BYTES = 24, 64, 32
_PRINTABLE = re.compile(r"^[\x21-\x7e]{16,255}$")
_STRIPE = re.compile(r"^whsec_[0-9A-Za-z]{8,250}$")
log = get_logger(__name__)


class SecretError(ValueError):
    """A secret that cannot be this processor's; the message names what is wrong."""


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after the optional whsec_ prefix."""
    text = secret[len(WHSEC) :] if secret.startswith(WHSEC) else secret
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("must be whsec_ followed by base64") from None


def check_secret(processor: str, secret: str) -> str:
    """The secret as stored, or SecretError: each processor's own format."""
    if processor == STANDARD_WEBHOOKS:
        if not secret.startswith(WHSEC):
            raise SecretError("must be whsec_ followed by base64 (a Standard Webhooks secret)")
        size = len(standard_webhooks_key(secret))
        if not MIN_SW_BYTES <= size <= MAX_SW_BYTES:
            raise SecretError(f"must decode to {MIN_SW_BYTES} to {MAX_SW_BYTES} bytes, got {size}")
        return secret
    if processor == STRIPE:
        if not _STRIPE.fullmatch(secret):
            raise SecretError("must be a Stripe endpoint secret: whsec_ followed by letters and digits")
        return secret
    if not _PRINTABLE.fullmatch(secret):
        raise SecretError("must be 16 to 255 printable characters without spaces (the endpoint's secret)")
    return secret


def generate(processor: str) -> str:
    """A new secret; only Standard Webhooks lets the receiver choose it (the others' dashboards do)."""
    if processor != STANDARD_WEBHOOKS:
        raise SecretError(f"{processor} gives the secret (its dashboard shows it): send it as `secret`")
    return WHSEC + base64.b64encode(random.token_bytes(GENERATED_SW_BYTES)).decode()


def mask(secret: str) -> str:
    """`whsec_…abcd`: enough to tell secrets apart, never enough to sign with."""
    prefix = WHSEC if secret.startswith(WHSEC) else ""
    return f"{prefix}…{secret[-4:]}"


def status(row: asyncpg.Record) -> str:
    now: datetime = row["now"]
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is None:
        return "active"
    return "expiring" if row["expires_at"] > now else "expired"


def secret_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "secret_id": row["secret_id"],
        "processor": row["processor"],
        "secret": mask(row["secret"]),
        "status": status(row),
        "created_at": isoformat(row["created_at"]),
        "expires_at": isoformat(row["expires_at"]) if row["expires_at"] else None,
        "revoked_at": isoformat(row["revoked_at"]) if row["revoked_at"] else None,
    }


async def rotate(
    pool: asyncpg.Pool, tenant_id: str, processor: str, secret: str | None, overlap_seconds: int
) -> dict[str, Any]:
    """Store the new secret and start the previous ones' overlap; the 201 body, with the secret in full."""
    try:
        value = check_secret(processor, secret) if secret is not None else generate(processor)
    except SecretError as exc:
        raise Problem.invalid("secret", str(exc), "invalid_secret") from None
    async with pool.acquire() as conn, conn.transaction():
        # One rotation of a tenant's processor at a time: two would each expire the other's new secret.
        await fence.lock_names(conn, [f"webhook_secrets\x1f{tenant_id}\x1f{processor}"])
        row = await repo.insert_secret(conn, new_id("whs"), tenant_id, processor, value)
        if row is None:
            raise Problem.invalid("secret", "this secret is stored already", "duplicate_secret", status=409)
        previous = await repo.expire_previous(conn, tenant_id, processor, row["secret_id"], overlap_seconds)
    log.info(
        "reconciliation.webhook_secret.rotated",
        tenant_id=tenant_id,
        processor=processor,
        secret_id=row["secret_id"],
        previous=[r["secret_id"] for r in previous],
        overlap_seconds=overlap_seconds,
    )
    view = secret_view(row)
    view["secret"] = value
    view["previous"] = [{"secret_id": r["secret_id"], "expires_at": isoformat(r["expires_at"])} for r in previous]
    return view


async def list_secrets(pool: asyncpg.Pool, tenant_id: str, processor: str | None) -> list[dict[str, Any]]:
    return [secret_view(r) for r in await repo.list_secrets(pool, tenant_id, processor, 500)]


async def revoke(pool: asyncpg.Pool, tenant_id: str, secret_id: str) -> dict[str, Any]:
    row = await repo.revoke_secret(pool, tenant_id, secret_id) if len(secret_id) <= 64 else None
    if row is None:
        raise Problem.not_found("secret_id", f"No webhook secret {secret_id!r}.")
    log.info("reconciliation.webhook_secret.revoked", tenant_id=tenant_id, secret_id=secret_id)
    return secret_view(row)


async def active(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, processor: str) -> list[str]:
    """The secrets a delivery may be signed with now (an unknown tenant has none)."""
    return await repo.active_secrets(conn, tenant_id, processor) if len(tenant_id) <= 100 else []
