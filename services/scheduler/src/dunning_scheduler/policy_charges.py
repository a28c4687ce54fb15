"""The charges and threshold sections of a policy document (see `policy`): interest terms, per-currency
minimum balances and stage late fees. Their document models validate strictly (errors name the field:
`interest.day_count`, `minimum_balance.eur`, `stages.2.late_fee.EUR`); the compiled forms are what
planning (`Policy.chased`) and firing (`charges`) use.

    "minimum_balance": {"EUR": "10.00"},       a currency not listed has no minimum
    "below_minimum": "skip",                   skip | pre_due_only
    "interest": {"annual_rate": "8.00", "day_count": "ACT/365F"}
             or {"reference": "ecb_main_refinancing", "margin": "8.00", "fixing": "half_year", "day_count": "ACT/360"}

Rates are percent per year (0..100); amounts are decimal strings, never floats.
"""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

AMOUNT = r"^[0-9]+(\.[0-9]{1,4})?$"
RATE = r"^[0-9]{1,3}(\.[0-9]{1,6})?$"
CURRENCY = re.compile(r"^[A-Z]{3}$")
DAY_COUNTS = ("ACT/365F", "ACT/360", "ACT/ACT-ISDA")
FIXINGS = ("half_year", "daily")
REFERENCE_NAME = r"^[a-z][a-z0-9_]{0,63}$"


def money_map(value: dict[str, str]) -> dict[str, str]:
    """{currency: amount}: three upper-case letters -> a decimal string; errors name the key."""
    errors = []
    for currency, amount in value.items():
        if not CURRENCY.match(currency):
            errors.append((currency, "currency must be three upper-case letters (ISO 4217) such as EUR"))
        elif not isinstance(amount, str) or not re.match(AMOUNT, amount):
            errors.append((currency, 'must be a decimal string such as "40.00"'))
    if errors:
        raise PydanticCustomError("policy_at", "{errors}", {"errors": errors})
    return value


def rate(text: str) -> Decimal:
    return Decimal(text)


class InterestDocument(BaseModel):
    """Late-payment interest: a fixed annual rate, or a reference rate plus a margin."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    annual_rate: Annotated[str | None, Field(pattern=RATE, description='Percent per year, e.g. "8.00".')] = None
    reference: Annotated[
        str | None, Field(pattern=REFERENCE_NAME, description="A reference rate (GET /v1/reference-rates).")
    ] = None
    margin: Annotated[str, Field(pattern=RATE, description="Percentage points over the reference.")] = "0"
    fixing: Annotated[
        Literal["half_year", "daily"],
        Field(
            description="half_year: the reference in force on 1 January / 1 July of the day's half-year "
            "(Directive 2011/7/EU); daily: the reference in force each day."
        ),
    ] = "half_year"
    day_count: Annotated[Literal["ACT/365F", "ACT/360", "ACT/ACT-ISDA"], Field(description="Day count.")] = "ACT/365F"

    @model_validator(mode="after")
    def _one_rate(self) -> "InterestDocument":
        errors = []
        if (self.annual_rate is None) == (self.reference is None):
            errors.append(("annual_rate", "give either annual_rate or reference (with margin)"))
        for name in ("annual_rate", "margin"):
            value = getattr(self, name)
            if value is not None and Decimal(value) > 100:
                errors.append((name, "must be a percentage from 0 to 100"))
        if self.annual_rate is not None and ("margin" in self.model_fields_set or "fixing" in self.model_fields_set):
            errors.append(("margin", "margin and fixing go with reference, not annual_rate"))
        if errors:
            raise PydanticCustomError("policy_at", "{errors}", {"errors": errors})
        return self

    def normalised(self) -> dict[str, Any]:
        if self.annual_rate is not None:
            return {"annual_rate": self.annual_rate, "day_count": self.day_count}
        return {"reference": self.reference, "margin": self.margin, "fixing": self.fixing, "day_count": self.day_count}


@dataclass(frozen=True)
class InterestTerms:
    """Compiled interest terms; rates in percent per year."""

    annual_rate: Decimal | None
    reference: str | None
    margin: Decimal
    fixing: str  # half_year | daily
    day_count: str  # ACT/365F | ACT/360 | ACT/ACT-ISDA


def interest_terms(document: InterestDocument | None) -> InterestTerms | None:
    if document is None:
        return None
    return InterestTerms(
        annual_rate=None if document.annual_rate is None else Decimal(document.annual_rate),
        reference=document.reference,
        margin=Decimal(document.margin),
        fixing=document.fixing,
        day_count=document.day_count,
    )


CHARGE_MESSAGES = {
    "below_minimum": "must be one of skip, pre_due_only",
    "minimum_balance": 'must be an object of currency -> decimal string, such as {"EUR": "10.00"}',
    "late_fee": 'must be an object of currency -> decimal string, such as {"EUR": "40.00"}',
    "charge_interest": "must be true or false",
    "interest": "must be an object: annual_rate and day_count, or reference, margin, fixing and day_count",
    "annual_rate": 'must be a percentage as a decimal string such as "8.00"',
    "margin": 'must be a percentage as a decimal string such as "8.00"',
    "reference": "must be a reference rate name: lower-case letters, digits and '_'",
    "fixing": "must be one of half_year, daily",
    "day_count": "must be one of ACT/365F, ACT/360, ACT/ACT-ISDA",
}


class StageCharges(BaseModel):
    """A stage's charges (a base of `StageDocument`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    late_fee: Annotated[
        dict[str, str] | None,
        Field(description='A fixed fee per currency charged once when this stage fires: {"EUR": "40.00"}.'),
    ] = None
    charge_interest: Annotated[
        bool, Field(description="Quote and assess the interest accrued up to this stage (policy `interest`).")
    ] = False

    @field_validator("late_fee")
    @classmethod
    def _late_fee(cls, fees: dict[str, str] | None) -> dict[str, str] | None:
        return None if fees is None else money_map(fees)

    def stage_charges(self) -> dict[str, Any]:
        """The keys that differ from their default, for the normalised stage."""
        keys: dict[str, Any] = {}
        if self.late_fee:
            keys["late_fee"] = dict(sorted(self.late_fee.items()))
        if self.charge_interest:
            keys["charge_interest"] = True
        return keys


class ChargeKeys(BaseModel):
    """The policy document's threshold and interest keys (a base of `PolicyDocument`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    minimum_balance: Annotated[
        dict[str, str] | None,
        Field(description='Per currency: below it, stages are skipped (see below_minimum): {"EUR": "10.00"}.'),
    ] = None
    below_minimum: Annotated[
        Literal["skip", "pre_due_only"],
        Field(description="skip: no stage below the minimum; pre_due_only: only stages with offset <= 0."),
    ] = "skip"
    interest: Annotated[InterestDocument | None, Field(description="Late-payment interest; absent: none.")] = None

    @field_validator("minimum_balance")
    @classmethod
    def _minimum(cls, minimum: dict[str, str] | None) -> dict[str, str] | None:
        return None if minimum is None else money_map(minimum)

    def charge_keys(self) -> dict[str, Any]:
        """The keys that differ from their default, for the normalised document."""
        keys: dict[str, Any] = {}
        if self.minimum_balance:
            keys["minimum_balance"] = dict(sorted(self.minimum_balance.items()))
        if self.below_minimum != "skip":
            keys["below_minimum"] = self.below_minimum
        if self.interest is not None:
            keys["interest"] = self.interest.normalised()
        return keys


def decimals(value: dict[str, str] | None) -> dict[str, Decimal]:
    return {} if not value else {currency: Decimal(amount) for currency, amount in value.items()}
