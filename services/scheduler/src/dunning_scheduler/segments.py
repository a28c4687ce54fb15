"""Segment rules (GET/PUT /v1/policy-rules, versioned): which named policy an invoice is dunned under.

    {"rules": [
       {"name": "strategic", "policy_id": "pol_gentle", "when": {"tags_any": ["strategic"]}},
       {"name": "small", "policy_id": "pol_light", "when": {"currency": ["EUR"], "amount_max": "100.00"}},
       {"name": "late_payers", "policy_id": "pol_firm",
        "when": {"average_days_late_min": 15, "history_invoices": 5, "history_min_invoices": 2}}],
     "default_policy_id": "pol_standard"}

Rules are in priority order, the first match wins; a rule's conditions are ANDed. History conditions
look at the customer's last `history_invoices` settled invoices (days late = max(0, settled date −
due date)); a customer with fewer than `history_min_invoices` of them does not match one. No rule
matching: `default_policy_id`, else the tenant's default policy (PUT /v1/policy). `choose` says in
words why (the values that matched), stored on the invoice and sent in DunningPlanned.segment.
Whether the named policies exist is checked where they are stored (policy-api), not here.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dunning.contracts import Customer
from dunning_scheduler.tenant_settings import SettingsError, country_of, field_errors

MAX_RULES = 50
_AMOUNT = r"^[0-9]+(\.[0-9]{1,4})?$"
_POLICY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"

EXAMPLE_RULES: dict[str, Any] = {
    "rules": [
        {"name": "strategic", "policy_id": "pol_gentle", "when": {"tags_any": ["strategic"]}},
        {"name": "small", "policy_id": "pol_light", "when": {"currency": ["EUR"], "amount_max": "100.00"}},
        {
            "name": "late_payers",
            "policy_id": "pol_firm",
            "when": {"average_days_late_min": 15, "history_invoices": 5, "history_min_invoices": 2},
        },
    ],
    "default_policy_id": "pol_standard",
}


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("segments", message)


Tag = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class ConditionsDocument(BaseModel):
    """A rule's conditions, all of which must hold (an empty `when` matches every invoice)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tags_any: Annotated[list[Tag] | None, Field(min_length=1, description="The customer has one of these tags.")] = None
    tags_all: Annotated[list[Tag] | None, Field(min_length=1, description="The customer has all of these tags.")] = None
    attributes: Annotated[
        dict[str, str] | None, Field(description="Each key's value equals the customer's attribute exactly.")
    ] = None
    country: Annotated[list[CountryCode] | None, Field(min_length=1, description="The customer's country.")] = None
    currency: Annotated[list[CurrencyCode] | None, Field(min_length=1, description="The invoice's currency.")] = None
    amount_min: Annotated[str | None, Field(pattern=_AMOUNT, description="amount_due >= this.")] = None
    amount_max: Annotated[str | None, Field(pattern=_AMOUNT, description="amount_due <= this.")] = None
    average_days_late_min: Annotated[int | float | None, Field(ge=0, le=3650)] = None
    average_days_late_max: Annotated[int | float | None, Field(ge=0, le=3650)] = None
    history_invoices: Annotated[int, Field(ge=1, le=50, description="How many last settled invoices count.")] = 5
    history_min_invoices: Annotated[int, Field(ge=1, le=50, description="Fewer settled invoices: no match.")] = 1

    @model_validator(mode="after")
    def _ranges(self) -> "ConditionsDocument":
        errors = []
        if self.amount_min is not None and self.amount_max is not None:
            if Decimal(self.amount_min) > Decimal(self.amount_max):
                errors.append(("amount_min", "must not be above amount_max"))
        low, high = self.average_days_late_min, self.average_days_late_max
        if low is not None and high is not None and low > high:
            errors.append(("average_days_late_min", "must not be above average_days_late_max"))
        if self.history_min_invoices > self.history_invoices:
            errors.append(("history_min_invoices", "must not be above history_invoices"))
        if errors:
            raise PydanticCustomError("segments_at", "{errors}", {"errors": errors})
        return self


class SegmentRuleDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Unique; shown on the invoice.")]
    policy_id: Annotated[str, Field(pattern=_POLICY_ID, description="A named policy (PUT /v1/policies/{id}).")]
    when: ConditionsDocument = ConditionsDocument()


