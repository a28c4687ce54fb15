"""The edge guard: text PostgreSQL cannot store, and JSON no parser should walk, never reach a route.

A NUL character (`\\u0000`, `%00`, a NUL byte) or a lone UTF-16 surrogate (`\\ud800`, or percent-encoded
bytes that are not UTF-8) in a path segment, a query parameter, a header or any JSON string, a JSON
body nested deeper than `MAX_DEPTH`, and a body larger than the app's limit are answered here with a
problem naming the field (`errors: [{"field", "message", "code"}]`), before authentication and
routing. A plain ASGI middleware, cheap on the hot path: clean requests cost a few byte scans (C
speed); a body is parsed only when it might be too deep (more openers than `MAX_DEPTH`) or holds an
escape worth a look, and then once: the parsed value is left in the scope under `JSON_BODY` for the
route (ingest's bulk import reads 10,000 invoices a request).
"""

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from dunning.http.problems import PROBLEM, problem_body
from dunning.text import bad_text

JSON_BODY = "dunning.json_body"  # scope key: the body parsed by the guard, when it had to parse it
MAX_DEPTH = 64
_PARSE_ALWAYS = 64 * 1024  # larger bodies are parsed without counting openers first
_DEPTH_PROBE = 254 - MAX_DEPTH  # orjson refuses to serialise deeper than 254 levels: wrap and let it count
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")  # a NUL or surrogate escape in JSON text
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_NOT_ASCII_OR_PCT = re.compile(rb"[%\x00\x80-\xff]")
_NO_BODY = frozenset(("GET", "HEAD", "OPTIONS"))  # a DELETE may carry a body (a reason)


class _Refusal(Exception):
    def __init__(self, status: int, field: str, message: str, code: str):
        super().__init__(message)
        self.status, self.field, self.message, self.code = status, field, message, code


def _code(message: str) -> str:
    return "nul_character" if "NUL" in message else "lone_surrogate"


def _decoded(raw: bytes, field: str) -> str:
    """Percent-decode and check one path segment or query value."""
    try:
        text = unquote_to_bytes(raw).decode("utf-8") if b"%" in raw else raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(400, field, "must be UTF-8 text (lone surrogates are not)", "invalid_utf8") from None
    if (why := bad_text(text)) is not None:
        raise _Refusal(422, field, why, _code(why))
    return text


def _first_bad_string(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, reason) of the first key or string PostgreSQL cannot store, depth first."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if (why := bad_text(node)) is not None:
                return where or "(body)", why
        elif isinstance(node, dict):
            for key, item in node.items():
                inner = f"{where}.{key}" if where else str(key)
                if (why := bad_text(key)) is not None:
                    return inner, "key " + why
                stack.append((item, inner))
        elif isinstance(node, list):
            stack.extend((item, f"{where}.{i}" if where else str(i)) for i, item in enumerate(node))
    return None


def _depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            depth = max(depth, level)
            stack.extend((item, level + 1) for item in (node.values() if isinstance(node, dict) else node))
    return depth


def _too_deep() -> _Refusal:
    return _Refusal(400, "(body)", f"JSON nested deeper than {MAX_DEPTH} levels", "too_deep")


