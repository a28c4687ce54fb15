"""The one API-key dependency: `Authorization: Bearer <key>` -> tenant id, cached for a few seconds.

Successful lookups are cached per key for `auth_cache_seconds` (common settings, e.g.
`INGEST_AUTH_CACHE_SECONDS`, default 5), so a busy client does not cost a query per request; a
revoked key stops working within that time; unknown keys are never cached. Declared as the `bearer`
security scheme on every route that uses it.
"""

import time
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from dunning.http.problems import Problem
from dunning.logging import bind_context
from dunning.tenancy import tenant_of_key

_MAX_ENTRIES = 10_000
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dunning"'}
_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="The tenant's API key: `Authorization: Bearer dk_...`"
)


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, detail, headers=_CHALLENGE, errors=[{"field": "Authorization", "message": detail, "code": "unauthorized"}]
    )


class ApiKeyAuth:
    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float = 5.0):
        self.pool = pool
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant(self, authorization: str | None) -> str:
        """The tenant of `Authorization: Bearer <key>`, or a 401 problem; binds tenant_id to the log context."""
        now = time.monotonic()
        if authorization and self.ttl > 0:
            hit = self._cache.get(authorization)
            if hit is not None and hit[1] > now:
                bind_context(tenant_id=hit[0])
                return hit[0]
        if not authorization:
            raise _unauthorized("Missing Authorization header: send 'Authorization: Bearer <api key>'.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization must be 'Bearer <api key>'.")
        tenant_id = await tenant_of_key(self.pool, token.strip())
        if tenant_id is None:
            raise _unauthorized("Unknown or revoked API key.")
        bind_context(tenant_id=tenant_id)
        if self.ttl > 0:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[authorization] = (tenant_id, now + self.ttl)
        return tenant_id


async def current_tenant(request: Request, _: Annotated[Any, Security(_bearer)] = None) -> str:
    """The dependency behind `TenantId`: the app's ApiKeyAuth (`app.state.auth`, set by service_app)."""
    auth: ApiKeyAuth = request.app.state.auth
    return await auth.tenant(request.headers.get("authorization"))


# `tenant_id: TenantId` in a route's signature: the caller's tenant, the bearer scheme declared on the route.
TenantId = Annotated[str, Depends(current_tenant)]
