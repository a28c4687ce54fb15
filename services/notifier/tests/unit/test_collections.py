"""Unit: a call's completion checked field by field (tasks.checked_completion), and the agency
webhook's signature (agency.webhook_request) verified the way a receiver verifies it."""

import datetime as dt
from decimal import Decimal

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dunning.http import Problem
from dunning_notifier.agency import handed_over_payload, new_secret, webhook_request
from dunning_notifier.tasks import CompleteIn, checked_completion

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
TASK = {"currency": "JPY", "balance": Decimal("48000"), "customer_timezone": "Asia/Tokyo", "assignee": "kenji"}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        pytest.param(
            {"outcome": "promised_to_pay", "promised_date": "2026-12-10"}, "promised_amount", "missing", id="no-amount"
        ),
        pytest.param(
            {"outcome": "promised_to_pay", "promised_amount": "100.5", "promised_date": "2026-12-10"},
            "promised_amount",
            "amount",
            id="yen-has-no-decimals",
        ),
        pytest.param(
            {"outcome": "promised_to_pay", "promised_amount": "0", "promised_date": "2026-12-10"},
            "promised_amount",
            "amount",
            id="zero",
        ),
        pytest.param(
            {"outcome": "promised_to_pay", "promised_amount": "48001", "promised_date": "2026-12-10"},
            "promised_amount",
            "amount_too_large",
            id="over-balance",
        ),
        pytest.param(
            {"outcome": "promised_to_pay", "promised_amount": "100", "promised_date": "2026-12-01"},
            "promised_date",
            "in_the_past",
            id="yesterday-in-tokyo",
        ),
        pytest.param(
            {"outcome": "promised_to_pay", "promised_amount": "100", "promised_date": "2028-01-01"},
            "promised_date",
            "too_far",
            id="too-far",
        ),
        pytest.param({"outcome": "disputed"}, "dispute_reason", "missing", id="dispute-without-reason"),
        pytest.param({"outcome": "callback_requested"}, "callback_at", "missing", id="callback-without-time"),
        pytest.param(
            {"outcome": "callback_requested", "callback_at": "2026-12-02T09:59:00Z"},
            "callback_at",
            "in_the_past",
            id="callback-in-the-past",
        ),
        pytest.param(
            {"outcome": "other", "promised_amount": "1"},
            "promised_amount",
            "not_for_outcome",
            id="field-of-another-outcome",
        ),
    ],
)
def test_a_bad_completion_names_its_field(body: dict, field: str, code: str) -> None:
    with pytest.raises(Problem) as caught:
        checked_completion(TASK, CompleteIn.model_validate(body), NOW)
    assert caught.value.errors == [caught.value.errors[0] | {"field": field, "code": code}]


def test_a_promise_today_in_the_customers_zone_is_kept_in_its_currencys_exponent() -> None:
    body = CompleteIn.model_validate(
        {"outcome": "promised_to_pay", "promised_amount": "48000", "promised_date": "2026-12-02"}
    )
    values = checked_completion(TASK, body, NOW)
    assert values["promised_amount"] == Decimal("48000") and values["completed_by"] == "kenji"


def test_the_case_post_verifies_with_the_secret_and_no_other() -> None:
    secret = new_secret()
    now = dt.datetime.now(dt.UTC)
    body, headers = webhook_request(secret, {"case_id": "case_01JEA1B3D5F7H9K1M3P5", "case_file": {"a": 1}}, now)
    assert headers["webhook-id"] == "case_01JEA1B3D5F7H9K1M3P5"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_the_handed_over_notice_is_an_email_naming_the_agency() -> None:
    notice = handed_over_payload(
        {"stage": "collections", "channel": "agency", "x": 1}, "stg_1", "Nordic", "c@n.example"
    )
    assert notice | {"stage": "handed_over", "channel": "email", "template": "handed_over", "x": 1} == notice
    assert notice["agency"] == {"name": "Nordic", "contact_email": "c@n.example"}