class SegmentRulesDocument(BaseModel):
    """A tenant's segment rules (PUT /v1/policy-rules; `rules` in the answers)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra={"examples": [EXAMPLE_RULES]})

    rules: Annotated[list[SegmentRuleDocument], Field(max_length=MAX_RULES, description="In priority order.")] = []
    default_policy_id: Annotated[
        str | None, Field(pattern=_POLICY_ID, description="No rule matching; absent: the tenant's default policy.")
    ] = None

    @field_validator("rules")
    @classmethod
    def _names(cls, rules: list[SegmentRuleDocument]) -> list[SegmentRuleDocument]:
        seen: set[str] = set()
        errors = []
        for index, rule in enumerate(rules):
            if rule.name in seen or rule.name == "default":
                errors.append((f"{index}.name", f"duplicate or reserved rule name {rule.name!r}"))
            seen.add(rule.name)
        if errors:
            raise PydanticCustomError("segments_at", "{errors}", {"errors": errors})
        return rules

    def normalised(self) -> dict[str, Any]:
        """As stored and shown: conditions not given are left out, history counts written when used."""
        rules = []
        for rule in self.rules:
            when = rule.when.model_dump(mode="json", exclude_none=True)
            if rule.when.average_days_late_min is None and rule.when.average_days_late_max is None:
                when.pop("history_invoices")
                when.pop("history_min_invoices")
            rules.append({"name": rule.name, "policy_id": rule.policy_id, "when": when})
        document: dict[str, Any] = {"rules": rules}
        if self.default_policy_id is not None:
            document["default_policy_id"] = self.default_policy_id
        return document


class SegmentRulesError(SettingsError):
    """Segment rules that are not valid; `errors` name each field (`rules.1.when.amount_min`)."""


_MESSAGES = {
    "name": "is required: lower-case letters, digits and '_', starting with a letter, at most 40",
    "policy_id": "must be a policy id: 1-100 letters, digits, '_', '.', ':' or '-'",
    "default_policy_id": "must be a policy id: 1-100 letters, digits, '_', '.', ':' or '-'",
    "tags_any": "must be a non-empty list of lower-case tags",
    "tags_all": "must be a non-empty list of lower-case tags",
    "attributes": "must be an object of strings",
    "country": "must be a non-empty list of ISO 3166-1 alpha-2 codes such as DE",
    "currency": "must be a non-empty list of ISO 4217 codes such as EUR",
    "amount_min": 'must be a decimal string such as "100.00"',
    "amount_max": 'must be a decimal string such as "100.00"',
    "average_days_late_min": "must be a number of days from 0 to 3650",
    "average_days_late_max": "must be a number of days from 0 to 3650",
    "history_invoices": "must be a whole number from 1 to 50",
    "history_min_invoices": "must be a whole number from 1 to 50",
    "rules": f"must be a list of at most {MAX_RULES} rules",
}


@dataclass(frozen=True)
class Conditions:
    tags_any: frozenset[str] | None = None
    tags_all: frozenset[str] | None = None
    attributes: tuple[tuple[str, str], ...] | None = None
    country: frozenset[str] | None = None
    currency: frozenset[str] | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    average_days_late_min: Decimal | None = None
    average_days_late_max: Decimal | None = None
    history_invoices: int = 5
    history_min_invoices: int = 1

    @property
    def uses_history(self) -> bool:
        return self.average_days_late_min is not None or self.average_days_late_max is not None


@dataclass(frozen=True)
class SegmentRule:
    name: str
    policy_id: str
    when: Conditions


@dataclass(frozen=True)
class SegmentRules:
    rules: tuple[SegmentRule, ...]
    default_policy_id: str | None
    version: int = 0
    document: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class History:
    """The customer's last settled invoices (as many as the rules need): how many, and their average days
    late. `days_late` (optional, most recent first) lets a rule looking at fewer invoices than the most any
    rule needs average over exactly its own; without it every rule uses `average_days_late`."""

    settled_invoices: int
    average_days_late: Decimal | None
    days_late: tuple[int, ...] = ()

    def over(self, n: int) -> tuple[int, Decimal | None]:
        """(how many invoices, their average days late) over the last `n`."""
        if self.days_late:
            last = self.days_late[:n]
            return len(last), Decimal(sum(last)) / len(last)
        return min(self.settled_invoices, n), self.average_days_late


def _conditions(valid: ConditionsDocument) -> Conditions:
    def decimal(value: str | float | None) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return Conditions(
        tags_any=None if valid.tags_any is None else frozenset(valid.tags_any),
        tags_all=None if valid.tags_all is None else frozenset(valid.tags_all),
        attributes=None if valid.attributes is None else tuple(sorted(valid.attributes.items())),
        country=None if valid.country is None else frozenset(valid.country),
        currency=None if valid.currency is None else frozenset(valid.currency),
        amount_min=decimal(valid.amount_min),
        amount_max=decimal(valid.amount_max),
        average_days_late_min=decimal(valid.average_days_late_min),
        average_days_late_max=decimal(valid.average_days_late_max),
        history_invoices=valid.history_invoices,
        history_min_invoices=valid.history_min_invoices,
    )


def parse_rules(document: Any, version: int = 0) -> SegmentRules:
    """Validate and compile segment rules, or raise SegmentRulesError naming every problem."""
    try:
        valid = SegmentRulesDocument.model_validate(document)
    except ValidationError as exc:
        raise SegmentRulesError(field_errors(exc, messages=_MESSAGES)) from None
    return SegmentRules(
        rules=tuple(SegmentRule(r.name, r.policy_id, _conditions(r.when)) for r in valid.rules),
        default_policy_id=valid.default_policy_id,
        version=version,
        document=valid.normalised(),
    )


NO_RULES = parse_rules({})


def needs_history(rules: SegmentRules) -> int:
    """The most settled invoices any rule looks at (0: no rule uses history)."""
    return max((r.when.history_invoices for r in rules.rules if r.when.uses_history), default=0)


def _days(value: Decimal) -> str:
    text = format(value.quantize(Decimal("0.1")).normalize(), "f")
    return text


def _match(
    when: Conditions, customer: Customer, currency: str, amount: Decimal, history: History | None
) -> list[str] | None:
    """The words for each condition that held, or None when one does not."""
    words: list[str] = []
    tags = frozenset(getattr(customer, "tags", None) or ())
    if when.tags_any is not None:
        found = sorted(when.tags_any & tags)
        if not found:
            return None
        words.append(f"tagged {', '.join(found)}")
    if when.tags_all is not None:
        if not when.tags_all <= tags:
            return None
        words.append(f"tagged {', '.join(sorted(when.tags_all))}")
    if when.attributes is not None:
        attributes = getattr(customer, "attributes", None) or {}
        if any(attributes.get(k) != v for k, v in when.attributes):
            return None
        words.append(", ".join(f"{k} = {v}" for k, v in when.attributes))
    if when.country is not None:
        country = country_of(customer)[0]
        if country not in when.country:
            return None
        words.append(f"country {country}")
    if when.currency is not None:
        if currency not in when.currency:
            return None
        words.append(f"currency {currency}")
    if when.amount_min is not None:
        if amount < when.amount_min:
            return None
        words.append(f"amount {amount} {currency} >= {when.amount_min}")
    if when.amount_max is not None:
        if amount > when.amount_max:
            return None
        words.append(f"amount {amount} {currency} <= {when.amount_max}")
    if when.uses_history:
        count, average = (0, None) if history is None else history.over(when.history_invoices)
        if average is None or count < when.history_min_invoices:
            return None
        over = f"average {_days(average)} days late over the last {count} invoices"
        if when.average_days_late_min is not None:
            if average < when.average_days_late_min:
                return None
            words.append(f"{over} >= {_days(when.average_days_late_min)}")
        if when.average_days_late_max is not None:
            if average > when.average_days_late_max:
                return None
            words.append(f"{over} <= {_days(when.average_days_late_max)}")
    return words


def choose(
    rules: SegmentRules, *, customer: Customer, currency: str, amount_due: Decimal, history: History | None
) -> tuple[str | None, str, str]:
    """(policy id, or None for the tenant's default; the rule's name or "default"; the reason in words).
    `history` covers the customer's last `needs_history(rules)` settled invoices."""
    for rule in rules.rules:
        words = _match(rule.when, customer, currency, amount_due, history)
        if words is not None:
            return rule.policy_id, rule.name, "; ".join(words) or "matches every invoice"
    if rules.rules:
        return rules.default_policy_id, "default", "no rule matched"
    return rules.default_policy_id, "default", "no segment rules"
