"""Bad input is never a 500: every route of every service, taken from its OpenAPI, with hostile values.

NUL characters, lone surrogates, 1 MB strings, JSON nested 100,000 (and 200) deep and wrong types, in
path segments, query parameters, headers and JSON bodies, each with and without a valid API key. No
answer may be a 5xx; every error is a problem document, and text PostgreSQL cannot store is refused
naming where it was (the path or query parameter, the header, the body path such as
`customer.name`).
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from dunning_reconciliation.stripe_signature import sign

pytestmark = pytest.mark.integration

NUL, SURROGATE, HUGE = "a\x00b", "a\ud800b", "x" * 1_000_000
LONG = "x" * 60_000  # in a URL: clients (httpx: 64 KiB) and servers (uvicorn: 16 KiB lines) refuse 1 MB ones
EDGE = {"nul": NUL, "surrogate": SURROGATE}  # refused at the edge, the field named, with or without a key
WRONG_TYPES = {"number": 12345, "list": ["x"], "object": {"x": "y"}, "null": None, "bool": True}
PLAUSIBLE = {
    "invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA",
    "delivery_id": "dlv_01JCQ4Z8K7M2P9R3T5V6W8X0YA",
    # a tenant template's address: GET/PUT/DELETE /v1/templates/{key}/{channel}/{locale}
    "key": "firm",
    "channel": "email",
    "locale": "de",
}


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@dataclass
class Attempt:
    what: str  # for the failure message
    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    names: str | None = None  # the field the answer must name, when the value is refused
    edge: bool = False  # NUL or surrogate: must be refused (400/422) naming `names`
    signed: bool = False  # a webhook's body: signed as the provider would, so it gets past the signature


# --- building requests from the OpenAPI ---------------------------------------------------------


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema and "type" not in schema and "properties" not in schema:
            options = [_resolve(spec, s) for s in schema[key]]
            return next((o for o in options if o.get("type") != "null"), options[0])
    return schema


def _example(spec: dict, schema: dict, depth: int = 0) -> Any:
    """A plausible value for a schema: its example (on the property, or on the type it resolves to), else
    one built from its type."""
    if schema.get("examples"):  # an optional field's examples sit beside its anyOf
        return schema["examples"][0]
    schema = _resolve(spec, schema)
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            k: _example(spec, v, depth + 1)
            for k, v in props.items()
            if k in schema.get("required", props) and depth < 4
        }
    if kind == "array":
        return [_example(spec, schema.get("items", {}), depth + 1)] if depth < 4 else []
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    if schema.get("format") == "date":
        return "2026-11-16"
    if schema.get("format") == "date-time":
        return "2026-11-16T09:00:00Z"
    return "x"


def _leaves(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the body's properties, nested objects included (not array items)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out.append(path)
            out += _leaves(v, path)
    return out


def _with(body: Any, path: str, value: Any) -> Any:
    body = orjson.loads(orjson.dumps(body))
    *parents, last = path.split(".")
    node = body
    for p in parents:
        node = node[p]
    node[last] = value
    return body


def _dumps(body: Any) -> bytes:
    """JSON for bodies with lone surrogates too (orjson refuses them; the stdlib writes \\ud800)."""
    return json.dumps(body).encode()


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def attempts(spec: dict, tenant_id: str) -> list[Attempt]:
    out: list[Attempt] = []
    for template, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            method = method.upper()
            params = op.get("parameters", [])
            path_params = {p["name"]: PLAUSIBLE.get(p["name"], "x1") for p in params if p["in"] == "path"}
            if "tenant_id" in path_params:
                path_params["tenant_id"] = tenant_id

            def url(overrides: dict[str, str] | None = None, template=template, path_params=path_params) -> str:
                values = {**{k: _quote(v) for k, v in path_params.items()}, **(overrides or {})}
                return template.format(**values)

            base = f"{method} {template}"
            for name in path_params:
                for label, value in [*EDGE.items(), ("60KB", LONG)]:
                    out.append(
                        Attempt(
                            f"{base} path {name}={label}",
                            method,
                            url({name: _quote(value)}),
                            names=name,
                            edge=label in EDGE,
                        )
                    )
                out.append(
                    Attempt(f"{base} path {name}=invalid-utf8", method, url({name: "a%FF%FEb"}), names=name, edge=True)
                )
            for p in params:
                if p["in"] == "query":
                    kind = _resolve(spec, p.get("schema", {})).get("type")
                    values = [*EDGE.items(), ("60KB", LONG), ("invalid-utf8", None)]
                    if kind == "integer" or "anyOf" in p.get("schema", {}):
                        values += [("not-a-number", "abc"), ("huge-number", "9" * 400), ("negative", "-1")]
                    for label, value in values:
                        query = f"{p['name']}=a%FF%FEb" if value is None else f"{p['name']}={_quote(value)}"
                        out.append(
                            Attempt(
                                f"{base} query {p['name']}={label}",
                                method,
                                url() + "?" + query,
                                names=p["name"],
                                edge=label in EDGE or value is None,
                            )
                        )
                elif p["in"] == "header":
                    for label, raw in [
                        ("nul", b"a\x00b"),
                        ("latin-1", b"caf\xe9 \xff"),
                        ("surrogate-bytes", b"a\xed\xa0\x80b"),
                        ("1MB", HUGE.encode()),
                    ]:
                        # (whether the header or an example body is at fault first is the route's choice)
                        out.append(
                            Attempt(
                                f"{base} header {p['name']}={label}",
                                method,
                                url(),
                                headers={p["name"]: raw},
                                names=p["name"] if label == "nul" else None,
                                edge=label == "nul",
                            )
                        )
            body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            signed = any(p["in"] == "header" and p["name"] == "Stripe-Signature" for p in params)
            first_body = len(out)
            if body_schema is not None:
                body = _example(spec, body_schema)
                for leaf in _leaves(body):
                    for label, value in [*EDGE.items(), ("1MB", HUGE), *WRONG_TYPES.items()]:
                        # null may stand for "not given" (then another field may be the one at fault)
                        out.append(
                            Attempt(
                                f"{base} body {leaf}={label}",
                                method,
                                url(),
                                content=_dumps(_with(body, leaf, value)),
                                names=None if label == "null" else leaf.split(".")[-1],
                                edge=label in EDGE,
                            )
                        )
                    out.append(
                        Attempt(
                            f"{base} body {leaf}=nested-200",
                            method,
                            url(),
                            content=_dumps(_with(body, leaf, "DEEP")).replace(b'"DEEP"', _deep(200)),
                        )
                    )
                for label, content in [
                    ("nested-100000", _deep(100_000)),
                    ("objects-nested-100000", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
                    ("not-json", b"{nope"),
                    ("not-utf8", b'{"a": "\xff\xfe"}'),
                    ("nul-key", b'{"a\\u0000": 1}'),
                    ("empty", b""),
                    ("list", b"[]"),
                    ("string", b'"x"'),
                    ("number", b"1"),
                    ("null", b"null"),
                    ("1MB-key", _dumps({HUGE: 1})),
                ]:
                    out.append(
                        Attempt(
                            f"{base} body={label}",
                            method,
                            url(),
                            content=content,
                            names="a" if label == "nul-key" else None,
                            edge=label == "nul-key",
                        )
                    )
                for a in out[first_body:]:
                    a.signed = signed
            out.append(
                Attempt(
                    f"{base} header Authorization=nul",
                    method,
                    url(),
                    headers={"Authorization": b"Bearer \x00"},
                    names="Authorization",
                    edge=True,
                )
            )
            out.append(
                Attempt(
                    f"{base} header Authorization=1MB",
                    method,
                    url(),
                    headers={"Authorization": b"Bearer " + HUGE.encode()},
                )
            )
    return out


# --- the walk -------------------------------------------------------------------------------------


def _named(problem: dict, name: str) -> bool:
    """The problem names the field (a header's name in any case: HTTP header names are case-insensitive)."""
    return any(name.lower() in (e.get("field") or "").lower() for e in problem.get("errors") or [])


async def _walk(client: httpx.AsyncClient, spec: dict, auth: dict[str, str], kit) -> list[str]:
    wrong = []
    for a in attempts(spec, kit.TENANT):
        headers = {**auth, **a.headers}
        if a.content is not None:
            headers.setdefault("content-type", "application/json")
        if a.signed and a.content is not None:
            headers["Stripe-Signature"] = sign(a.content, kit.WEBHOOK_SECRET)
        request = client.build_request(a.method, a.path, headers=headers, content=a.content)
        r = await client.send(request)
        where = f"{a.what} ({'key' if auth else 'no key'}): {r.status_code} {r.text[:300]}"
        if r.status_code >= 500:
            wrong.append("5xx: " + where)
            continue
        if r.status_code >= 400:
            if r.headers.get("content-type") != "application/problem+json":
                wrong.append("not a problem: " + where)
                continue
            problem = r.json()
            if problem.get("status") != r.status_code:
                wrong.append("problem status differs: " + where)
        if a.edge:
            if r.status_code not in (400, 422) or not _named(r.json(), a.names or ""):
                wrong.append(f"not refused naming {a.names!r}: " + where)
        elif a.names and r.status_code == 422 and auth and not _named(r.json(), a.names):
            wrong.append(f"422 not naming {a.names!r}: " + where)
    return wrong


@pytest.mark.parametrize("service", ["invoice-ingest", "scheduler", "notifier", "reconciliation"])
async def test_no_hostile_value_anywhere_makes_a_server_error(infra, services_kit, service):
    schema = services_kit.migrate_schema(infra.database_url, service)
    app, pool = await services_kit.open_app(infra.database_url, service, schema)
    try:
        spec = app.openapi()
        assert spec["paths"], "the walk needs routes"
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t", timeout=60
        ) as client:
            wrong = await _walk(client, spec, {"Authorization": f"Bearer {services_kit.API_KEY}"}, services_kit)
            wrong += await _walk(client, spec, {}, services_kit)
    finally:
        await pool.close()
    assert not wrong, f"{len(wrong)} answers wrong:\n" + "\n".join(wrong[:40])


