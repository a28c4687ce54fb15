"""Outbound webhooks, without a database: signing (checked with the `standardwebhooks` package and an
HMAC written out by hand), the rotation overlap, the retry policy, the catalogue's mapping, the
reminder channel's outcome and the API's input rules."""

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dunning.clock import utcnow
from dunning_notifier import webhooks_catalogue as catalogue
from dunning_notifier import webhooks_http
from dunning_notifier.outcomes import Failed, Retry, Sent
from dunning_notifier.settings import Settings
from dunning_notifier.webhooks_channel import outcome_of
from dunning_notifier.webhooks_http import Answer
from dunning_notifier.webhooks_schemas import check_event_types, check_url
from dunning_notifier.webhooks_sender import decide, retry_delay

# Our own fixture: a secret of 24 known bytes, a fixed instant, a body with non-ASCII text.
RAW_KEY = bytes(range(1, 25))
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
AT = datetime(2026, 12, 1, 9, 30, 15, tzinfo=UTC)
BODY = '{"type":"invoice.paid","timestamp":"2026-12-01T09:30:15Z","data":{"customer":"Müller GmbH"}}'


def by_hand(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_headers_carry_the_spec_signature_of_id_timestamp_and_body():
    headers = webhooks_http.headers("msg_01TEST0000000000", BODY, [SECRET], AT)
    assert headers["webhook-id"] == "msg_01TEST0000000000"
    assert headers["webhook-timestamp"] == str(int(AT.timestamp())) == "1796117415"
    assert headers["webhook-signature"] == by_hand(RAW_KEY, "msg_01TEST0000000000", 1796117415, BODY)
    assert headers["content-type"] == "application/json"


def test_a_receiver_verifies_with_the_standardwebhooks_package():
    headers = webhooks_http.headers("msg_01TEST0000000001", BODY, [SECRET])
    assert Webhook(SECRET).verify(BODY.encode(), headers) == {
        "type": "invoice.paid",
        "timestamp": "2026-12-01T09:30:15Z",
        "data": {"customer": "Müller GmbH"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace("Müller", "Mueller"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks_http.new_secret()).verify(BODY, headers)


def test_new_secrets_are_whsec_and_32_random_bytes():
    a, b = webhooks_http.new_secret(), webhooks_http.new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


def test_during_a_rotation_overlap_both_secrets_sign_and_either_verifies():
    old, new = webhooks_http.new_secret(), webhooks_http.new_secret()
    row = {"secret": new, "previous_secret": old, "previous_expires_at": utcnow() + timedelta(hours=24)}
    signing = webhooks_http.signing_secrets(row)
    assert signing == [new, old]
    headers = webhooks_http.headers("msg_01TEST0000000002", BODY, signing)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_after_the_overlap_only_the_new_secret_signs():
    old, new = webhooks_http.new_secret(), webhooks_http.new_secret()
    row = {"secret": new, "previous_secret": old, "previous_expires_at": utcnow() - timedelta(seconds=1)}
    headers = webhooks_http.headers("msg_01TEST0000000003", BODY, webhooks_http.signing_secrets(row))
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, headers)


def answer(status: int | None, retry_after: float | None = None, in_doubt: bool = False) -> Answer:
    return Answer(utcnow(), 12, status, None, None if status and status < 300 else "x", retry_after, in_doubt)


SETTINGS = Settings(webhook_retry_base_seconds=5, webhook_retry_max_seconds=3600, webhook_max_attempts=5)


@pytest.mark.parametrize(
    ("status", "attempts", "state"),
    [
        pytest.param(200, 1, "delivered", id="2xx-delivered"),
        pytest.param(204, 5, "delivered", id="2xx-on-the-last-attempt"),
        pytest.param(500, 1, "pending", id="5xx-retried"),
        pytest.param(503, 4, "pending", id="5xx-retried-until-the-last"),
        pytest.param(500, 5, "failed", id="5xx-on-the-last-attempt-fails"),
        pytest.param(None, 1, "pending", id="network-error-retried"),
        pytest.param(408, 1, "pending", id="408-retried"),
        pytest.param(409, 1, "pending", id="409-retried"),
        pytest.param(429, 1, "pending", id="429-retried"),
        pytest.param(400, 1, "failed", id="400-final"),
        pytest.param(401, 1, "failed", id="401-final"),
        pytest.param(404, 1, "failed", id="404-final"),
        pytest.param(410, 1, "failed", id="410-final"),
        pytest.param(301, 1, "failed", id="redirect-not-followed-final"),
    ],
)
def test_what_an_answer_does_to_its_message(status, attempts, state):
    got, retry_in = decide(answer(status), attempts, SETTINGS)
    assert got == state
    assert (retry_in is not None) == (state == "pending")


def test_backoff_doubles_from_the_base_with_jitter_and_is_capped():
    rng = random.Random(7)
    for attempts, centre in [(1, 5), (2, 10), (3, 20), (6, 160), (20, 3600)]:
        delays = [retry_delay(attempts, SETTINGS, rng=rng) for _ in range(200)]
        assert all(centre * 0.8 <= d <= centre * 1.2 for d in delays)
        assert max(delays) - min(delays) > centre * 0.2  # spread: replicas do not retry in step


def test_retry_after_is_honoured_when_longer_than_the_backoff_and_capped():
    assert retry_delay(1, SETTINGS, retry_after=120) == 120
    assert retry_delay(1, SETTINGS, retry_after=7200) == 7200  # honoured beyond our own cap
    assert retry_delay(1, SETTINGS, retry_after=10**9) == 86400  # up to a day
    assert 4 <= retry_delay(1, SETTINGS, retry_after=1) <= 6  # shorter: the backoff wins
    state, retry_in = decide(answer(429, retry_after=300), 1, SETTINGS)
    assert state == "pending" and retry_in == 300


def test_retry_after_header_as_seconds_or_http_date():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert webhooks_http.retry_after_seconds("120", now) == 120
    assert webhooks_http.retry_after_seconds("Tue, 01 Dec 2026 12:01:30 GMT", now) == 90
    assert webhooks_http.retry_after_seconds("Tue, 01 Dec 2026 11:00:00 GMT", now) == 0
    assert webhooks_http.retry_after_seconds("soon", now) is None
    assert webhooks_http.retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("internal", "data", "public"),
    [
        pytest.param("dunning.StagesCancelled.v1", {"reason": "invoice_settled"}, ["invoice.paid"], id="settled"),
        pytest.param("dunning.StagesCancelled.v1", {"reason": "invoice_voided"}, [], id="voided-not-paid"),
        pytest.param("dunning.DunningResumed.v1", {"cause": "settled"}, ["invoice.reopened"], id="reopened"),
        pytest.param("dunning.DunningResumed.v1", {"cause": "hold"}, ["dunning.resumed"], id="resumed"),
        pytest.param("dunning.DunningPaused.v1", {"cause": "dispute"}, ["dunning.paused"], id="paused"),
        pytest.param("dunning.PaymentReceived.v1", {}, ["payment.received"], id="payment"),
        pytest.param("dunning.ReminderSent.v1", {}, ["reminder.sent"], id="reminder-sent"),
        pytest.param("dunning.InvoiceIssued.v1", {}, [], id="not-in-the-catalogue"),
    ],
)
def test_internal_events_map_to_public_types(internal, data, public):
    assert catalogue.public_types(internal, SimpleNamespace(**data)) == public


def test_the_catalogue_names_every_required_type():
    required = {
        "invoice.paid",
        "invoice.reopened",
        "payment.received",
        "payment.reversed",
        "reminder.sent",
        "reminder.failed",
        "reminder.cancelled",
        "promise.made",
        "promise.broken",
        "promise.kept",
        "dispute.opened",
        "dispute.resolved",
        "dunning.paused",
        "dunning.resumed",
        "reminder.due",
    }
    assert required <= set(catalogue.EVENT_TYPES)


def test_the_handler_table_records_webhooks_for_every_catalogue_type_and_keeps_its_own_handlers():
    from dunning.contracts import PaymentReceived, StageEscalated, StagesCancelled
    from dunning_notifier.handlers import HANDLERS, stop_invoice

    assert HANDLERS[StagesCancelled].each.__name__ == "stop_invoice_and_webhooks"
    assert HANDLERS[StagesCancelled].each is not stop_invoice
    assert HANDLERS[PaymentReceived].each is catalogue.record_messages
    assert HANDLERS[PaymentReceived].batch is catalogue.record_messages_batch
    assert not HANDLERS[PaymentReceived].inbox  # read only for webhooks: the messages' unique key dedupes
    assert HANDLERS[StageEscalated].each.__name__ == "record_delivery"  # reminder.due goes by the channel
    assert HANDLERS[StagesCancelled].inbox and HANDLERS[StageEscalated].inbox  # the notifier's own keep it


async def test_a_handled_type_with_a_batch_handler_keeps_it_and_records_webhooks_in_it_too():
    from dunning.contracts import StagesCancelled
    from dunning.handler_table import HandlerSpec

    applied: list[list] = []

    async def each(conn, event):
        applied.append([event])

    async def cancel_many(conn, events):
        applied.append(events)

    spec = catalogue.with_webhooks({StagesCancelled: HandlerSpec(each, batch=cancel_many)})[StagesCancelled]
    assert spec.inbox and spec.batch is not None and spec.batch.__name__ == "cancel_many_and_webhooks"
    await spec.batch(None, [])  # a run with no public type asks the database nothing
    assert applied == [[]]


def test_the_body_is_type_timestamp_data():
    assert catalogue.body("promise.made", "2026-12-01T00:00:00Z", {"a": "1.50"}) == (
        '{"type":"promise.made","timestamp":"2026-12-01T00:00:00Z","data":{"a":"1.50"}}'
    )


def test_a_webhook_reminder_is_sent_when_one_endpoint_answers_2xx():
    outcome = outcome_of([("whe_a", answer(500)), ("whe_b", answer(200))])
    assert isinstance(outcome, Sent) and outcome.provider_message_id == "whe_b"


def test_a_webhook_reminder_timing_out_after_sending_is_an_in_doubt_retry():
    outcome = outcome_of([("whe_a", answer(None, in_doubt=True)), ("whe_b", answer(404))])
    assert isinstance(outcome, Retry) and outcome.in_doubt and outcome.error_code == "webhook_network"


def test_a_webhook_reminder_refused_by_every_endpoint_fails_for_good():
    outcome = outcome_of([("whe_a", answer(404)), ("whe_b", answer(410))])
    assert isinstance(outcome, Failed) and outcome.permanent and outcome.error_code == "webhook_http_404"


@pytest.mark.parametrize(
    "url",
    ["https://erp.example.com/hooks", "http://127.0.0.1:8026/hooks/a", "https://x.example:8443/p?q=1"],
)
def test_urls_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http or https"),
        ("example.com/hooks", "http or https"),
        ("https:///nohost", "host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com:99999/", "not a URL"),
        ("https://example.com/" + "a" * 2048, "2048"),
    ],
)
def test_urls_refused_with_a_reason(url, why):
    with pytest.raises(ValueError, match=why):
        check_url(url)


def test_event_types_must_come_from_the_catalogue():
    assert check_event_types(["invoice.paid", "invoice.paid", "reminder.due"]) == ["invoice.paid", "reminder.due"]
    with pytest.raises(ValueError, match="'invoice.eaten'"):
        check_event_types(["invoice.paid", "invoice.eaten"])


def test_docs_show_a_payload_example_of_every_catalogue_type():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    for event_type in catalogue.EVENT_TYPES:
        assert f"### `{event_type}`" in doc and f'"type": "{event_type}"' in doc, event_type
