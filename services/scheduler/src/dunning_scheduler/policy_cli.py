"""Manage a tenant's dunning policy from the command line (same validation as `PUT /v1/policy`).

    python -m dunning_scheduler.policy_cli set  --tenant ten_123 --file policy.json   (or --file - for stdin)
    python -m dunning_scheduler.policy_cli show --tenant ten_123

`set` validates the document and stores it as the tenant's next version (an unchanged document is
not stored again); `show` prints the active policy (the built-in default if none is stored). Both
print JSON on stdout. The database comes from DATABASE_URL and the schema from SCHEDULER_DB_SCHEMA
(default "scheduler"), as for the service; the schema must be migrated (the service does it at
start-up). Exit status: 0 ok, 2 invalid document or arguments, 1 other errors.
"""

import argparse
import asyncio
import sys
from pathlib import Path

import orjson
from dunning.db import connect

from dunning_scheduler.policy import PolicyError, parse_policy
from dunning_scheduler.policy_store import active_policy, save_policy
from dunning_scheduler.settings import Settings


def _print(value) -> None:
    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "set":
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            print(f"error: {args.file} is not valid JSON: {exc}", file=sys.stderr)
            return 2
        try:
            policy = parse_policy(document)
        except PolicyError as exc:
            for error in exc.errors:
                print(f"error: {error['field']}: {error['message']}", file=sys.stderr)
            return 2
    conn = await connect(settings.database_url, settings.db_schema)
    try:
        if args.command == "set":
            stored, created = await save_policy(conn, args.tenant, policy)
            _print({**stored.as_json(), "created": created})
        else:
            _print((await active_policy(conn, args.tenant)).as_json())
    finally:
        await conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dunning_scheduler.policy_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    set_cmd = commands.add_parser("set", help="store a policy document as the tenant's next version")
    set_cmd.add_argument("--tenant", required=True)
    set_cmd.add_argument("--file", required=True, help="the JSON document, or - for stdin")
    show_cmd = commands.add_parser("show", help="print the tenant's active policy")
    show_cmd.add_argument("--tenant", required=True)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args, Settings()))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
