"""Render a reminder from a StageEscalated payload: subject, plain text and HTML.

Templates are files in this package, `templates/<channel>/<key>.<part>.j2`, the parts per channel
in CHANNEL_PARTS (email: subject, txt, html; sms: txt; letter: subject, txt, paragraphs separated by
blank lines), one tone per stage key (pre_due, soft, firm, final, collections) and `generic` for any other key.
Three quote what StageEscalated.context carries besides the invoice: `promise_broken` (`promise`:
the amount and date promised) and `instalment_pre_due` / `instalment_overdue` (`instalment`: its
number of how many, amount and due date); the context travels in the delivery's payload.
Per-locale templates can be added beside them: for a customer in `de-DE` the loader tries
`<channel>/de-DE/<key>`, then `<channel>/de/<key>`, then `<channel>/<key>`, and only then the same three for
`generic` (the stage's tone matters more than the language of the words).
Charges and deadlines come from the event, never from a template's fixed text (notice_rendering.py):
`charges` (StageEscalated.charges: late fees, interest, total due; None when none) and `deadline`
(context kind "stage": the next stage's date, which firm and final ask payment by; None when no
next stage is known). A consolidated notice (a NoticeComposed payload, `items`) renders with the
`consolidated` template from notice_rendering.notice_context.

The environment is Jinja2's SandboxedEnvironment (a template cannot reach `__class__` and friends,
so tenant-editable templates stay safe later), with StrictUndefined (a template that names a missing
variable fails loudly instead of sending a reminder with a hole in it) and autoescaping for the HTML
part only. Amounts and dates are formatted for the customer's locale with babel; the words are
translated through gettext catalogues (translations.py: `{% trans %}` / `_()` / `ngettext()` in the
templates, English msgids, a catalogue per language, English for a language without one).
"""

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import babel
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, pass_context, select_autoescape
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.runtime import Context as JinjaContext
from jinja2.sandbox import SandboxedEnvironment

from dunning_notifier.brand import brand_context
from dunning_notifier.notice_rendering import charges_of, deadline_of, notice_context
from dunning_notifier.translations import template_callables

if TYPE_CHECKING:
    from dunning_notifier.tenant_templates import TenantTemplates

TEMPLATES_DIR = Path(__file__).with_name("templates")
GENERIC = "generic"
PARTS = ("subject", "txt", "html")
CHANNEL_PARTS = {"email": PARTS, "sms": ("txt",), "letter": ("subject", "txt")}  # what each channel renders
DEFAULT_LOCALE = "en-US"
_HTTP_URL = re.compile(r"^https?://\S+$")
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]+[ \t]*")  # a subject is one line (keeps no-break spaces)


class RenderError(Exception):
    """The reminder cannot be rendered from this payload (retrying will not help)."""


@dataclass(frozen=True)
class Rendered:
    """A channel's parts (empty strings for those it has none of: an SMS has only `text`)."""

    subject: str
    text: str
    html: str
    locale: str  # the locale the amounts and dates were formatted for


RenderedEmail = Rendered


@pass_context
def _days(ctx: JinjaContext, value: int) -> str:
    """`{{ n|days }}`: "3 days" in the render's language (the catalogue's plural forms)."""
    ngettext = partial(ctx.call, ctx.resolve("ngettext"))
    return str(ngettext("%(num)d day", "%(num)d days", int(value)))


