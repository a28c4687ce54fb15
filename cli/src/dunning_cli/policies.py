"""A tenant's dunning policy, as `GET`/`PUT /v1/policy` of the scheduler: the same model validates
the document (`dunning_scheduler.policy.PolicyDocument`) and the same store keeps its versions."""

import sys
from pathlib import Path

import orjson

from dunning.db import connect
from dunning_cli.services import schema_of
from dunning_scheduler.policy import PolicyDocument, PolicyError, parse_policy
from dunning_scheduler.policy_store import NEW_INVOICES, active_policy, put_policy


def _print(value) -> None:
    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


def read_document(path: str) -> object:
    """The JSON document in `path` ("-": stdin); exit status 2 if it is not JSON."""
    raw = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        print(f"error: {path} is not valid JSON: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def put(dsn: str, tenant_id: str, path: str, apply_to: str = NEW_INVOICES) -> int:
    """Store the document as the tenant's next version (an unchanged document is not stored again);
    with `apply_to` open_invoices also start re-planning the tenant's open invoices with it (the
    scheduler's replan loop works the job; `replan` in the output, progress at
    GET /v1/policy/replans/{replan_id})."""
    try:
        policy = parse_policy(read_document(path))
    except PolicyError as exc:
        for error in exc.errors:
            print(f"error: {error['field']}: {error['message']}", file=sys.stderr)
        return 2
    conn = await connect(dsn, schema_of("scheduler"))
    try:
        stored, created, job = await put_policy(conn, tenant_id, policy, apply_to=apply_to)
    finally:
        await conn.close()
    _print({**stored.as_json(), "created": created, "replan": None if job is None else dict(job)})
    return 0


async def get(dsn: str, tenant_id: str) -> int:
    """Print the tenant's active policy (the built-in default if none is stored)."""
    conn = await connect(dsn, schema_of("scheduler"))
    try:
        _print((await active_policy(conn, tenant_id)).as_json())
    finally:
        await conn.close()
    return 0


def schema() -> int:
    """Print the JSON Schema of a policy document."""
    _print(PolicyDocument.model_json_schema())
    return 0