@pytest.mark.parametrize("service", ["invoice-ingest", "scheduler", "notifier", "reconciliation"])
def test_every_operation_is_documented_the_same_way(services_kit, service):
    spec = services_kit.app_without_database(service).openapi()
    assert spec["info"]["title"] == f"dunning-{service}" and spec["info"]["version"][0].isdigit()
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    declared_tags = {t["name"] for t in spec.get("tags", [])}
    ids = []
    for template, item in spec["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {template}"
            ids.append(op.get("operationId"))
            assert op.get("operationId") and op["operationId"][0].islower(), f"{where}: explicit operationId"
            assert op.get("tags") and set(op["tags"]) <= declared_tags, f"{where}: declared tags"
            # Public: a provider's callbacks (authenticated by its signature) and the one-click unsubscribe
            # link a customer's mail client follows (authenticated by the signed token in its path), and the
            # brand logos reminder e-mails link to (public content, addressed by their digest).
            public = template.startswith(("/v1/webhooks/", "/v1/providers/", "/v1/unsubscribe/", "/v1/brand-logos/"))
            assert public or op.get("security") == [{"bearer": []}], f"{where}: the bearer scheme"
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, f"{where} {status}: a problem document"
            assert {"400", "422", "500"} <= set(op["responses"]), f"{where}: the errors every route can answer"
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("service", ["invoice-ingest", "scheduler", "notifier", "reconciliation"])
def test_every_route_has_an_example_in_the_readme(services_kit, service):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = []
    for template in services_kit.app_without_database(service).openapi()["paths"]:
        # a path parameter stands for any id the example uses (inv_01M8..., pol_standard, $TOKEN)
        pattern = re.sub(r"\\\{[^}]+\\\}", r"""[^\\s"'/?]+""", re.escape(template))
        if not re.search(pattern + r"(?![\w/{-])", readme):  # the whole path, not the start of a longer one
            missing.append(template)
    assert not missing, f"{service}: routes with no example in the README: {missing}"
