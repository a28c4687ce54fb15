"""The four services' real HTTP apps, built by their own app factories on freshly migrated schemas of
the test PostgreSQL, each with a tenant and its API key (for the hostile-input walk and the fuzzing)."""

import asyncio
import threading
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

TENANT = "ten_test_hostile_input"
API_KEY = "dk_test_hostile_input_0123456789abcdef"
WEBHOOK_SECRET = "whsec_test_hostile_input"
SERVICES = ("invoice-ingest", "scheduler", "notifier", "reconciliation")
PACKAGES = {
    "invoice-ingest": "dunning_ingest",
    "scheduler": "dunning_scheduler",
    "notifier": "dunning_notifier",
    "reconciliation": "dunning_reconciliation",
}


def migrate_schema(database_url: str, service: str) -> str:
    from dunning.db import migrate, migrations_of

    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(database_url, schema, migrations_of(PACKAGES[service]))
    return schema


def _app(service: str, settings_kwargs: dict[str, Any], pool) -> Any:
    """The app as the service's bootstrap builds it (each through `dunning.http.service_app`)."""
    if service == "invoice-ingest":
        from dunning_ingest.bootstrap import build_app
        from dunning_ingest.settings import Settings as IngestSettings

        return build_app(IngestSettings(**settings_kwargs), pool)
    if service == "scheduler":
        from dunning_scheduler.api import create_app as scheduler_app
        from dunning_scheduler.settings import Settings as SchedulerSettings

        return scheduler_app(pool, SchedulerSettings(**settings_kwargs))
    if service == "notifier":
        from dunning_notifier.api import ApiDeps
        from dunning_notifier.api import create_app as notifier_app
        from dunning_notifier.settings import Settings as NotifierSettings

        return notifier_app(ApiDeps(pool=pool, settings=NotifierSettings(**settings_kwargs)))
    from dunning_reconciliation.api import Deps
    from dunning_reconciliation.api import create_app as reconciliation_app
    from dunning_reconciliation.settings import Settings as ReconciliationSettings

    return reconciliation_app(Deps(pool, ReconciliationSettings(**settings_kwargs)))


async def open_app(database_url: str, service: str, schema: str) -> tuple[Any, Any]:
    """(app, pool): the service's app on `schema`, with the test tenant, its key and webhook secret."""
    from dunning import tenancy
    from dunning.db import create_pool

    pool = await create_pool(database_url, schema, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Hostile Input Ltd", API_KEY)
        if service == "reconciliation":
            from dunning_reconciliation import repository

            await repository.add_webhook_secret(conn, TENANT, WEBHOOK_SECRET)
    settings = {"DATABASE_URL": database_url, "db_schema": schema, "auth_cache_seconds": 0}
    return _app(service, settings, pool), pool


def app_without_database(service: str) -> Any:
    """The service's app with no pool behind it: enough to read its OpenAPI."""
    return _app(service, {"auth_cache_seconds": 0}, None)


@dataclass
class LiveServices:
    urls: dict[str, str]
    apps: dict[str, Any]


@pytest.fixture(scope="module")
def live_services(infra):
    """The four apps served by uvicorn (one thread, one event loop), for clients speaking real HTTP."""
    import uvicorn

    from dunning_tools.stack.procs import free_port, wait_for_port

    schemas = {service: migrate_schema(infra.database_url, service) for service in SERVICES}
    ports = {service: free_port() for service in SERVICES}
    servers: list[uvicorn.Server] = []
    apps: dict[str, Any] = {}
    ready = threading.Event()
    failed: list[BaseException] = []

    async def serve() -> None:
        pools = []
        try:
            for service in SERVICES:
                app, pool = await open_app(infra.database_url, service, schemas[service])
                apps[service] = app
                pools.append(pool)
                servers.append(
                    uvicorn.Server(
                        uvicorn.Config(
                            app,
                            host="127.0.0.1",
                            port=ports[service],
                            log_config=None,
                            access_log=False,
                            lifespan="off",
                        )
                    )
                )
            tasks = [asyncio.create_task(s.serve()) for s in servers]
            ready.set()
            await asyncio.gather(*tasks)
        except BaseException as exc:
            failed.append(exc)
            ready.set()
        finally:
            for pool in pools:
                await pool.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="live-services", daemon=True)
    thread.start()
    ready.wait(120)
    if failed:
        raise failed[0]
    for port in ports.values():
        wait_for_port(port, what="service")
    yield LiveServices({s: f"http://127.0.0.1:{p}" for s, p in ports.items()}, apps)
    for server in servers:
        server.should_exit = True
    thread.join(20)


@pytest.fixture
def services_kit() -> SimpleNamespace:
    """The helpers above for test modules (test dirs are not packages, so they cannot import conftest)."""
    return SimpleNamespace(
        TENANT=TENANT,
        API_KEY=API_KEY,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        SERVICES=SERVICES,
        migrate_schema=migrate_schema,
        open_app=open_app,
        app_without_database=app_without_database,
    )