class InputGuard:
    """ASGI middleware. `max_body_bytes`: larger bodies are a 413 (`body_limits`: path -> another limit,
    e.g. a bank statement upload). `own_string_checks`: path -> the
    body's list whose items that route checks for NUL/surrogates itself, item by item (a bulk import
    answers per item, one bad item never rejecting the others); the rest of such a body, its depth
    and its size are still the guard's."""

    def __init__(
        self,
        app,
        *,
        max_body_bytes: int,
        own_string_checks: dict[str, str] | None = None,
        body_limits: dict[str, int] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_limits = body_limits or {}
        self.own_string_checks = own_string_checks or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self._check_path(scope)
            self._check_query(scope["query_string"])
            json_body = self._check_headers(scope)
            if scope["method"] in _NO_BODY:
                return await self.app(scope, receive, send)
            body = await self._read_body(scope, receive)
            if body and json_body:
                self._check_json(scope, body)
        except _Refusal as refusal:
            return await self._refuse(scope, send, refusal)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # only http.disconnect is left
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    # --- where hostile text hides -------------------------------------------------------------

    def _check_path(self, scope) -> None:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
        if _NOT_ASCII_OR_PCT.search(raw) is None:
            return
        segments = raw.split(b"/")
        for index, segment in enumerate(segments):
            try:
                _decoded(segment, "")
            except _Refusal as refusal:
                refusal.field = self._path_parameter(scope, segments, index)
                raise

    def _path_parameter(self, scope, segments: list[bytes], index: int) -> str:
        """The name of the route's path parameter at this segment (only on the refusal path)."""
        clean = "/".join("x" if i == index else s.decode("latin-1") for i, s in enumerate(segments))
        app = scope.get("app")
        for route in _flat_routes(getattr(getattr(app, "router", None), "routes", ())):
            regex = getattr(route, "path_regex", None)
            match = regex.match(clean) if regex is not None else None
            if match:
                for name, value in match.groupdict().items():
                    if value == "x" or value.split("/")[-1] == "x":
                        return name
        return "(path)"

    @staticmethod
    def _check_query(query: bytes) -> None:
        if not query or _NOT_ASCII_OR_PCT.search(query) is None:
            return
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            field = _decoded(name.replace(b"+", b" "), "(query)")
            _decoded(value.replace(b"+", b" "), field or "(query)")

    @staticmethod
    def _check_headers(scope) -> bool:
        """Refuses NUL in any header; answers whether the body is declared JSON (or not declared)."""
        json_body = True
        for name, value in scope["headers"]:
            if b"\x00" in value:
                raise _Refusal(422, name.decode("latin-1").title(), "must not contain NUL characters", "nul_character")
            if name == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                json_body = media.endswith((b"/json", b"+json"))
        return json_body

    async def _read_body(self, scope, receive) -> bytes:
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise self._too_large(limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refusal(400, "(body)", "the client went away", "disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _too_large(limit: int) -> _Refusal:
        return _Refusal(413, "(body)", f"larger than {limit} bytes", "too_large")

    def _check_json(self, scope, body: bytes) -> None:
        suspect = b"\x00" in body or _SUSPECT.search(body) is not None
        if not suspect and len(body) < _PARSE_ALWAYS and body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
            return  # cannot be too deep, and no string to look at: the common case
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "recursion" in str(exc).lower():
                raise _too_deep() from None
            try:  # what only the stdlib parser takes (lone surrogates, NaN): the route decides on the rest
                value = json.loads(body)
            except RecursionError:
                raise _too_deep() from None
            except ValueError:
                return  # not JSON: the route answers 400 as it does for any malformed body
            if _depth(value) > MAX_DEPTH:
                raise _too_deep() from None
        else:
            probe: Any = value
            for _ in range(_DEPTH_PROBE):
                probe = [probe]
            try:
                orjson.dumps(probe)
            except orjson.JSONEncodeError:
                raise _too_deep() from None
        items = self.own_string_checks.get(scope["path"])
        if items is not None and isinstance(value, dict) and isinstance(value.get(items), list):
            scanned: Any = {k: ([] if k == items else v) for k, v in value.items()}  # the items are the route's
        else:
            scanned = value
        if (bad := _first_bad_string(scanned)) is not None:
            raise _Refusal(422, bad[0], bad[1], _code(bad[1]))
        scope[JSON_BODY] = value

    @staticmethod
    async def _refuse(scope, send, refusal: _Refusal) -> None:
        field = _BAD_TEXT.sub("\ufffd", refusal.field)
        body = problem_body(
            refusal.status,
            f"{field}: {refusal.message}",
            instance=_BAD_TEXT.sub("\ufffd", scope["path"]),
            errors=[{"field": field, "message": refusal.message, "code": refusal.code}],
        )
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _flat_routes(routes):
    """The app's routes with those of included routers among them: FastAPI keeps an included router
    as one entry (`_IncludedRouter`) whose routes come from `effective_route_contexts()`."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from _flat_routes(contexts())
        else:
            yield route
