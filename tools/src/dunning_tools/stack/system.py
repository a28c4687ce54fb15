"""The whole system as processes: infrastructure (embedded unless configured) plus the four services.

Used by `make run`, the e2e tests, the demo and the bench, so all of them run the same thing.
"""

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dunning_tools.stack import mailserver
from dunning_tools.stack.postgres import EmbeddedPostgres
from dunning_tools.stack.procs import free_port, port_in_use, spawn, stop, wait_for_port
from dunning_tools.stack.providers import app as providers
from dunning_tools.stack.service import ServiceProc, service_env
from dunning_tools.stack.tansu import TANSU_SESSION_TIMEOUT_MS, TansuBroker

SERVICES = {  # name -> (python package, env prefix, default port)
    "invoice-ingest": ("dunning_ingest", "INGEST_", 8001),
    "scheduler": ("dunning_scheduler", "SCHEDULER_", 8002),
    "notifier": ("dunning_notifier", "NOTIFIER_", 8003),
    "reconciliation": ("dunning_reconciliation", "RECONCILIATION_", 8004),
}


@dataclass
class Ports:
    postgres: int = 54329
    kafka: int = 19092
    smtp: int = 1025
    mail_api: int = 8025
    services: dict[str, int] = field(default_factory=lambda: {n: p for n, (_, _, p) in SERVICES.items()})
    broker_store: int = 19093  # the object store the broker keeps its data in (durable_broker)
    providers: int = 8026  # the provider stand-ins (SMS, print-and-mail, webhook receiver): providers/
    inbound_smtp: int = 2525  # the notifier's inbound SMTP endpoint (replies, DSN bounce reports)

    @classmethod
    def free(cls) -> "Ports":
        return cls(
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            {n: free_port() for n in SERVICES},
            free_port(),
            free_port(),
            free_port(),
        )


