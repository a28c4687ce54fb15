"""What every repository module shares: a connection or a pool (a single statement needs no
transaction of its own)."""

from typing import TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
