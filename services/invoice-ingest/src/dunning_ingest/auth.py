"""API-key authentication for every route: `Authorization: Bearer <key>` -> tenant id.

Lookups go through dunning.http.tenant_for_key; successful ones are cached for a few seconds
(INGEST_AUTH_CACHE_SECONDS) so a busy client does not cost a query per request. A revoked key
stops working within that time; unknown keys are never cached.
"""

import time

import asyncpg

from dunning.http import tenant_for_key
from dunning.logging import bind_context

_MAX_ENTRIES = 10_000


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float = 5.0):
        self.pool = pool
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant(self, authorization: str | None) -> str:
        now = time.monotonic()
        if authorization and self.ttl > 0:
            hit = self._cache.get(authorization)
            if hit is not None and hit[1] > now:
                bind_context(tenant_id=hit[0])
                return hit[0]
        tenant_id = await tenant_for_key(self.pool, authorization)
        if self.ttl > 0:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[authorization] = (tenant_id, now + self.ttl)
        return tenant_id
