"""A tenant's own templates: what a save must pass, and the renderer's in-process cache of them.

Validation (`validate`) runs in the renderer's own environment (Jinja2's SandboxedEnvironment with
StrictUndefined, the same filters, globals and autoescaping), before anything is stored:
- the parts are exactly the channel's (email: subject, text, html; sms: text; letter: subject, text),
  each within its size limit;
- each part parses (`html: line 3: unexpected '}'`);
- no attribute or item starting with `_`, nor `mro` and friends (`__class__` chains are the classic
  sandbox escape; the sandbox would refuse them at render time too, we refuse them at save);
- `{% include %}` / `{% extends %}` / `{% import %}` only of the shipped partials of the channel
  (`email/_layout.html.j2`, `email/_details.txt.j2`, ...), by a literal name;
- every variable is one the renderer provides (jinja2.meta.find_undeclared_variables against the
  sample context's keys and the environment's globals: `_`, `gettext`, ...), named with its line;
- it renders against the rich and the sparse sample (template_samples.py): an unknown attribute of a
  known object (`invoice.nmber`), or an optional value used without `{% if %}`, fails with its line.

The cache (`TenantTemplates`): the renderer is synchronous and on the hot path, so before a send the
channel awaits `refresh(tenant_id)`: at most once per `ttl_seconds` per tenant it reads the tenant's
stamp (template_stamps, bumped by every save, delete and brand change); only when the stamp moved does
it load the tenant's active templates and brand again. `find` and `brand` then answer from memory,
compiled templates kept per (tenant, stamp). A change applies to sends within `ttl_seconds`.
"""

import asyncio
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from jinja2 import Environment, Template, TemplateNotFound, meta, nodes
from jinja2.exceptions import TemplateError, TemplateSyntaxError

from dunning.logging import get_logger
from dunning_notifier import template_repository as repo
from dunning_notifier.brand import brand_context

log = get_logger(__name__)

CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "letter": ("subject", "text"),
}
FILE_PART = {"subject": "subject", "text": "txt", "html": "html"}  # API part -> the shipped file's part
API_PART = {v: k for k, v in FILE_PART.items()}
SOURCE_LIMITS = {"subject": 1_000, "text": 100_000, "html": 200_000}
SMS_TEXT_LIMIT = 2_000
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
LOCALE_PATTERN = r"^[a-z]{2,3}(?:-[A-Z]{2})?$"
_UNSAFE = frozenset(
    ("mro", "format", "format_map", "func_globals", "func_code", "f_globals", "f_locals", "f_builtins",
     "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame", "im_func", "im_self")
)  # fmt: skip


class TemplatesUnavailable(Exception):
    """The tenant's templates could not be read (database trouble): retry the send, never guess."""


