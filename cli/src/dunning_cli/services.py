"""The four services as the CLI reaches them: each one's settings (its schema, read as the service
reads it, e.g. SCHEDULER_DB_SCHEMA) and its migrations; the database from DATABASE_URL, or with none
set, the embedded server of a running `make run` (.run/stack.json)."""

import json
import os
from pathlib import Path

from dunning.db import migrate, migrations_of
from dunning.settings import CommonSettings
from dunning_ingest.settings import Settings as IngestSettings
from dunning_notifier.settings import Settings as NotifierSettings
from dunning_reconciliation.settings import Settings as ReconciliationSettings
from dunning_scheduler.settings import Settings as SchedulerSettings

# service name -> (its package, its settings class)
SERVICES: dict[str, tuple[str, type[CommonSettings]]] = {
    "ingest": ("dunning_ingest", IngestSettings),
    "scheduler": ("dunning_scheduler", SchedulerSettings),
    "notifier": ("dunning_notifier", NotifierSettings),
    "reconciliation": ("dunning_reconciliation", ReconciliationSettings),
}
ALIASES = {"invoice-ingest": "ingest"}


def service_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}: one of {', '.join(SERVICES)}")
    return name


def schema_of(service: str) -> str:
    return SERVICES[service][1]().db_schema


def database_url() -> str:
    """DATABASE_URL when set; else the embedded server of a running `make run` (.run/stack.json)."""
    local = Path(".run/stack.json")
    if "DATABASE_URL" not in os.environ and local.exists():
        return json.loads(local.read_text())["DATABASE_URL"]
    return CommonSettings().database_url


def migrate_all(dsn: str) -> None:
    """Apply every service's pending migrations (as each service does at start-up)."""
    for service, (package, _) in SERVICES.items():
        migrate(dsn, schema_of(service), migrations_of(package))
