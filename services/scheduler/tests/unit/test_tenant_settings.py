from datetime import date, time

import pytest

from dunning.contracts import Customer
from dunning_scheduler.tenant_settings import (
    DEFAULT_SETTINGS,
    EXAMPLE_SETTINGS,
    SettingsError,
    TenantSettingsDocument,
    calendar_for,
    country_of,
    has_firing_rules,
    parse_settings,
    parse_window,
)

pytestmark = pytest.mark.unit


def customer(**fields) -> Customer:
    base = {"customer_id": "cus_1", "external_id": "c-1", "name": "Acme", "email": "ap@acme.test"}
    return Customer(**{**base, "locale": "de-DE", "timezone": "Europe/Berlin", **fields})


def test_without_settings_everything_is_off():
    assert DEFAULT_SETTINGS.calendar_mode == "none"
    assert DEFAULT_SETTINGS.working_days == frozenset(range(7))
    assert DEFAULT_SETTINGS.send_window is None and DEFAULT_SETTINGS.caps is None
    assert not DEFAULT_SETTINGS.consolidation and not has_firing_rules(DEFAULT_SETTINGS)
    assert calendar_for(DEFAULT_SETTINGS, customer()).every_day


def test_the_example_compiles_and_normalises_to_itself():
    settings = parse_settings(EXAMPLE_SETTINGS, version=3)
    assert settings.version == 3 and settings.calendar_mode == "customer"
    assert settings.working_days == frozenset(range(5))
    assert settings.closures == {date(2026, 12, 24), date(2026, 12, 31)}
    assert settings.send_window is not None and settings.send_window.start == time(8)
    assert settings.send_window.spread_seconds == 3600
    assert settings.caps is not None and settings.caps.max_reminders == 3
    assert settings.consolidation and has_firing_rules(settings)
    assert parse_settings(settings.document).document == settings.document
    assert settings.document == TenantSettingsDocument.model_validate(EXAMPLE_SETTINGS).normalised()


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        ({"send_window": {"start": "8", "end": "17:00"}}, "send_window.start", "HH:MM"),
        ({"send_window": {"start": "17:00", "end": "08:00"}}, "send_window.end", "after start"),
        ({"send_window": {"start": "08:00", "end": "17:00", "spread": "P1M"}}, "send_window.spread", "non-negative"),
        ({"send_window": {"end": "17:00"}}, "send_window.start", "required"),
        ({"calendar": {"country": "XX"}}, "calendar.country", "unknown country"),
        ({"calendar": {"country": "de"}}, "calendar.country", "alpha-2"),
        ({"calendar": {"country": "DE", "subdivision": "ZZ"}}, "calendar.subdivision", "unknown subdivision"),
        ({"calendar": {"subdivision": "BY"}}, "calendar.subdivision", "needs a country"),
        ({"calendar": {"holidays": "tenant"}}, "calendar.country", "required"),
        ({"calendar": {"holidays": "sometimes"}}, "calendar.holidays", "one of"),
        ({"calendar": {"closures": ["2026-02-30"]}}, "calendar.closures", "not a date"),
        ({"calendar": {"working_days": []}}, "calendar.working_days", "non-empty"),
        ({"calendar": {"working_days": ["mon", "mon"]}}, "calendar.working_days", "twice"),
        ({"contact_caps": {"max_reminders": 3}}, "contact_caps.period", "go together"),
        ({"contact_caps": {"max_reminders": 0, "period": "P7D"}}, "contact_caps.max_reminders", "1 to 1000"),
        ({"consolidation": {"enabled": "yes"}}, "consolidation.enabled", "true or false"),
        ({"sendwindow": {}}, "sendwindow", "unknown key"),
    ],
)
def test_invalid_settings_name_the_field(document, field, message):
    with pytest.raises(SettingsError) as caught:
        parse_settings(document)
    assert any(e["field"] == field and message in e["message"] for e in caught.value.errors), caught.value.errors


def test_a_customer_window_override_names_its_fields():
    assert parse_window({"days": ["sat"], "start": "10:00", "end": "12:00:30"}).end == time(12, 0, 30)
    with pytest.raises(SettingsError) as caught:
        parse_window({"start": "10:00", "end": "09:00"})
    assert caught.value.errors == [{"field": "send_window.end", "message": "must be after start"}]


@pytest.mark.parametrize(
    ("fields", "region"),
    [
        pytest.param({"country": "DE", "subdivision": "BY"}, ("DE", "BY"), id="the_customers_own_data"),
        pytest.param({"locale": "fr-FR"}, ("FR", None), id="else_the_region_of_its_locale"),
        pytest.param({"locale": "en"}, (None, None), id="a_locale_without_region"),
        pytest.param({"country": "de", "subdivision": "by"}, ("DE", "BY"), id="codes_in_upper_case"),
    ],
)
def test_country_of(fields, region):
    assert country_of(customer(**fields)) == region


def test_calendar_follows_the_customer_else_the_tenant():
    settings = parse_settings({"calendar": {"holidays": "customer", "country": "DE", "subdivision": "BE"}})
    assert calendar_for(settings, customer(country="DE", subdivision="BY")).non_working_reason(date(2026, 1, 6))
    assert calendar_for(settings, customer(locale="en")).is_working(date(2026, 1, 6))  # the tenant's Berlin
    assert calendar_for(settings, customer(locale="fr-FR")).non_working_reason(date(2026, 7, 14)) == (
        "National Day (FR)"
    )
    tenant = parse_settings({"calendar": {"holidays": "tenant", "country": "DE", "subdivision": "BE"}})
    assert calendar_for(tenant, customer(country="DE", subdivision="BY")).is_working(date(2026, 1, 6))
    none = parse_settings({"calendar": {"working_days": ["mon"], "closures": ["2026-12-28"]}})
    assert calendar_for(none, customer()).non_working_reason(date(2026, 12, 28)) == "closure day"
    assert calendar_for(none, customer()).is_working(date(2026, 12, 25)) is False  # a Friday: not a working day
