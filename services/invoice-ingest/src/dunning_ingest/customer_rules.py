"""The rules of a customer's segmentation fields (issue 10), one place for the invoice's customer
(`invoice_input.CustomerIn`) and the customer PATCH: `country` (ISO 3166-1 alpha-2, checked against
CLDR's territories through babel, which is installed already), `subdivision` (the ISO 3166-2 code
without the country, 1-3 upper-case letters or digits, only with a country), `tags` (unique
lower-case slugs, at most 20) and `attributes` (text values of at most 200 characters under
snake_case keys, at most 20). The scheduler's segment rules and working calendars read them.
Later, the contact channels beyond e-mail: `phone` (any number libphonenumber knows as valid, given
in international form, stored in E.164) and `postal_address` (name, 1-4 lines, postal code, city,
region, country) for SMS, calls and letters.
"""

import re
from typing import Annotated, Any, NotRequired

import phonenumbers
from babel import Locale
from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from dunning.text import storable

# CLDR's two-letter territories, less its groupings and unknown/private-use codes (EU, UN, ZZ, ...).
_NOT_COUNTRIES = frozenset(("EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"))
COUNTRIES = frozenset(
    code
    for code in map(str, Locale("en").territories)
    if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
)
COUNTRY = re.compile(r"^[A-Z]{2}$")
SUBDIVISION = re.compile(r"^[A-Z0-9]{1,3}$")
TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,39}$")
ATTRIBUTE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_TAGS = MAX_ATTRIBUTES = 20
MAX_ATTRIBUTE_VALUE = 200
EXTRAS = ("country", "subdivision", "tags", "attributes", "phone", "postal_address")  # the fields these rules check
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def check_country(value: str) -> str:
    if value not in COUNTRIES:
        raise PydanticCustomError("country", "must be an ISO 3166-1 alpha-2 country code such as DE")
    return value


def check_subdivision(value: str | None, info: ValidationInfo) -> str | None:
    """Only with a country (declared before it in the model, so already checked)."""
    if value is not None and not info.data.get("country"):
        raise PydanticCustomError("subdivision_without_country", "a subdivision needs a valid country")
    return value


def check_tags(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    seen: dict[str, int] = {}
    for i, tag in enumerate(value):
        if tag in seen:
            raise PydanticCustomError("duplicate", f"tag {tag!r} is listed twice (items {seen[tag]} and {i})")
        seen[tag] = i
    return value


def check_attribute_value(value: str) -> str:
    if not storable(value):
        raise PydanticCustomError("text", "must be text without NUL characters")
    return value


Country = Annotated[
    str | None,
    Field(
        json_schema_extra={"pattern": COUNTRY.pattern},
        description="ISO 3166-1 alpha-2 country of the customer's address: the public holidays of its "
        "working calendar. Absent: left as stored.",
        examples=["DE"],
    ),
    AfterValidator(lambda v: None if v is None else check_country(v)),
]
Subdivision = Annotated[
    Annotated[str, Field(pattern=SUBDIVISION.pattern)] | None,
    Field(
        description="ISO 3166-2 subdivision code without the country (BY for DE-BY), only with a country: "
        "regional public holidays.",
        examples=["BY"],
    ),
    AfterValidator(check_subdivision),
]
Tag = Annotated[str, Field(pattern=TAG.pattern, examples=["strategic"])]
Tags = Annotated[
    Annotated[list[Tag], Field(max_length=MAX_TAGS)] | None,
    Field(
        description=f"Lower-case slugs the tenant's segment rules match on, at most {MAX_TAGS}, none twice; "
        "the list replaces the stored one ([] clears it).",
        examples=[["strategic", "construction"]],
    ),
    AfterValidator(check_tags),
]
AttributeKey = Annotated[str, Field(pattern=ATTRIBUTE_KEY.pattern)]
AttributeValue = Annotated[str, Field(max_length=MAX_ATTRIBUTE_VALUE), AfterValidator(check_attribute_value)]
Attributes = Annotated[
    Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] | None,
    Field(
        description=f"Text attributes the segment rules match exactly, at most {MAX_ATTRIBUTES} "
        f"(snake_case keys, values up to {MAX_ATTRIBUTE_VALUE} characters); replaces the stored map ({{}} clears it).",
        examples=[{"industry": "construction", "region": "south"}],
    ),
]


def check_phone(value: str) -> str:
    """The number in E.164 if libphonenumber knows it as a valid one; given with its country code
    (`+49 30 123456`, spaces, dashes and brackets allowed)."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise PydanticCustomError(
            "phone", "must be a valid phone number in international form (E.164) such as +4930123456"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


Phone = Annotated[
    Annotated[str, Field(min_length=4, max_length=32), AfterValidator(check_phone)] | None,
    Field(
        description="The customer's phone number with its country code, stored in E.164 (+4930123456): "
        "SMS reminders and calls go to it. Absent: left as stored.",
        examples=["+4930123456"],
        json_schema_extra={"pattern": r"^\+[0-9 ()./-]{4,31}$"},
    ),
]

_Line = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_attribute_value)]
_Short = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_attribute_value)]


class _PostalAddressIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    name: NotRequired[Annotated[str, Field(max_length=200), AfterValidator(check_attribute_value)] | None]
    lines: Annotated[list[_Line], Field(min_length=1, max_length=4)]
    postal_code: NotRequired[Annotated[str, Field(max_length=20), AfterValidator(check_attribute_value)] | None]
    city: _Short
    region: NotRequired[_Short | None]
    country: Annotated[str, AfterValidator(check_country)]


ADDRESS_KEYS = ("name", "lines", "postal_code", "city", "region", "country")


def _whole_address(value: Any) -> dict[str, Any]:
    """Every key present (null when not given), in one order: what is stored and what events carry."""
    return {k: value.get(k) for k in ADDRESS_KEYS}


PostalAddress = Annotated[
    Annotated[_PostalAddressIn, AfterValidator(_whole_address)] | None,
    Field(
        description="The customer's postal address, where letters go: `lines` 1 to 4 (street, building, "
        "P.O. box), `city` and `country` (ISO 3166-1 alpha-2) required, `name`, `postal_code`, `region` "
        "optional. Absent: left as stored.",
        examples=[
            {
                "name": None,
                "lines": ["Friedrichstraße 123"],
                "postal_code": "10117",
                "city": "Berlin",
                "region": None,
                "country": "DE",
            }
        ],
    ),
]


def whole_address(address: Any) -> dict[str, Any] | None:
    """A stored address (events leave its nulls out) with every key, as the API shows it."""
    return _whole_address(address) if address else None


def one_line_address(address: dict[str, Any] | None) -> str | None:
    """The postal address on one line ("Friedrichstraße 123, 10117 Berlin, DE"), for lists and logs."""
    if not address:
        return None
    place = " ".join(p for p in (address.get("postal_code"), address.get("city")) if p)
    parts = [*address.get("lines", ()), place, address.get("region"), address.get("country")]
    return ", ".join(p for p in parts if p)


def extras_of(customer: Any) -> dict[str, Any]:
    """The segmentation fields a customer input gives (None: not given), for the writers."""
    return {k: getattr(customer, k, None) for k in EXTRAS}
