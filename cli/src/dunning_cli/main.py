"""dunning: the operator's commands, against the services' own tables (through their repositories).

    dunning migrate                                   apply every service's pending migrations
    dunning tenant create --name "Acme Ltd" [--json]  a tenant, its API key and Stripe webhook secret
    dunning api-key create --tenant ten_... [--json]  another API key for a tenant
    dunning relay pause|resume|status --service reconciliation [--json]
    dunning policy get --tenant ten_...               the tenant's active dunning policy (JSON)
    dunning policy put --tenant ten_... --file policy.json [--apply-to open_invoices]   (--file - reads stdin)
    dunning policy schema                             the JSON Schema of a policy document
    dunning import invoices FILE [--mapping m.yaml]   open invoices from a CSV/JSON lines export, through
                                                      invoice-ingest's bulk upsert (resumable; see --help)
    dunning statements import FILE [--format mt940]   a bank statement (CAMT.053, MT940) to reconciliation,
                                                      one statement a request, with a progress bar

The database comes from DATABASE_URL (with none set: the embedded server of a running `make run`),
each service's schema from its settings (e.g. SCHEDULER_DB_SCHEMA). Keys and secrets are shown once.
Exit status: 0 ok, 2 invalid arguments or policy document, 1 other errors.
"""

import argparse
import asyncio
import json
import sys

from dunning_cli import importer, policies, services, statements, tenants
from dunning_cli.relay import relay


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="dunning", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply every service's pending migrations")

    tenant = commands.add_parser("tenant", help="tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant; prints its API key and webhook secret")
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true", help="print JSON (for scripts)")

    key = commands.add_parser("api-key", help="API keys").add_subparsers(dest="action", required=True)
    key_create = key.add_parser("create", help="add an API key to a tenant")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument("--json", action="store_true")

    rel = commands.add_parser("relay", help="pause, resume or show a service's outbox relay")
    rel.add_argument("action", choices=["pause", "resume", "status"])
    rel.add_argument("--service", required=True, help=" | ".join(services.SERVICES))
    rel.add_argument("--json", action="store_true")

    policy = commands.add_parser("policy", help="a tenant's dunning policy").add_subparsers(
        dest="action", required=True
    )
    get = policy.add_parser("get", help="print the tenant's active policy")
    get.add_argument("--tenant", required=True)
    put = policy.add_parser("put", help="store a policy document as the tenant's next version")
    put.add_argument("--tenant", required=True)
    put.add_argument("--file", required=True, help="the JSON document, or - for stdin")
    put.add_argument(
        "--apply-to",
        choices=["new_invoices", "open_invoices"],
        default="new_invoices",
        help="open_invoices: also re-plan the tenant's open invoices with it (default: new invoices only)",
    )
    policy.add_parser("schema", help="print the JSON Schema of a policy document")
    importer.add_parser(commands)
    statements.add_parser(commands)
    return root


def _show(result: dict, as_json: bool) -> None:
    if as_json:
        json.dump(result, sys.stdout)
        print()
        return
    for k, v in result.items():
        print(f"{k:>15}: {v}")
    if "webhook_secret" in result:
        print(f"\nStripe webhook endpoint: http://127.0.0.1:8004/v1/webhooks/stripe/{result['tenant_id']}")
        print("Keep the API key and the webhook secret now: they are not shown again.")


def run(args: argparse.Namespace) -> int:
    if args.command == "import":  # over HTTP, with an API key: no database
        return importer.run(args)
    if args.command == "statements":  # over HTTP too
        return statements.run(args)
    if args.command == "policy" and args.action == "schema":
        return policies.schema()
    dsn = services.database_url()
    if args.command == "migrate":
        services.migrate_all(dsn)
        return 0
    if args.command == "policy":
        if args.action == "get":
            return asyncio.run(policies.get(dsn, args.tenant))
        return asyncio.run(policies.put(dsn, args.tenant, args.file, args.apply_to))
    if args.command == "relay":  # no migrations first: an operator's pause must be immediate
        _show(asyncio.run(relay(dsn, args.action, args.service)), args.json)
        return 0
    services.migrate_all(dsn)
    if args.command == "tenant":
        _show(asyncio.run(tenants.create_tenant(dsn, args.name)), args.json)
    else:
        _show(asyncio.run(tenants.create_api_key(dsn, args.tenant)), args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
