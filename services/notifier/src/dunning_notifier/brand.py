"""A tenant's brand: who the reminders come from and how they look (PUT /v1/brand, brand_api.py).

Sender name, reply-to address, logo (an https URL, or an uploaded PNG/SVG served at a public URL
named by its content hash), primary and accent colours, a signature, the sender's postal address
(letters) and the bank details customers pay to (IBAN checked with its ISO 13616 mod-97 checksum,
BIC by its ISO 9362 shape: BICs carry no check digit). The renderer puts `brand_context` in every
template's context as `brand` (every key present, None when unset) and takes `sender_name` from it
when set; the e-mail channel takes the From display name and Reply-To from it.
"""

import hashlib
import re
from email.utils import parseaddr
from typing import Annotated, Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

PNG = "image/png"
SVG = "image/svg+xml"
LOGO_TYPES = (PNG, SVG)
_COLOUR = r"^#[0-9a-fA-F]{6}$"
_BIC = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$")
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SVG_BANNED = {"script", "foreignobject", "iframe", "object", "embed"}

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\r\n]*$")]


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers (A=10 ...), mod 97 == 1.
    Written out (eight lines) rather than a dependency: the rule is fixed and small."""
    if not _IBAN.match(iban):
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def iban_grouped(iban: str) -> str:
    """`DE89 3704 0044 0532 0130 00`: the print form."""
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


class PostalAddress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Line
    lines: list[Line] = Field(min_length=1, max_length=4, description="Street, building, PO box: one per line.")
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    city: Line
    region: Line | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2", examples=["DE"]
    )


class BankDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_holder: Line
    iban: str = Field(
        description="ISO 13616, spaces allowed; the check digits are verified.",
        examples=["DE89 3704 0044 0532 0130 00"],
    )
    bic: str = Field(description="ISO 9362, 8 or 11 characters.", examples=["COBADEFFXXX"])
    bank_name: Line | None = None

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str) -> str:
        compact = re.sub(r"\s+", "", value).upper()
        if not iban_valid(compact):
            raise ValueError("not a valid IBAN (its check digits do not match, or its shape is wrong)")
        return compact

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str) -> str:
        compact = value.strip().upper()
        if not _BIC.match(compact):
            raise ValueError("not a BIC: 4 letters (bank), 2 (country), 2 letters/digits (place), optional 3 (branch)")
        return compact


class BrandIn(BaseModel):
    """The brand document (PUT /v1/brand). Every field is optional; left out = not set."""

    model_config = ConfigDict(extra="forbid")

    sender_name: Line | None = Field(None, description="The From display name and `sender_name` in templates.")
    reply_to: str | None = Field(
        None, max_length=254, description="The Reply-To address of reminder e-mails.", examples=["ar@example.com"]
    )
    logo_url: str | None = Field(
        None,
        max_length=2000,
        description="An https URL (or upload one: PUT /v1/brand/logo).",
        examples=["https://example.com/logo.png"],
    )
    primary_color: Annotated[str, StringConstraints(pattern=_COLOUR)] | None = Field(
        None, description="#rrggbb", examples=["#0b5394"]
    )
    accent_color: Annotated[str, StringConstraints(pattern=_COLOUR)] | None = Field(
        None, description="#rrggbb", examples=["#f1c232"]
    )
    signature: Annotated[str, StringConstraints(max_length=2000)] | None = None
    postal_address: PostalAddress | None = None
    bank: BankDetails | None = None
    paper: Literal["A4", "LETTER"] | None = Field(None, description="Letters' paper size (default: by country).")

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is not None and (not _EMAIL.match(value) or parseaddr(value)[1] != value):
            raise ValueError("not an e-mail address (a bare address: ar@example.com)")
        return value

    @field_validator("logo_url")
    @classmethod
    def _logo_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https://[A-Za-z0-9.-]+(?::\d+)?(?:/\S*)?$", value):
            raise ValueError("must be an https:// URL")
        return value


EXAMPLE_BRAND = {
    "sender_name": "Brandt Billing",
    "reply_to": "ar@brandt-billing.example",
    "logo_url": "https://brandt-billing.example/logo.png",
    "primary_color": "#0b5394",
    "accent_color": "#e69138",
    "signature": "Brandt Billing GmbH · Accounts Receivable",
    "postal_address": {
        "name": "Brandt Billing GmbH",
        "lines": ["Leopoldstraße 12"],
        "postal_code": "80802",
        "city": "München",
        "country": "DE",
    },
    "bank": {"account_holder": "Brandt Billing GmbH", "iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"},
}


class LogoError(ValueError):
    """The upload is not a PNG or SVG this service will serve (the message says why)."""


def check_logo(content: bytes, content_type: str, max_bytes: int) -> str:
    """The logo's id (content hash + extension) if `content` is an acceptable logo; LogoError if not.
    An SVG must be plain XML without a DOCTYPE (no entities), scripts, event handlers or external references."""
    if not content:
        raise LogoError("the body is empty")
    if len(content) > max_bytes:
        raise LogoError(f"the logo is {len(content)} bytes; at most {max_bytes} are accepted")
    if content_type == PNG:
        if not content.startswith(_PNG_MAGIC) or content[12:16] != b"IHDR":
            raise LogoError("not a PNG image (no PNG signature and IHDR header)")
        ext = "png"
    elif content_type == SVG:
        _check_svg(content)
        ext = "svg"
    else:
        raise LogoError(f"Content-Type must be {PNG} or {SVG}")
    return f"{hashlib.sha256(content).hexdigest()[:32]}.{ext}"


def _check_svg(content: bytes) -> None:
    if b"<!DOCTYPE" in content.upper() or b"<!ENTITY" in content.upper():
        raise LogoError("an SVG with a DOCTYPE or entities is not accepted")
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as exc:
        raise LogoError(f"not well-formed XML: {exc}") from None
    if root.tag.rsplit("}", 1)[-1] != "svg":
        raise LogoError("the root element is not <svg>")
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in _SVG_BANNED:
            raise LogoError(f"<{tag}> is not allowed in a logo")
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                raise LogoError(f"event handler attribute {local!r} is not allowed in a logo")
            if local == "href" and not (value.startswith("#") or value.startswith("data:image/")):
                raise LogoError("external references (href) are not allowed in a logo")


def brand_context(settings: dict[str, Any] | None, logo_id: str | None, public_url: str | None) -> dict[str, Any]:
    """`brand` as templates see it: every key present (None when unset), the IBAN also grouped for print.
    An uploaded logo wins over `logo_url` when the notifier's public URL is known."""
    s = settings or {}
    bank = s.get("bank")
    logo_url = s.get("logo_url")
    if logo_id and public_url:
        logo_url = f"{public_url.rstrip('/')}/v1/brand-logos/{logo_id}"
    return {
        "sender_name": s.get("sender_name"),
        "name": s.get("sender_name"),  # what letters call it (letter_content.sender_address)
        "reply_to": s.get("reply_to"),
        "logo_url": logo_url,
        "primary_color": s.get("primary_color"),
        "accent_color": s.get("accent_color"),
        "signature": s.get("signature"),
        "postal_address": s.get("postal_address"),
        "paper": s.get("paper"),
        "bank": None
        if not bank
        else {**bank, "iban_grouped": iban_grouped(bank["iban"]), "bank_name": bank.get("bank_name")},
    }
