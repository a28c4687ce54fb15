"""The rules of a customer's segmentation fields (issue 10), one place for the invoice's customer
(`invoice_input.CustomerIn`) and the customer PATCH: `country` (ISO 3166-1 alpha-2, checked against
CLDR's territories through babel, which is installed already), `subdivision` (the ISO 3166-2 code
without the country, 1-3 upper-case letters or digits, only with a country), `tags` (unique
lower-case slugs, at most 20) and `attributes` (text values of at most 200 characters under
snake_case keys, at most 20). The scheduler's segment rules and working calendars read them.
"""

import re
from typing import Annotated, Any

from babel import Locale
from pydantic import AfterValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

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
EXTRAS = ("country", "subdivision", "tags", "attributes")  # the customer fields these rules check


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


def extras_of(customer: Any) -> dict[str, Any]:
    """The segmentation fields a customer input gives (None: not given), for the writers."""
    return {k: getattr(customer, k, None) for k in EXTRAS}