class TemplateInvalid(ValueError):
    """A template refused; `errors` name each part at fault (`parts.html`) with the line."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(e["message"] for e in errors))
        self.errors = errors


def _error(part: str, message: str, code: str, line: int | None = None) -> dict[str, str]:
    where = f"{part}: line {line}: " if line else f"{part}: "
    return {"field": f"parts.{part}", "message": where + message, "code": code}


def compile_part(env: Environment, source: str, channel: str, part: str) -> Template:
    """A part compiled in `env` under a name that picks the shipped part's autoescaping (HTML only);
    its frames carry `<part>` as their file name, so render errors can name the line."""
    name = f"tenant/{channel}.{FILE_PART[part]}.j2"
    code = env.compile(source, name=name, filename=f"<{part}>")
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _line_of(exc: BaseException, part: str) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == f"<{part}>"]
    return frames[-1].lineno if frames else None


def _includable(env: Environment, channel: str, name: str) -> bool:
    if not re.fullmatch(rf"{channel}/(?:[a-z]{{2,3}}(?:-[A-Z]{{2}})?/)?_[a-z_]+\.(?:subject|txt|html)\.j2", name):
        return False
    try:
        env.get_template(name)
    except TemplateNotFound:
        return False
    return True


def _static_errors(env: Environment, channel: str, part: str, ast: nodes.Template, known: set[str]) -> list[dict]:
    errors = []
    for access in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name = access.attr if isinstance(access, nodes.Getattr) else getattr(access, "arg", None)
        name = getattr(name, "value", None) if isinstance(access, nodes.Getitem) else name
        if isinstance(name, str) and (name.startswith("_") or name in _UNSAFE):
            errors.append(
                _error(part, f"access to {name!r} is not allowed (sandbox)", "unsafe_attribute", access.lineno)
            )
    for loads in ast.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target = getattr(loads, "template", None)
        if not (
            isinstance(target, nodes.Const)
            and isinstance(target.value, str)
            and _includable(env, channel, target.value)
        ):
            message = f"only a shipped partial of the {channel} channel can be included, by its name ({channel}/_...)"
            errors.append(_error(part, message, "include_not_allowed", loads.lineno))
    for name in sorted(meta.find_undeclared_variables(ast) - known - set(env.globals)):
        line = next((n.lineno for n in ast.find_all(nodes.Name) if getattr(n, "name", None) == name), None)
        message = f"unknown variable {name!r} (known: {', '.join(sorted(known))})"
        errors.append(_error(part, message, "unknown_variable", line))
    return errors


def validate(env: Environment, channel: str, parts: Any, contexts: list[dict[str, Any]]) -> dict[str, Template]:
    """The parts compiled, if a tenant may save them for `channel`; TemplateInvalid naming every
    part at fault otherwise. `contexts`: the samples to render against (template_samples.py)."""
    expected = CHANNEL_PARTS[channel]
    if not isinstance(parts, dict):
        raise TemplateInvalid([{"field": "parts", "message": "parts: must be an object", "code": "type"}])
    errors = [
        _error(p, f"not a part of a {channel} template ({', '.join(expected)})", "unknown_part")
        for p in parts
        if p not in expected
    ]
    errors += [_error(p, "missing", "missing_part") for p in expected if not isinstance(parts.get(p), str)]
    if errors:
        raise TemplateInvalid(errors)
    known = set(contexts[0])
    compiled: dict[str, Template] = {}
    for part in expected:
        source = parts[part]
        limit = SMS_TEXT_LIMIT if channel == "sms" else SOURCE_LIMITS[part]
        if len(source) > limit:
            errors.append(_error(part, f"{len(source)} characters; at most {limit}", "too_long"))
            continue
        try:
            ast = env.parse(source)
        except TemplateSyntaxError as exc:
            errors.append(_error(part, exc.message or "syntax error", "template_syntax", exc.lineno))
            continue
        except RecursionError:
            errors.append(_error(part, "nested too deeply", "template_syntax"))
            continue
        found = _static_errors(env, channel, part, ast, known)
        if found:
            errors += found
            continue
        template = compile_part(env, source, channel, part)
        for n, context in enumerate(contexts):
            try:
                template.render(context)
            except (
                TemplateError,
                TypeError,
                ValueError,
                AttributeError,
                KeyError,
                ArithmeticError,
                RecursionError,
            ) as exc:
                sample = "a reminder with every optional value" if n == 0 else "a reminder without optional values"
                message = f"{exc} (rendering {sample}: guard optional values with {{% if %}})" if n else f"{exc}"
                errors.append(_error(part, message, "render_error", _line_of(exc, part)))
                break
        compiled[part] = template
    if errors:
        raise TemplateInvalid(errors)
    return compiled


def shipped_source(env: Environment, key: str, channel: str, locale: str) -> tuple[str, dict[str, str]] | None:
    """The shipped template a reminder of this stage key, channel and locale uses when the tenant has
    none (the renderer's chain: locale, language, base; then `generic`): (its name, its parts' source)."""
    lang = locale.split("-")[0]
    loader = env.loader
    assert loader is not None
    for k in (key, "generic"):
        for d in (f"{channel}/{locale}/", f"{channel}/{lang}/", f"{channel}/"):
            try:
                sources = {p: loader.get_source(env, f"{d}{k}.{FILE_PART[p]}.j2")[0] for p in CHANNEL_PARTS[channel]}
            except TemplateNotFound:
                continue
            return f"{d}{k}", sources
    return None


@dataclass
class _Tenant:
    stamp: int
    checked: float
    sources: dict[tuple[str, str, str], dict[str, str]]  # (channel, key, locale) -> parts
    brand: dict[str, Any]
    compiled: dict[tuple[str, str, str, str], Template] = field(default_factory=dict)


class TenantTemplates:
    """The in-process cache of tenants' active templates and brands, keyed by (tenant, stamp)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_seconds: float = 2.0, public_url: str | None = None):
        self.pool = pool
        self.ttl = ttl_seconds
        self.public_url = public_url
        self._tenants: dict[str, _Tenant] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def refresh(self, tenant_id: str) -> None:
        """Make `find` and `brand` current for the tenant (within the TTL). TemplatesUnavailable if the
        database cannot be read: the caller retries the send rather than use a stale default."""
        held = self._tenants.get(tenant_id)
        if held is not None and time.monotonic() - held.checked < self.ttl:
            return
        try:
            await self._refresh(tenant_id)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("notifier.templates.load_failed", tenant_id=tenant_id, error=repr(exc))
            raise TemplatesUnavailable(f"the tenant's templates cannot be read: {type(exc).__name__}: {exc}") from exc

    async def _refresh(self, tenant_id: str) -> None:
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            held = self._tenants.get(tenant_id)
            if held is not None and time.monotonic() - held.checked < self.ttl:
                return
            async with self.pool.acquire() as conn:
                stamp = await repo.stamp_of(conn, tenant_id)
                if held is not None and held.stamp == stamp:
                    held.checked = time.monotonic()
                    return
                self._tenants[tenant_id] = await self._load(conn, tenant_id)
            log.info("notifier.templates.loaded", tenant_id=tenant_id, stamp=self._tenants[tenant_id].stamp)

    async def _load(self, conn: asyncpg.Connection, tenant_id: str) -> _Tenant:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            stamp = await repo.stamp_of(conn, tenant_id)
            rows = await repo.active_templates(conn, tenant_id)
            brand = await repo.get_brand(conn, tenant_id)
        return _Tenant(
            stamp=stamp,
            checked=time.monotonic(),
            sources={(r["channel"], r["key"], r["locale"]): r["parts"] for r in rows},
            brand=brand_context(brand and brand["settings"], brand and brand["logo_id"], self.public_url),
        )

    def find(
        self, env: Environment, tenant_id: str, channel: str, key: str, locale_tag: str, part: str
    ) -> Template | None:
        """The tenant's template part (`part` as the shipped files name it: subject, txt, html) for this
        stage key, in the customer's locale or language (de-AT, then de); None: the shipped one applies."""
        held = self._tenants.get(tenant_id)
        if held is None or not held.sources:
            return None
        for locale in dict.fromkeys((locale_tag, locale_tag.split("-")[0])):
            parts = held.sources.get((channel, key, locale))
            api_part = API_PART.get(part, part)
            if parts is None or api_part not in parts:
                continue
            cache_key = (channel, key, locale, api_part)
            found = held.compiled.get(cache_key)
            if found is None:
                found = held.compiled[cache_key] = compile_part(env, parts[api_part], channel, api_part)
            return found
        return None

    def brand(self, tenant_id: str | None) -> dict[str, Any]:
        """The tenant's `brand` context as last loaded (all None if it has none, or was never loaded)."""
        held = self._tenants.get(tenant_id or "")
        return held.brand if held is not None else brand_context(None, None, None)
