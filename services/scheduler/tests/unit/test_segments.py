from decimal import Decimal

import pytest

from dunning.contracts import Customer
from dunning_scheduler.segments import (
    EXAMPLE_RULES,
    NO_RULES,
    History,
    SegmentRulesError,
    choose,
    needs_history,
    parse_rules,
)

pytestmark = pytest.mark.unit
RULES = parse_rules(EXAMPLE_RULES, version=2)


def customer(**fields) -> Customer:
    base = {"customer_id": "cus_1", "external_id": "c-1", "name": "Acme", "email": "ap@acme.test"}
    return Customer(**{**base, "locale": "de-DE", "timezone": "Europe/Berlin", **fields})


def chosen(rules=RULES, *, who=None, currency="EUR", amount="500.00", history=None):
    return choose(rules, customer=who or customer(), currency=currency, amount_due=Decimal(amount), history=history)


@pytest.mark.parametrize(
    ("who", "currency", "amount", "history", "expected"),
    [
        pytest.param(
            customer(tags=("strategic", "eu")),
            "EUR",
            "50.00",
            None,
            ("pol_gentle", "strategic", "tagged strategic"),
            id="tags_first_in_priority_order",
        ),
        pytest.param(
            None,
            "EUR",
            "100.00",
            None,
            ("pol_light", "small", "currency EUR; amount 100.00 EUR <= 100.00"),
            id="amount_max_is_inclusive",
        ),
        pytest.param(None, "GBP", "50.00", None, ("pol_standard", "default", "no rule matched"), id="other_currency"),
        pytest.param(
            None,
            "EUR",
            "500.00",
            History(4, Decimal("17.5")),
            ("pol_firm", "late_payers", "average 17.5 days late over the last 4 invoices >= 15"),
            id="late_payer_by_history",
        ),
        pytest.param(
            None,
            "EUR",
            "500.00",
            History(1, Decimal("30")),
            ("pol_standard", "default", "no rule matched"),
            id="history_too_short",
        ),
        pytest.param(
            None,
            "EUR",
            "500.00",
            History(5, Decimal("3")),
            ("pol_standard", "default", "no rule matched"),
            id="a_punctual_payer",
        ),
    ],
)
def test_choose(who, currency, amount, history, expected):
    assert chosen(who=who, currency=currency, amount=amount, history=history) == expected


def test_attributes_country_and_min_amount():
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "public_fr",
                    "policy_id": "pol_public",
                    "when": {"attributes": {"sector": "public"}, "country": ["FR"], "amount_min": "1000"},
                }
            ]
        }
    )
    public = customer(locale="fr-FR", attributes={"sector": "public"})
    assert chosen(rules, who=public, amount="1000.00") == (
        "pol_public",
        "public_fr",
        "sector = public; country FR; amount 1000.00 EUR >= 1000",
    )
    assert chosen(rules, who=public, amount="999.99") == (None, "default", "no rule matched")
    assert chosen(rules, who=customer(locale="fr-FR", attributes={"sector": "private"}))[1] == "default"
    assert chosen(NO_RULES) == (None, "default", "no segment rules")


def test_tags_all_and_needs_history():
    rules = parse_rules({"rules": [{"name": "both", "policy_id": "p", "when": {"tags_all": ["a", "b"]}}]})
    assert chosen(rules, who=customer(tags=("a",)))[1] == "default"
    assert chosen(rules, who=customer(tags=("b", "a")))[1] == "both"
    assert needs_history(rules) == 0 and needs_history(RULES) == 5


def test_normalised_rules_round_trip():
    assert parse_rules(RULES.document).document == RULES.document
    assert RULES.document["rules"][2]["when"] == {
        "average_days_late_min": 15,
        "history_invoices": 5,
        "history_min_invoices": 2,
    }
    assert RULES.document["rules"][0]["when"] == {"tags_any": ["strategic"]}


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        (
            {"rules": [{"name": "x", "policy_id": "p", "when": {"amount_min": "10", "amount_max": "5"}}]},
            "rules.0.when.amount_min",
            "above amount_max",
        ),
        (
            {"rules": [{"name": "x", "policy_id": "p", "when": {"amount_min": "1,5"}}]},
            "rules.0.when.amount_min",
            "decimal",
        ),
        (
            {"rules": [{"name": "x", "policy_id": "p", "when": {"history_invoices": 51}}]},
            "rules.0.when.history_invoices",
            "1 to 50",
        ),
        (
            {"rules": [{"name": "x", "policy_id": "p", "when": {"tags_any": ["VIP"]}}]},
            "rules.0.when.tags_any.0",
            "lower-case",
        ),
        (
            {"rules": [{"name": "x", "policy_id": "p", "when": {"currency": ["eur"]}}]},
            "rules.0.when.currency.0",
            "ISO 4217",
        ),
        ({"rules": [{"name": "x", "policy_id": "p", "when": {"colour": "red"}}]}, "rules.0.when.colour", "unknown key"),
        ({"rules": [{"name": "x", "policy_id": "p"}, {"name": "x", "policy_id": "q"}]}, "rules.1.name", "duplicate"),
        ({"rules": [{"name": "x"}]}, "rules.0.policy_id", "required"),
        ({"rules": [], "default_policy_id": "no spaces"}, "default_policy_id", "policy id"),
    ],
)
def test_invalid_rules_name_the_field(document, field, message):
    with pytest.raises(SegmentRulesError) as caught:
        parse_rules(document)
    assert any(e["field"] == field and message in e["message"] for e in caught.value.errors), caught.value.errors


def test_each_rule_averages_over_its_own_number_of_invoices_when_the_days_are_given():
    rules = parse_rules(
        {
            "rules": [
                {"name": "recent", "policy_id": "p3", "when": {"average_days_late_min": 20, "history_invoices": 2}},
                {"name": "longer", "policy_id": "p5", "when": {"average_days_late_min": 10, "history_invoices": 5}},
            ]
        }
    )
    history = History(5, Decimal("12"), days_late=(30, 20, 10, 0, 0))  # most recent first
    assert chosen(rules, history=history) == (
        "p3",
        "recent",
        "average 25 days late over the last 2 invoices >= 20",
    )
    assert chosen(rules, history=History(5, Decimal("12"), days_late=(10, 10, 20, 20, 0)))[1] == "longer"
    assert chosen(rules, history=History(5, Decimal("12")))[1] == "longer"  # only the overall average known