class Stack:
    """`durable` keeps PostgreSQL's fsyncs; `durable_broker` keeps the broker's topics, records and consumer
    offsets in `<workdir>/broker` (an object store, see `objectstore.py`) instead of memory, so a restart of
    the whole stack loses no event (`make run`)."""

    def __init__(
        self,
        workdir: Path,
        ports: Ports,
        *,
        durable: bool = True,
        durable_broker: bool = False,
        crash_safe: bool = False,
        extra_env: dict[str, str] | None = None,
        replicas: dict[str, int] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.ports = ports
        self.durable = durable
        self.durable_broker = durable_broker
        self.crash_safe = crash_safe  # PostgreSQL keeps every acknowledged commit through a SIGKILL (chaos)
        self.extra_env = extra_env or {}
        self.replicas = replicas or {}
        self.pg: EmbeddedPostgres | None = None
        self.broker: TansuBroker | None = None
        self.mail: subprocess.Popen | None = None
        self.providers: subprocess.Popen | None = None
        # The credentials the provider stand-ins expect and the notifier is given: made up per stack.
        self.provider_secrets = {
            "twilio_account_sid": "AC" + secrets.token_hex(16),
            "twilio_auth_token": secrets.token_hex(16),
            "printmail_api_key": "test_" + secrets.token_hex(16),
            # The stand-in posts signed tracking events (letter.mailed, ...) to the notifier, as Lob does.
            "printmail_webhook_secret": secrets.token_hex(24),
            "printmail_webhook_url": f"http://127.0.0.1:{ports.services['notifier']}/v1/providers/printmail/events",
        }
        self.broker_store: subprocess.Popen | None = None
        self.database_url = os.environ.get("DATABASE_URL", "")
        self.kafka_bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.procs: list[ServiceProc] = []

    # -- infrastructure ---------------------------------------------------------------------------
    def start_infrastructure(self) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        ours = [
            ("SMTP", self.ports.smtp),
            ("mail API", self.ports.mail_api),
            ("provider stand-ins", self.ports.providers),
            ("inbound SMTP", self.ports.inbound_smtp),
        ]
        if not self.database_url:
            ours.append(("PostgreSQL", self.ports.postgres))
        if not self.kafka_bootstrap_servers:
            ours.append(("Kafka broker", self.ports.kafka))
            if self.durable_broker:
                ours.append(("broker storage", self.ports.broker_store))
        ours += [(name, port) for name, port in self.ports.services.items()]
        for what, port in ours:
            if port_in_use(port):
                raise SystemExit(f"port {port} ({what}) is in use: is another `make run` still running?")
        if not self.database_url:
            self.pg = EmbeddedPostgres(
                self.workdir / "pgdata", self.ports.postgres, durable=self.durable, crash_safe=self.crash_safe
            )
            self.database_url = self.pg.start()
        if not self.kafka_bootstrap_servers:
            store_url = self.start_broker_store() if self.durable_broker else None
            self.broker = TansuBroker(
                self.ports.kafka, log_path=self.workdir / "logs" / "tansu.log", object_store_url=store_url
            )
            self.kafka_bootstrap_servers = self.broker.start()
        self.mail = mailserver.start(
            self.workdir / "mail",
            self.ports.smtp,
            self.ports.mail_api,
            self.workdir / "logs" / "mailserver.log",
            dsn_port=self.ports.inbound_smtp,  # +bounce addresses: a DSN to the notifier's inbound endpoint
        )
        self.providers = providers.start(
            self.workdir / "providers",
            self.ports.providers,
            self.provider_secrets,
            self.workdir / "logs" / "providers.log",
        )
        from dunning.kafka import ensure_topics
        from dunning_cli.services import migrate_all

        asyncio.run(ensure_topics(self.kafka_bootstrap_servers))
        migrate_all(self.database_url)

    def start_broker_store(self) -> str:
        port = self.ports.broker_store
        self.broker_store = spawn(
            [
                sys.executable,
                "-m",
                "dunning_tools.stack.objectstore",
                "--dir",
                str(self.workdir / "broker"),
                "--port",
                str(port),
            ],
            log_path=self.workdir / "logs" / "broker-store.log",
        )
        wait_for_port(port, proc=self.broker_store, what="broker storage")
        return f"http://127.0.0.1:{port}"

    def restart_broker(self) -> None:
        """Stop the broker (and its storage) and start it again on the same port and data."""
        assert self.broker is not None, "the broker is not ours (KAFKA_BOOTSTRAP_SERVERS)"
        self.broker.stop()
        stop(self.broker_store)
        if self.durable_broker:
            self.start_broker_store()
        self.broker.start()

    # -- services ---------------------------------------------------------------------------------
    def service_env(self, name: str, port: int) -> dict[str, str]:
        _, prefix, _ = SERVICES[name]
        env = service_env(prefix, self.database_url, self.kafka_bootstrap_servers, port)
        env.update(
            {
                "NOTIFIER_SMTP_HOST": "127.0.0.1",
                "NOTIFIER_SMTP_PORT": str(self.ports.smtp),
                "NOTIFIER_INBOUND_SMTP_PORT": str(self.ports.inbound_smtp),
                "NOTIFIER_ENV": "dev",  # the dev unsubscribe secret (optouts.py); production sets its own
                "NOTIFIER_SMS_API_URL": self.providers_url,
                "NOTIFIER_TWILIO_ACCOUNT_SID": self.provider_secrets["twilio_account_sid"],
                "NOTIFIER_TWILIO_AUTH_TOKEN": self.provider_secrets["twilio_auth_token"],
                "NOTIFIER_PRINTMAIL_API_URL": self.providers_url,
                "NOTIFIER_PRINTMAIL_API_KEY": self.provider_secrets["printmail_api_key"],
                "NOTIFIER_PRINTMAIL_WEBHOOK_SECRET": self.provider_secrets["printmail_webhook_secret"],
                "NOTIFIER_PUBLIC_URL": self.url("notifier"),
                # our Tansu takes a session under Kafka's 6-s floor: a killed replica stalls its group
                # ~2 s instead of ~11 (docs/cancel-guarantee.md#a-replica-killed)
                **({f"{prefix}CONSUMER_SESSION_TIMEOUT_MS": str(TANSU_SESSION_TIMEOUT_MS)} if self.broker else {}),
                **self.extra_env,
            }
        )
        return env

    def start_services(self) -> None:
        for name in SERVICES:
            count = self.replicas.get(name, 1)
            for replica in range(count):
                port = self.ports.services[name]  # replicas share the port (SO_REUSEPORT)
                env = self.service_env(name, port)
                if count > 1:
                    env[f"{SERVICES[name][1]}HTTP_REUSE_PORT"] = "true"
                sp = ServiceProc(
                    name,
                    SERVICES[name][0],
                    port,
                    env,
                    self.workdir / "logs" / f"{name}{'-' + str(replica) if replica else ''}.log",
                    replica=replica,
                )
                self.procs.append(sp)
                sp.start()
        for sp in self.procs:
            sp.wait_ready()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.services[name]}"

    @property
    def mail_api(self) -> str:
        return f"http://127.0.0.1:{self.ports.mail_api}"

    @property
    def providers_url(self) -> str:
        """The provider stand-ins (providers/): Twilio's API, print-and-mail, the webhook receiver."""
        return f"http://127.0.0.1:{self.ports.providers}"

    def restart_dead(self) -> list[str]:
        """Supervise: start again any service process that died (what an orchestrator does)."""
        restarted = []
        for sp in self.procs:
            if sp.proc is not None and not sp.running():
                sp.start()
                restarted.append(f"{sp.name}#{sp.replica}")
        return restarted

    def stop_services(self) -> None:
        for sp in self.procs:  # SIGTERM to all first: they drain in parallel
            sp.kill(signal.SIGTERM)
        for sp in self.procs:
            sp.stop(timeout=30)

    def stop(self) -> None:
        self.stop_services()
        stop(self.mail)
        stop(self.providers)
        if self.broker:
            self.broker.stop()
        stop(self.broker_store)
        if self.pg:
            self.pg.stop()

    def env_file(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "MAIL_API": self.mail_api,
            "PROVIDERS_URL": self.providers_url,
            **{f"{n.upper().replace('-', '_')}_URL": self.url(n) for n in SERVICES},
        }

    def write_state(self, extra: dict | None = None) -> Path:
        path = self.workdir / "stack.json"
        path.write_text(json.dumps({**self.env_file(), **(extra or {})}, indent=2))
        return path