def _pad(text: str, width: int) -> str:
    """`{{ label|pad(19) }}`: left-justified to a display width (a CJK character takes two columns),
    so the plain-text details line up in every language."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))
    return f"{text}{' ' * max(width - columns, 0)}"


@lru_cache(maxsize=512)
def parse_locale(tag: str | None) -> tuple[babel.Locale, str]:
    """`de-DE` -> (babel Locale de_DE, "de-DE"); an unknown or malformed tag falls back to en-US."""
    try:
        loc = babel.Locale.parse((tag or "").replace("-", "_"))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        loc = babel.Locale.parse(DEFAULT_LOCALE.replace("-", "_"))
    bcp47 = loc.language + (f"-{loc.territory}" if loc.territory else "")
    return loc, bcp47


def _zone(name: str | None) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _quoted(context: dict[str, Any], currency: str, loc: babel.Locale, today: date) -> dict[str, dict[str, Any]]:
    """What a promise_broken or instalment stage quotes (StageEscalated.context), formatted for the
    customer's locale, under its `kind`; empty for a stage that quotes nothing. A template that names
    what its stage does not carry fails to render (StrictUndefined)."""
    kind = context.get("kind")
    money = context.get("currency") or currency
    try:
        if kind == "promise_broken":
            amount = Decimal(context["promised_amount"])
            promised = date.fromisoformat(context["promised_date"])
            return {kind: {"amount": format_currency(amount, money, locale=loc), "date": _long(promised, loc)}}
        if kind == "instalment":
            due = date.fromisoformat(context["due_date"])
            return {
                kind: {
                    "number": int(context["number"]),
                    "of": int(context["instalments"]),
                    "amount": format_currency(Decimal(context["amount"]), money, locale=loc),
                    "due_date": _long(due, loc),
                    "days_overdue": max((today - due).days, 0),
                    "days_until_due": max((due - today).days, 0),
                }
            }
    except (KeyError, InvalidOperation, TypeError, ValueError) as exc:
        raise RenderError(f"StageEscalated.context ({kind}) lacks or garbles {exc}") from exc
    return {}


def _agency(data: dict[str, Any]) -> dict[str, str | None] | None:
    """The collections agency a `handed_over` reminder names: `context.agency` (or a top-level `agency`)
    of the payload, {name, contact_email?}; None when the payload names none (a template that quotes
    it then fails to render rather than naming nobody)."""
    agency = (data.get("context") or {}).get("agency") or data.get("agency")
    if not isinstance(agency, dict) or not str(agency.get("name") or "").strip():
        return None
    email = agency.get("contact_email")
    return {"name": str(agency["name"]).strip(), "contact_email": str(email) if email else None}


def _long(day: date, loc: babel.Locale) -> str:
    return format_date(day, format="long", locale=loc)


class Renderer:
    def __init__(
        self,
        templates_dir: Path = TEMPLATES_DIR,
        *,
        sender_name: str = "Accounts Receivable",
        tenant_templates: "TenantTemplates | None" = None,  # a tenant's own templates and brand
    ):
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            auto_reload=False,  # templates ship with the package; don't stat them on every render
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            extensions=["jinja2.ext.i18n"],  # {% trans %} and _(): the words come from translations.py
        )
        # English until render() passes a catalogue (the i18n extension adds the method at run time)
        self.env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        self.env.filters["days"] = _days
        self.env.filters["pad"] = _pad
        self.sender_name = sender_name
        self.tenants = tenant_templates
        self._resolved: dict[tuple[str, str, str, str], Template] = {}

    async def prepare(self, tenant_id: str) -> None:
        """Load the tenant's own templates and brand before a send (render() is sync and never queries):
        within NOTIFIER_TEMPLATE_CACHE_SECONDS of a change. TemplatesUnavailable: retry (tenant_templates.py)."""
        if self.tenants is not None:
            await self.tenants.refresh(tenant_id)

    def brand_for(self, tenant_id: str | None) -> dict[str, Any]:
        """The tenant's brand as templates see it (`brand`; brand.brand_context), as of the last prepare()."""
        return self.tenants.brand(tenant_id) if self.tenants is not None else brand_context(None, None, None)

    def branded(self, ctx: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """`brand` added to a context, and `sender_name` taken from it when the tenant set one."""
        brand = self.brand_for(tenant_id)
        return {**ctx, "brand": brand, "sender_name": brand["sender_name"] or ctx.get("sender_name")}

    @staticmethod
    def localized(ctx: dict[str, Any], tag: str) -> dict[str, Any]:
        """The context with the words in the customer's language (translations.py) and `lang`."""
        return {**ctx, **template_callables(tag), "lang": tag}

    def _own_or_shipped(self, tenant_id: str | None, key: str, tag: str, part: str, channel: str) -> Template:
        """The tenant's template for (key, channel) in the customer's locale or language, else the shipped one."""
        own = self.tenants.find(self.env, tenant_id, channel, key, tag, part) if self.tenants and tenant_id else None
        return own if own is not None else self.template(key, tag, part, channel)

    def template(self, key: str, locale_tag: str, part: str, channel: str = "email") -> Template:
        """The most specific template for (key, locale, part) of a channel; cached after the first lookup."""
        cache_key = (channel, key, locale_tag, part)
        found = self._resolved.get(cache_key)
        if found is None:
            lang = locale_tag.split("-")[0]
            dirs = [f"{channel}/{locale_tag}/", f"{channel}/{lang}/", f"{channel}/"]
            names = [f"{d}{k}.{part}.j2" for k in (key, GENERIC) for d in dirs]
            try:
                found = self.env.select_template(names)
            except TemplateNotFound as exc:
                raise RenderError(f"no template for {key!r} ({part})") from exc
            self._resolved[cache_key] = found
        return found

    def context(self, data: dict[str, Any], loc: babel.Locale) -> dict[str, Any]:
        invoice, customer = data["invoice"], data["customer"]
        currency = invoice["currency"]
        try:
            balance = Decimal(invoice["balance"])
            amount_due = Decimal(invoice["amount_due"])
        except (InvalidOperation, TypeError) as exc:
            raise RenderError(f"invoice amount is not a decimal: {exc}") from exc
        due = date.fromisoformat(invoice["due_date"])
        issued = date.fromisoformat(invoice["issue_date"])
        fired_at = datetime.fromisoformat(data["fired_at"].replace("Z", "+00:00"))
        today = fired_at.astimezone(_zone(customer.get("timezone"))).date()  # the customer's calendar day
        overdue = (today - due).days
        url = invoice.get("payment_url")
        quoted = _quoted(data.get("context") or {}, currency, loc, today)
        return {
            "sender_name": self.sender_name,
            "stage": data["stage"],
            "customer": {"name": customer["name"], "email": customer.get("email")},
            "invoice": {
                "number": invoice["number"],
                "currency": currency,
                "balance": format_currency(balance, currency, locale=loc),
                "amount_due": format_currency(amount_due, currency, locale=loc),
                "partially_paid": balance != amount_due,
                "issue_date": format_date(issued, format="long", locale=loc),
                "due_date": format_date(due, format="long", locale=loc),
                "payment_url": url if isinstance(url, str) and _HTTP_URL.match(url) else None,
            },
            "days_overdue": max(overdue, 0),
            "days_until_due": max(-overdue, 0),
            "promise": quoted.get("promise_broken"),
            "instalment": quoted.get("instalment"),
            "charges": self._quoting(charges_of, data.get("charges"), currency, loc),
            "deadline": self._quoting(deadline_of, data.get("context") or {}, loc),
            "agency": _agency(data),
        }

    @staticmethod
    def _quoting(quote, *args):
        try:
            return quote(*args)
        except (KeyError, InvalidOperation, TypeError, ValueError) as exc:
            raise RenderError(f"{quote.__name__}: the event lacks or garbles {exc}") from exc

    def notice(self, data: dict[str, Any], loc: babel.Locale) -> dict[str, Any]:
        """The context of a consolidated notice (NoticeComposed payload): dates in the customer's zone
        on the day it was composed."""
        composed_at = datetime.fromisoformat(data["composed_at"].replace("Z", "+00:00"))
        today = composed_at.astimezone(_zone(data["customer"].get("timezone"))).date()
        return self._quoting(notice_context, data, loc, today, self.sender_name)

    def render(self, data: dict[str, Any], channel: str = "email") -> Rendered:
        """Render the channel's parts (CHANNEL_PARTS); raises RenderError for anything a retry cannot fix."""
        parts = CHANNEL_PARTS.get(channel)
        if parts is None:
            raise RenderError(f"no templates for channel {channel!r}")
        loc, tag = parse_locale(data.get("customer", {}).get("locale"))
        try:
            if "items" in data:  # a consolidated notice
                ctx, key = self.notice(data, loc), "consolidated"
            else:
                ctx, key = self.context(data, loc), data.get("template") or data["stage"]
                if key == "handed_over" and ctx["agency"] is None:
                    raise RenderError("a handed_over reminder needs the agency: context.agency.name")
            tenant = data.get("tenant_id")
            ctx = self.localized(self.branded(ctx, tenant), tag)  # the brand; the words in the customer's language
            out = {part: self._own_or_shipped(tenant, key, tag, part, channel).render(ctx) for part in parts}
        except RenderError:
            raise
        except (JinjaError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RenderError(f"template {data.get('template')!r} ({tag}): {exc}") from exc
        subject = _LINE_BREAKS.sub(" ", out.get("subject", "")).strip()
        return Rendered(subject=subject, text=out.get("txt", ""), html=out.get("html", ""), locale=tag)
