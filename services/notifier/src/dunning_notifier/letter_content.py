"""What a reminder letter says: its address block, words, invoice table and payment details (letter_pdf.py draws it).

Inputs, all from the delivery's payload (a StageEscalated, or a NoticeComposed for a consolidated
notice, whose items each carry their invoice):
- `customer.postal_address` = {"name", "lines": [...], "postal_code", "city", "region", "country"}:
  no address (or one without a line, a city or a country) -> NoPostalAddress (the delivery fails
  permanently: letters.py);
- the text from the renderer's `letter` templates (subject and paragraphs separated by blank lines),
  falling back to the e-mail's subject and text part while there are none;
- an optional `brand` (the tenant's brand settings, brand.py's shape): `sender_name`, `postal_address`
  (the return address), `bank` = {"account_holder", "bank_name", "iban", "bic"}, `paper` ("A4" |
  "LETTER"); without it the notifier's letter_* settings.
Paper: US Letter for addresses in countries that use it (LETTER_COUNTRIES), A4 elsewhere, unless the
brand says. Dates and amounts are formatted for the customer's locale (babel).
"""

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import babel
from babel.dates import format_date
from babel.numbers import format_currency

from dunning_notifier.letter_pdf import InvoiceLine, Letter
from dunning_notifier.rendering import TEMPLATES_DIR, Renderer, RenderError, parse_locale
from dunning_notifier.settings import Settings

LETTER_COUNTRIES = frozenset({"US", "CA", "MX", "PH", "CL", "CO", "VE", "PR", "GT", "DO", "CR", "PA"})
LABELS = {
    "en": {
        "invoice": "Invoice",
        "due_date": "Due date",
        "amount": "Amount",
        "balance": "Balance due",
        "total": "Total",
        "page": "Page {n} of {total}",
        "payment": "How to pay",
        "pay_online": "Pay online",
        "account_holder": "Account holder",
        "bank": "Bank",
        "reference": "Reference",
    },
    "de": {
        "invoice": "Rechnung",
        "due_date": "Fällig am",
        "amount": "Betrag",
        "balance": "Offen",
        "total": "Summe",
        "page": "Seite {n} von {total}",
        "payment": "Zahlung",
        "pay_online": "Online bezahlen",
        "account_holder": "Kontoinhaber",
        "bank": "Bank",
        "reference": "Verwendungszweck",
    },
    "ja": {
        "invoice": "請求書番号",
        "due_date": "支払期日",
        "amount": "請求額",
        "balance": "未払残高",
        "total": "合計",
        "page": "{n} / {total} ページ",
        "payment": "お支払い方法",
        "pay_online": "オンライン決済",
        "account_holder": "口座名義",
        "bank": "銀行",
        "reference": "振込依頼人欄",
    },
}


class NoPostalAddress(ValueError):
    """The customer has no postal address a letter can be sent to."""


def postal_address(value: Any, fallback_name: str | None = None) -> dict[str, Any]:
    """The address as given, checked: a name (else `fallback_name`), at least one line, a city and an
    ISO country code."""
    if not isinstance(value, dict):
        raise NoPostalAddress("the customer has no postal address")
    lines = [str(line).strip() for line in value.get("lines") or [] if str(line).strip()]
    country = str(value.get("country") or "").strip().upper()
    city = str(value.get("city") or "").strip()
    name = str(value.get("name") or fallback_name or "").strip()
    missing = [f for f, v in (("name", name), ("lines", lines), ("city", city), ("country", country)) if not v]
    if missing:
        raise NoPostalAddress(f"the customer's postal address lacks {', '.join(missing)}")
    if len(country) != 2 or not country.isalpha():
        raise NoPostalAddress(f"postal_address.country is not an ISO 3166 alpha-2 code: {country!r}")
    return {
        "name": name,
        "lines": lines,
        "postal_code": str(value.get("postal_code") or "").strip(),
        "city": city,
        "region": str(value.get("region") or "").strip(),
        "country": country,
    }


def address_block(address: dict[str, Any], sender_country: str | None) -> tuple[str, ...]:
    """The lines in the window, in the destination's usual order; the country's name in capitals
    last when it is not the sender's (UPU convention)."""
    name, lines, code, city, region, country = (
        address[k] for k in ("name", "lines", "postal_code", "city", "region", "country")
    )
    if country in ("US", "CA", "AU"):
        block = [name, *lines, f"{city}, {region} {code}".replace(" ,", ",").strip()]
    elif country == "GB":
        block = [name, *lines, city.upper(), code]
    elif country == "JP":
        block = [f"〒{code}" if code else "", f"{region}{city}", *lines, name]
    else:
        block = [name, *lines, f"{code} {city}".strip()]
    if sender_country and country != sender_country.upper():
        block.append(babel.Locale.parse("en").territories.get(country, country).upper())
    return tuple(line for line in block if line)


def brand_of(payload: dict[str, Any], renderer: Renderer) -> dict[str, Any]:
    """The tenant's brand: the payload's `brand` if it carries one, else what the renderer's tenant
    templates store holds for the tenant (brand.brand_context, loaded for the render just made), else {}."""
    if isinstance(payload.get("brand"), dict):
        return payload["brand"]
    found = renderer.brand_for(payload.get("tenant_id"))
    return found if isinstance(found, dict) else {}


