"""Idempotency-Key with Stripe's semantics, per tenant, kept 24 hours.

The first request with a key claims it (an autocommitted row holding the request's fingerprint)
before doing any work, and stores its response in the transaction that does the work. A later
request with the same key and the same fingerprint gets that response again, byte for byte, with
`Idempotent-Replayed: true`; with a different fingerprint it gets 422; while the first request is
still in flight it gets 409. Requests refused by validation never claim a key (as at Stripe), and a
request that fails unexpectedly releases its claim so the client can retry.
"""

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dunning.http import PROBLEMS, Problem
from dunning_ingest import repository

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Reply:
    """What a request answered: kept under its Idempotency-Key and replayed byte for byte."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def checked_key(key: str | None) -> str | None:
    """The Idempotency-Key header's value, or a 400 naming it."""
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise Problem(
            400,
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            errors=[
                {
                    "field": "Idempotency-Key",
                    "message": f"must be 1 to {MAX_KEY_LENGTH} characters",
                    "code": "invalid_idempotency_key",
                }
            ],
        )
    return key


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, *, ttl_hours: int = 24, stale_seconds: int = 60):
        self.pool = pool
        self.ttl_hours = ttl_hours
        self.stale_seconds = stale_seconds

    async def claim(self, tenant_id: str, key: str, fingerprint: bytes) -> Reply | None:
        """None: the caller owns the key and must do the work; otherwise the reply to give again."""
        if await repository.claim_idempotency_key(
            self.pool, tenant_id, key, fingerprint, ttl_hours=self.ttl_hours, stale_seconds=self.stale_seconds
        ):
            return None
        row = await repository.idempotency_key(self.pool, tenant_id, key)
        if row is None:  # released between the two statements: the first request failed; go again
            return await self.claim(tenant_id, key, fingerprint)
        if bytes(row["fingerprint"]) != fingerprint:
            raise Problem(
                422,
                "This Idempotency-Key was already used with a different request; use a new key "
                "for a different request.",
                type_=PROBLEMS + "idempotency-key-reuse",
                title="Idempotency key reused",
                errors=[{"field": "Idempotency-Key", "message": "already used with a different request"}],
            )
        if row["status"] is None:
            raise Problem(
                409,
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                type_=PROBLEMS + "idempotency-key-in-flight",
                title="Request in flight",
                errors=[{"field": "Idempotency-Key", "message": "first request still in flight"}],
                headers={"Retry-After": "1"},
            )
        headers = dict(row["headers"] or {})
        headers["Idempotent-Replayed"] = "true"
        return Reply(row["status"], headers, bytes(row["body"]))

    @staticmethod
    async def complete(
        conn: asyncpg.Connection, tenant_id: str, key: str, status: int, headers: dict[str, Any], body: bytes
    ) -> None:
        """Store the response, in the transaction that did the work."""
        await repository.complete_idempotency_key(conn, tenant_id, key, status, headers, body)

    async def release(self, tenant_id: str, key: str) -> None:
        await repository.release_idempotency_key(self.pool, tenant_id, key)

    async def purge(self) -> int:
        return await repository.purge_idempotency_keys(self.pool, self.ttl_hours)
