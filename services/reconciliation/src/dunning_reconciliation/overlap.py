"""`meanwhile`: one statement runs on the connection while Python computes what comes next, so that
PostgreSQL and the import's own work overlap (the statements bench: a statement's writes are about
as long as the Python that builds them)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def meanwhile(statement: Awaitable[Any]) -> AsyncIterator[asyncio.Future]:
    """Run `statement` while the block computes (nothing in the block may use the connection). The
    statement is awaited on the way out, its error raised there, so the connection is free again;
    its result is the yielded future's, once the block is left."""
    task = asyncio.ensure_future(statement)
    await asyncio.sleep(0)  # the statement is sent
    try:
        yield task
    finally:
        await task