def letter_text(renderer: Renderer, payload: dict[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """(subject, paragraphs, locale tag): the `letter` templates where they exist, else the e-mail's
    subject and text part. Raises RenderError."""
    if (TEMPLATES_DIR / "letter").is_dir():
        rendered = renderer.render(payload, channel="letter")
    else:
        rendered = renderer.render(payload)
    paragraphs = tuple(p.strip() for p in rendered.text.replace("\r\n", "\n").split("\n\n") if p.strip())
    return rendered.subject, paragraphs, rendered.locale


def _invoices(payload: dict[str, Any]) -> list[dict[str, Any]]:
    if "items" in payload:
        seen: dict[str, dict[str, Any]] = {}
        for item in payload["items"]:
            seen.setdefault(item["invoice_id"], item["invoice"])
        return list(seen.values())
    return [payload["invoice"]]


def _money(value: Any, currency: str, loc: babel.Locale) -> str:
    return format_currency(Decimal(value), currency, locale=loc)


def created_at(payload: dict[str, Any]) -> datetime:
    """The letter's date: when its stage fired (or its notice was composed), never the send's clock."""
    raw = payload.get("fired_at") or payload.get("composed_at")
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise RenderError(f"the payload's fired_at / composed_at is not a timestamp: {raw!r}") from exc


def compose(
    payload: dict[str, Any], renderer: Renderer, settings: Settings
) -> tuple[Letter, dict[str, Any], dict[str, Any]]:
    """The letter for a delivery's payload, its checked recipient address and its sender. Raises
    NoPostalAddress (no usable address) or RenderError (templates, amounts, dates)."""
    customer = payload.get("customer") or {}
    address = postal_address(customer.get("postal_address"), customer.get("name"))
    subject, paragraphs, tag = letter_text(renderer, payload)
    brand = brand_of(payload, renderer)
    sender = sender_address(settings, brand)
    loc, _ = parse_locale(tag)
    labels = LABELS.get(loc.language, LABELS["en"])
    when = created_at(payload)
    try:
        invoices, totals = _table(_invoices(payload), loc)
    except (KeyError, InvalidOperation, TypeError, ValueError) as exc:
        raise RenderError(f"an invoice of the payload lacks or garbles {exc}") from exc
    paper = str(brand.get("paper") or ("LETTER" if address["country"] in LETTER_COUNTRIES else "A4")).upper()
    if paper not in ("A4", "LETTER"):
        paper = "A4"
    letter = Letter(
        paper=paper,
        language=loc.language,
        title=subject,
        author=sender["name"],
        created_at=when,
        return_line=" · ".join(
            x for x in (sender["name"], *sender["lines"], f"{sender['postal_code']} {sender['city']}".strip()) if x
        ),
        recipient=address_block(address, sender["country"]),
        date_line=format_date(when.date(), format="long", locale=loc),
        body=paragraphs,
        labels=labels,
        invoices=invoices,
        totals=totals,
        payment=_payment(payload, brand, settings, labels),
        cjk_font_file=settings.letter_cjk_font_file,
    )
    return letter, address, sender


def _table(
    invoices: list[dict[str, Any]], loc: babel.Locale
) -> tuple[tuple[InvoiceLine, ...], tuple[tuple[str, str], ...]]:
    lines: list[InvoiceLine] = []
    totals: defaultdict[str, Decimal] = defaultdict(Decimal)
    for inv in invoices:
        currency = inv["currency"]
        totals[currency] += Decimal(inv["balance"])
        lines.append(
            InvoiceLine(
                number=str(inv["number"]),
                due_date=format_date(date.fromisoformat(inv["due_date"]), format="medium", locale=loc),
                amount=_money(inv["amount_due"], currency, loc),
                balance=_money(inv["balance"], currency, loc),
            )
        )
    return tuple(lines), tuple((c, format_currency(t, c, locale=loc)) for c, t in sorted(totals.items()))


def _payment(
    payload: dict[str, Any], brand: dict[str, Any], settings: Settings, labels: dict[str, str]
) -> tuple[str, ...]:
    out = []
    urls = [inv.get("payment_url") for inv in _invoices(payload)]
    for url in dict.fromkeys(u for u in urls if isinstance(u, str) and u.startswith(("https://", "http://"))):
        out.append(f"{labels['pay_online']}: {url}")
    bank = brand.get("bank") or {}
    if not bank and settings.letter_bank_iban:
        bank = {"account_holder": settings.letter_from_name, "iban": settings.letter_bank_iban}
        bank |= {"bic": settings.letter_bank_bic, "bank_name": settings.letter_bank_name}
    if bank.get("iban"):
        if bank.get("account_holder"):
            out.append(f"{labels['account_holder']}: {bank['account_holder']}")
        bank_line = " · ".join(
            x
            for x in (
                bank.get("bank_name"),
                "IBAN " + _grouped(str(bank["iban"])),
                bank.get("bic") and f"BIC {bank['bic']}",
            )
            if x
        )
        out.append(f"{labels['bank']}: {bank_line}")
        numbers = ", ".join(str(inv["number"]) for inv in _invoices(payload))
        out.append(f"{labels['reference']}: {numbers}")
    return tuple(out)


def sender_address(settings: Settings, brand: dict[str, Any]) -> dict[str, Any]:
    """The return address: the brand's if it has one, else the notifier's letter_from_* settings."""
    given = brand.get("postal_address")
    if isinstance(given, dict) and given.get("lines"):
        return postal_address(given, _brand_name(brand))
    return {
        "name": _brand_name(brand) or settings.letter_from_name,
        "lines": [line for line in (settings.letter_from_address_line1, settings.letter_from_address_line2) if line],
        "postal_code": settings.letter_from_zip,
        "city": settings.letter_from_city,
        "region": settings.letter_from_state or "",
        "country": settings.letter_from_country.upper(),
    }


def _brand_name(brand: dict[str, Any]) -> str | None:
    return brand.get("sender_name") or brand.get("name") or (brand.get("postal_address") or {}).get("name")


def _grouped(iban: str) -> str:
    """`DE89 3704 0044 0532 0130 00`: the print form of an IBAN."""
    compact = "".join(iban.split()).upper()
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
