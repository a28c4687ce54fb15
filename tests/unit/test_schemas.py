"""Contract tests for schemas/: JSON Schemas, examples, topic catalogue, AsyncAPI."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from dunning import contracts as c
from dunning.events import envelope, validate
from dunning.money import exponent

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EVENTS_DIR = SCHEMAS / "events"
EXAMPLES_DIR = SCHEMAS / "examples"
TOPICS_DIR = SCHEMAS / "topics"
ENVELOPE_ID = "urn:dunning:schema:envelope:1"
_EXACT = Context(prec=34)  # the precision of an interest period's exact amount


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


SCHEMA_FILES = sorted(SCHEMAS.glob("*.schema.json")) + sorted(EVENTS_DIR.glob("*.schema.json"))
EVENT_NAMES = sorted(p.name.split(".")[0] for p in EVENTS_DIR.glob("*.v1.schema.json"))
EXAMPLES = sorted(EXAMPLES_DIR.glob("*/*/*.json"))
TOPIC_FILES = sorted(TOPICS_DIR.glob("*.yaml"))


def _event_schema(name: str, version: int = 1) -> dict[str, Any]:
    return _load_json(EVENTS_DIR / f"{name}.v{version}.schema.json")


@pytest.fixture(scope="module")
def registry() -> Registry:
    resources = []
    for path in SCHEMA_FILES:
        contents = _load_json(path)
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources).crawl()


def _validator(name: str, registry: Registry) -> Draft202012Validator:
    return Draft202012Validator(
        _event_schema(name), registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _examples_of(name: str, version: int = 1) -> list[Path]:
    return sorted((EXAMPLES_DIR / name / str(version)).glob("*.json"))


def _base_example(name: str) -> dict[str, Any]:
    """The richest (largest) example of an event: the one mutations start from."""
    path = max(_examples_of(name), key=lambda p: p.stat().st_size)
    return copy.deepcopy(_load_json(path))


def test_layout_is_not_empty() -> None:
    assert (SCHEMAS / "envelope.v1.schema.json").is_file()
    assert len(EVENT_NAMES) == 49
    assert (SCHEMAS / "README.md").is_file()


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = _load_json(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_id_matches_file_name(path: Path) -> None:
    name, version = path.name.split(".")[0], path.name.split(".")[1]
    expected = ENVELOPE_ID if name == "envelope" else f"urn:dunning:schema:{name}:{version.removeprefix('v')}"
    assert _load_json(path)["$id"] == expected


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_event_schema_wraps_envelope(name: str, registry: Registry) -> None:
    schema = _event_schema(name)
    assert {"$ref": ENVELOPE_ID} in schema["allOf"]
    assert schema["unevaluatedProperties"] is False
    assert schema["properties"]["type"] == {"const": f"dunning.{name}.v1"}
    # every $ref (including the envelope URN) resolves through the registry
    resolver = registry.resolver(base_uri=schema["$id"])
    assert resolver.lookup(ENVELOPE_ID).contents["$id"] == ENVELOPE_ID
    assert resolver.lookup("#/$defs/data").contents["additionalProperties"] is False


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_each_event_has_at_least_two_examples(name: str) -> None:
    assert len(_examples_of(name)) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_example_is_valid(path: Path, registry: Registry) -> None:
    name, version = path.parts[-3], int(path.parts[-2])
    assert (EVENTS_DIR / f"{name}.v{version}.schema.json").is_file(), f"no schema for example {path}"
    message = _load_json(path)
    _validator(name, registry).validate(message)
    # also valid against the bare envelope, and internally consistent
    Draft202012Validator(
        {"$ref": ENVELOPE_ID}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    ).validate(message)
    assert message["type"] == f"dunning.{name}.v{version}"
    if message["subject"].startswith("_"):  # a system event: about no invoice and no tenant
        assert message["tenantid"] == "_system"
    else:  # the subject is the Kafka key: the invoice id, or the customer id on the customers topic
        key = "customer_id" if message["subject"].startswith("cus_") else "invoice_id"
        assert message["subject"] == message["data"][key]
        assert message["tenantid"] == message["data"]["tenant_id"]


# --- mutations that must be rejected -------------------------------------------------


def _delete(*path: str) -> Callable[[dict[str, Any]], None]:
    def apply(msg: dict[str, Any]) -> None:
        node = msg
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


def _set(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def apply(msg: dict[str, Any]) -> None:
        node: Any = msg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _money_as_number(*path: str) -> Callable[[dict[str, Any]], None]:
    def apply(msg: dict[str, Any]) -> None:
        node: Any = msg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = float(node[path[-1]])

    return apply


def _other_event_type(msg: dict[str, Any]) -> None:
    current = msg["type"].split(".")[1]
    other = next(n for n in EVENT_NAMES if n != current)
    msg["type"] = f"dunning.{other}.v1"


_INVOICE_FIELD_MUTATIONS = (
    _delete("data", "invoice_id"),
    _delete("data", "tenant_id"),
    _set("inv_short", "data", "invoice_id"),
)

_CUSTOMER_FIELD_MUTATIONS = (
    _delete("data", "customer_id"),
    _delete("data", "tenant_id"),
    _set("cus_short", "data", "customer_id"),
)

GENERIC_MUTATIONS = [
    pytest.param(_INVOICE_FIELD_MUTATIONS[0], id="missing-data.invoice_id"),
    pytest.param(_INVOICE_FIELD_MUTATIONS[1], id="missing-data.tenant_id"),
    pytest.param(_set("surprise", "data", "unexpected_field"), id="unknown-property-in-data"),
    pytest.param(_set("x", "partitionkey"), id="unknown-envelope-property"),
    pytest.param(_set("0.3", "specversion"), id="bad-specversion"),
    pytest.param(_set(1.0, "specversion"), id="specversion-as-number"),
    pytest.param(_other_event_type, id="type-of-another-event"),
    pytest.param(_set("/somewhere-else", "source"), id="wrong-source"),
    pytest.param(_set("not-a-uuid", "id"), id="id-not-uuid"),
    pytest.param(_set("2026-11-23T10:00:00+01:00", "time"), id="time-not-utc"),
    pytest.param(_set("INV-2026-00412", "subject"), id="subject-not-invoice-id"),
    pytest.param(_INVOICE_FIELD_MUTATIONS[2], id="malformed-invoice-id"),
    pytest.param(_set("text/plain", "datacontenttype"), id="bad-datacontenttype"),
    pytest.param(_set("00-abc-def-01", "traceparent"), id="bad-traceparent"),
    pytest.param(_delete("data"), id="missing-data"),
]


@pytest.mark.parametrize("mutate", GENERIC_MUTATIONS)
@pytest.mark.parametrize("name", EVENT_NAMES)
def test_generic_mutation_is_rejected(name: str, mutate: Callable[[dict[str, Any]], None], registry: Registry) -> None:
    message = _base_example(name)
    if message["subject"].startswith("_") and mutate in _INVOICE_FIELD_MUTATIONS:
        pytest.skip("a system event has no invoice fields (its own fields: SPECIFIC_MUTATIONS)")
    if message["subject"].startswith("cus_") and mutate in _INVOICE_FIELD_MUTATIONS:  # keyed by customer
        mutate = _CUSTOMER_FIELD_MUTATIONS[_INVOICE_FIELD_MUTATIONS.index(mutate)]
    mutate(message)
    assert not _validator(name, registry).is_valid(message)


SPECIFIC_MUTATIONS = [
    pytest.param(
        "PaymentsWatermark", _set("inv_01JD4Q3X8Y9Z0A1B2C3D4E5F6G", "subject"), id="Watermark-invoice-subject"
    ),
    pytest.param("PaymentsWatermark", _set("ten_1", "tenantid"), id="Watermark-tenant"),
    pytest.param("PaymentsWatermark", _set({"0": -1}, "data", "payments_offsets"), id="Watermark-negative-offset"),
    pytest.param("PaymentsWatermark", _set({"p0": 1}, "data", "invoice_positions"), id="Watermark-partition-name"),
    pytest.param("PaymentsWatermark", _set("2026-11-23T10:15:00+01:00", "data", "watermark"), id="Watermark-not-utc"),
    pytest.param("InvoiceIssued", _money_as_number("data", "amount_due"), id="InvoiceIssued-amount_due-as-number"),
    pytest.param("InvoiceIssued", _set("1250.0001", "data", "amount_due"), id="InvoiceIssued-amount-4-decimals"),
    pytest.param("InvoiceIssued", _set("1,250.00", "data", "amount_due"), id="InvoiceIssued-amount-thousands-sep"),
    pytest.param("InvoiceIssued", _set("eur", "data", "currency"), id="InvoiceIssued-lowercase-currency"),
    pytest.param("InvoiceIssued", _set("not-an-email", "data", "customer", "email"), id="InvoiceIssued-bad-email"),
    pytest.param("InvoiceIssued", _set("16/11/2026", "data", "due_date"), id="InvoiceIssued-bad-date"),
    pytest.param("InvoiceIssued", _set("2026-02-30", "data", "due_date"), id="InvoiceIssued-impossible-date"),
    pytest.param("InvoiceIssued", _set({"n": 1}, "data", "metadata"), id="InvoiceIssued-metadata-non-string"),
    pytest.param(
        "InvoiceIssued",
        _set({f"k{i}": "v" for i in range(51)}, "data", "metadata"),
        id="InvoiceIssued-metadata-51-keys",
    ),
    pytest.param("InvoiceIssued", _set("x", "data", "customer", "vip"), id="InvoiceIssued-unknown-customer-prop"),
    pytest.param("InvoiceIssued", _delete("data", "payment_url"), id="InvoiceIssued-missing-payment_url"),
    pytest.param("PaymentReceived", _money_as_number("data", "amount"), id="PaymentReceived-amount-as-number"),
    pytest.param("PaymentReceived", _set(0, "data", "balance_remaining"), id="PaymentReceived-balance-as-int"),
    pytest.param("PaymentReceived", _set("paypal", "data", "source"), id="PaymentReceived-unknown-source"),
    pytest.param("PaymentReceived", _set("yes", "data", "settled"), id="PaymentReceived-settled-not-bool"),
    pytest.param(
        "StageEscalated", _money_as_number("data", "invoice", "amount_due"), id="StageEscalated-amount-as-number"
    ),
    pytest.param("StageEscalated", _set("fax", "data", "channel"), id="StageEscalated-unknown-channel"),
    pytest.param("DunningPlanned", _set(0, "data", "policy_version"), id="DunningPlanned-policy_version-0"),
    pytest.param("DunningPlanned", _set("done", "data", "stages", 0, "state"), id="DunningPlanned-bad-stage-state"),
    pytest.param("DunningPlanned", _set("Soft", "data", "stages", 0, "stage"), id="DunningPlanned-bad-stage-name"),
    pytest.param("StagesCancelled", _set("invoice_paid", "data", "reason"), id="StagesCancelled-unknown-reason"),
    pytest.param("ReminderSent", _set("abc", "data", "delivery_id"), id="ReminderSent-bad-delivery_id"),
    pytest.param("ReminderFailed", _set(0, "data", "attempts"), id="ReminderFailed-attempts-0"),
    pytest.param("ReminderFailed", _set("x" * 2001, "data", "error"), id="ReminderFailed-error-too-long"),
    pytest.param("StageEscalated", _set({"amount": 1}, "data", "context"), id="StageEscalated-context-number"),
    pytest.param("StageEscalated", _set({"Kind": "x"}, "data", "context"), id="StageEscalated-context-bad-key"),
    pytest.param("HoldPlaced", _set("hold_01JDR5T7V9X1Z3B5D7F9H1K3M5", "data", "hold_id"), id="HoldPlaced-bad-hold_id"),
    pytest.param("HoldPlaced", _set("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "subject"), id="HoldPlaced-keyed-by-invoice"),
    pytest.param("HoldPlaced", _set("", "data", "reason"), id="HoldPlaced-empty-reason"),
    pytest.param("HoldPlaced", _set("x" * 501, "data", "reason"), id="HoldPlaced-reason-too-long"),
    pytest.param("HoldPlaced", _set("2026-12-15", "data", "ends_at"), id="HoldPlaced-ends_at-a-date"),
    pytest.param("HoldReleased", _delete("data", "invoice_id"), id="HoldReleased-invoice_id-absent"),
    pytest.param("DisputeOpened", _set("prm_01JDC2E4G6J8M0P2R4T6W8Y0A2", "data", "dispute_id"), id="Dispute-bad-id"),
    pytest.param("DisputeOpened", _money_as_number("data", "disputed_amount"), id="DisputeOpened-amount-as-number"),
    pytest.param("DisputeResolved", _set("withdrawn", "data", "outcome"), id="DisputeResolved-unknown-outcome"),
    pytest.param("DisputeResolved", _set("rejected", "data", "outcome"), id="DisputeResolved-rejected-with-credit"),
    pytest.param("PromiseMade", _set("2026-12-15T00:00:00Z", "data", "promised_date"), id="PromiseMade-date-instant"),
    pytest.param("PromiseMade", _set("cus_01JC7N9P1Q3R5S7T9V1W3X5Y7Z", "subject"), id="PromiseMade-keyed-by-customer"),
    pytest.param("PromiseMade", _set("2026-12-11", "data", "due_by"), id="PromiseMade-due_by-a-date"),
    pytest.param("PromiseMade", _set("2026-12-11T17:00:00+00:00", "data", "due_by"), id="PromiseMade-due_by-not-utc"),
    pytest.param("PromiseMade", _set(None, "data", "due_by"), id="PromiseMade-due_by-null"),
    pytest.param("PaymentPlanAgreed", _set([], "data", "instalments"), id="Plan-no-instalments"),
    pytest.param("PaymentPlanAgreed", _set(0, "data", "instalments", 0, "number"), id="Plan-instalment-0"),
    pytest.param("PaymentPlanAgreed", _set([], "data", "invoices"), id="Plan-no-invoices"),
    pytest.param("PaymentPlanCancelled", _set([], "data", "invoice_ids"), id="PlanCancelled-no-invoices"),
    pytest.param("DunningPaused", _set("invoice_settled", "data", "cause"), id="Paused-terminal-cause"),
    pytest.param("DunningPaused", _set("stg_01JCQ4ZA1B2C3D4E5F6G7H8J9P", "data", "cause_id"), id="Paused-bad-cause_id"),
    pytest.param("DunningPaused", _set(None, "data", "cause_event_id"), id="Paused-no-cause-event"),
    pytest.param("DunningResumed", _set("burst", "data", "resume_mode"), id="Resumed-unknown-mode"),
    pytest.param("DunningResumed", _set("paused", "data", "stages", 0, "state"), id="Resumed-stage-paused"),
    pytest.param("PromiseBroken", _delete("data", "deadline"), id="PromiseBroken-no-deadline"),
    pytest.param("InstalmentMissed", _set("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "subject"), id="Missed-keyed-by-invoice"),
    pytest.param("PaymentPlanBroken", _set(0, "data", "missed_instalment"), id="PlanBroken-instalment-0"),
    pytest.param("PaymentPlanCompleted", _money_as_number("data", "total"), id="PlanCompleted-total-as-number"),
    pytest.param("ReminderCancelled", _set(-1, "data", "attempts"), id="ReminderCancelled-negative-attempts"),
    pytest.param("ReminderCancelled", _set("hold_expired", "data", "reason"), id="ReminderCancelled-unknown-reason"),
    pytest.param("StopsWatermark", _set("_payments", "subject"), id="StopsWatermark-payments-subject"),
    pytest.param("StopsWatermark", _set("ten_1", "tenantid"), id="StopsWatermark-tenant"),
    pytest.param("StopsWatermark", _set({"dunning.invoices.v1": {"0": -1}}, "data", "offsets"), id="Stops-offset"),
    pytest.param("StopsWatermark", _set({"invoices": {"0": 1}}, "data", "offsets"), id="StopsWatermark-topic-name"),
    # issue 10: the customer's country, subdivision, tags and attributes (optional, but well-formed when given)
    pytest.param("InvoiceIssued", _set("de", "data", "customer", "country"), id="Customer-lowercase-country"),
    pytest.param("InvoiceIssued", _set("DEU", "data", "customer", "country"), id="Customer-alpha3-country"),
    pytest.param(
        "InvoiceIssued", _set("DE-BY", "data", "customer", "subdivision"), id="Customer-subdivision-with-country"
    ),
    pytest.param("InvoiceIssued", _set(["Strategic"], "data", "customer", "tags"), id="Customer-uppercase-tag"),
    pytest.param("InvoiceIssued", _set(["vip", "vip"], "data", "customer", "tags"), id="Customer-duplicate-tags"),
    pytest.param(
        "InvoiceIssued", _set([f"t{i}" for i in range(21)], "data", "customer", "tags"), id="Customer-21-tags"
    ),
    pytest.param("InvoiceIssued", _set("vip", "data", "customer", "tags"), id="Customer-tags-a-string"),
    pytest.param("InvoiceIssued", _set({"tier": 1}, "data", "customer", "attributes"), id="Customer-attribute-number"),
    pytest.param(
        "InvoiceIssued", _set({"Tier": "a"}, "data", "customer", "attributes"), id="Customer-attribute-bad-key"
    ),
    pytest.param(
        "InvoiceIssued", _set({"a": "x" * 201}, "data", "customer", "attributes"), id="Customer-attribute-long"
    ),
    pytest.param("StageEscalated", _set("eu", "data", "customer", "country"), id="StageEscalated-customer-country"),
    pytest.param("InvoiceUpdated", _set("eu", "data", "customer", "country"), id="InvoiceUpdated-customer-country"),
    pytest.param("CustomerUpdated", _set("Germany", "data", "country"), id="CustomerUpdated-country-name"),
    pytest.param("CustomerUpdated", _set(["vat_id"], "data", "changed"), id="CustomerUpdated-unknown-change"),
    pytest.param("CustomerUpdated", _set(["A B"], "data", "tags"), id="CustomerUpdated-bad-tag"),
    # issue 10: segment, moved, notice_id, charges
    pytest.param("DunningPlanned", _set({"rule": "small"}, "data", "segment"), id="DunningPlanned-segment-no-reason"),
    pytest.param(
        "DunningPlanned", _set({"rule": "", "reason": "x"}, "data", "segment"), id="DunningPlanned-segment-empty"
    ),
    pytest.param("DunningPlanned", _set("", "data", "stages", 1, "moved"), id="DunningPlanned-moved-empty"),
    pytest.param("DunningPlanned", _set("x" * 501, "data", "stages", 1, "moved"), id="DunningPlanned-moved-too-long"),
    pytest.param("StageEscalated", _set("ntc_123", "data", "notice_id"), id="StageEscalated-bad-notice_id"),
    pytest.param(
        "StageEscalated", _set({"currency": "EUR", "fee": "1.00"}, "data", "charges"), id="Charges-unknown-key"
    ),
    pytest.param("StageEscalated", _set({"late_fee": "40.00"}, "data", "charges"), id="Charges-without-currency"),
    pytest.param("StageEscalated", _money_as_number("data", "charges", "total_due"), id="Charges-total-as-number"),
    pytest.param("StageEscalated", _set("30/360", "data", "charges", "day_count"), id="Charges-unknown-day-count"),
    pytest.param("StageEscalated", _set("10,15", "data", "charges", "annual_rate"), id="Charges-rate-comma"),
    pytest.param("StageEscalated", _set("02.03.2026", "data", "charges", "interest_to"), id="Charges-bad-date"),
    pytest.param("ReminderSent", _set("ntc_", "data", "notice_id"), id="ReminderSent-bad-notice_id"),
    pytest.param("ReminderFailed", _set("notice-1", "data", "notice_id"), id="ReminderFailed-bad-notice_id"),
    pytest.param("ReminderCancelled", _set(1, "data", "notice_id"), id="ReminderCancelled-notice_id-number"),
    # issue 10: the new events
    pytest.param("StageDeferred", _set("holiday", "data", "reason"), id="Deferred-unknown-reason"),
    pytest.param("StageDeferred", _set("", "data", "detail"), id="Deferred-empty-detail"),
    pytest.param("StageDeferred", _set([], "data", "stages"), id="Deferred-no-stage"),
    pytest.param("StageDeferred", _set("cancelled", "data", "stages", 0, "state"), id="Deferred-stage-cancelled"),
    pytest.param("StageDeferred", _set(None, "data", "stages", 0, "scheduled_at"), id="Deferred-no-new-time"),
    pytest.param("StageDeferred", _delete("data", "customer_id"), id="Deferred-no-customer"),
    pytest.param("NoticeComposed", _set("inv_01KG3M5P7R9T1V3X5Z7B9D1F3H", "subject"), id="Notice-keyed-by-invoice"),
    pytest.param("NoticeComposed", _set("not_01KJ4N6Q8S0U2W4Y6A8C0E2G4J", "data", "notice_id"), id="Notice-bad-id"),
    pytest.param("NoticeComposed", _set([], "data", "items"), id="Notice-no-items"),
    pytest.param("NoticeComposed", _delete("data", "items", 2, "stage_id"), id="Notice-item-stage_id-absent"),
    pytest.param("NoticeComposed", _money_as_number("data", "items", 0, "invoice", "balance"), id="Notice-balance-num"),
    pytest.param("NoticeComposed", _set("x", "data", "items", 0, "invoice", "vat"), id="Notice-invoice-unknown-prop"),
    pytest.param("NoticeComposed", _set("fax", "data", "channel"), id="Notice-unknown-channel"),
    pytest.param("NoticeComposed", _delete("data", "customer"), id="Notice-no-customer"),
    pytest.param("LateChargesAssessed", _money_as_number("data", "interest"), id="Charges-interest-as-number"),
    pytest.param("LateChargesAssessed", _set("40.0001", "data", "late_fee"), id="Charges-fee-4-decimals"),
    pytest.param("LateChargesAssessed", _set("30E/360", "data", "day_count"), id="Charges-day-count"),
    pytest.param("LateChargesAssessed", _set(0, "data", "periods", 0, "days"), id="Charges-period-0-days"),
    pytest.param("LateChargesAssessed", _set(3.89, "data", "periods", 0, "amount"), id="Charges-amount-as-number"),
    pytest.param("LateChargesAssessed", _set(10.15, "data", "periods", 0, "annual_rate"), id="Charges-rate-as-number"),
    pytest.param("LateChargesAssessed", _delete("data", "interest_from"), id="Charges-interest_from-absent"),
    pytest.param("LateChargesAssessed", _set("2026-03-02T00:00:00Z", "data", "interest_to"), id="Charges-to-instant"),
    pytest.param("LateChargesWaived", _set("", "data", "reason"), id="Waived-empty-reason"),
    pytest.param("LateChargesWaived", _delete("data", "waived_by"), id="Waived-by-nobody"),
    pytest.param("LateChargesWaived", _money_as_number("data", "late_fees"), id="Waived-fees-as-number"),
    pytest.param("NoticeSent", _set("inv_01KG3M5P7R9T1V3X5Z7B9D1F3H", "subject"), id="NoticeSent-keyed-by-invoice"),
    pytest.param("NoticeSent", _set([], "data", "invoice_ids"), id="NoticeSent-no-invoice"),
    pytest.param("NoticeSent", _set(["RE-2026-031"], "data", "left_out"), id="NoticeSent-left_out-not-an-id"),
    pytest.param("NoticeSent", _delete("data", "left_out"), id="NoticeSent-left_out-absent"),
]


@pytest.mark.parametrize(("name", "mutate"), SPECIFIC_MUTATIONS)
def test_specific_mutation_is_rejected(name: str, mutate: Callable[[dict[str, Any]], None], registry: Registry) -> None:
    message = _base_example(name)
    mutate(message)
    assert not _validator(name, registry).is_valid(message)


def test_a_terminal_stop_with_nothing_left_and_a_stage_without_context_are_valid(registry: Registry) -> None:
    """Compatible widenings of issue 9: StagesCancelled may list no stage; StageEscalated.context and
    PromiseMade.due_by are optional."""
    cancelled = _base_example("StagesCancelled")
    cancelled["data"]["stages"] = []
    assert _validator("StagesCancelled", registry).is_valid(cancelled)
    escalated = _base_example("StageEscalated")
    escalated["data"].pop("context", None)
    assert _validator("StageEscalated", registry).is_valid(escalated)
    promise = _base_example("PromiseMade")
    assert "due_by" in promise["data"]  # the richest example is a promise by an instant ...
    del promise["data"]["due_by"]  # ... and one by a day (every PromiseMade before `due_by`) is valid too
    assert _validator("PromiseMade", registry).is_valid(promise)


def test_the_fields_added_by_issue_10_are_optional(registry: Registry) -> None:
    """Compatible widenings of issue 10: events without the new fields (every event before them) stay valid."""
    added = {
        "InvoiceIssued": [
            ("customer", "country"),
            ("customer", "subdivision"),
            ("customer", "tags"),
            ("customer", "attributes"),
        ],
        "CustomerUpdated": [("country",), ("subdivision",), ("tags",), ("attributes",)],
        "DunningPlanned": [("segment",)],
        "StageEscalated": [("notice_id",), ("charges",), ("customer", "country"), ("customer", "tags")],
        "ReminderSent": [("notice_id",)],
    }
    for name, paths in added.items():
        message = _base_example(name)
        for path in paths:
            node = message["data"]
            for key in path[:-1]:
                node = node[key]
            assert path[-1] in node, f"{name}: the richest example shows {'.'.join(path)}"
            del node[path[-1]]
        for stage in message["data"].get("stages", []):
            stage.pop("moved", None)
        assert _validator(name, registry).is_valid(message), name


def _examples_data(name: str) -> list[dict[str, Any]]:
    return [_load_json(p)["data"] for p in _examples_of(name)]


def test_late_charges_examples_add_up_to_the_cent() -> None:
    """Each example's periods are contiguous, exact (ACT/365F: principal x rate x days / 36500), and their
    sum rounded half up to the currency's minor unit once is the total; the hand case of issue 10 included.
    Exact = 34 significant digits, as the scheduler's charges computes them."""
    hand_case_seen = False
    for data in _examples_data("LateChargesAssessed"):
        periods = data["periods"]
        if data["interest_from"] is None:
            assert periods == [] and data["interest_to"] is None and data["day_count"] is None
            assert Decimal(data["total_interest"]) == 0
            continue
        assert periods[0]["start"] == data["interest_from"] and periods[-1]["end"] == data["interest_to"]
        for before, after in zip(periods, periods[1:], strict=False):
            assert date.fromisoformat(after["start"]).toordinal() == date.fromisoformat(before["end"]).toordinal() + 1
        exact = Decimal(0)
        for period in periods:
            days = date.fromisoformat(period["end"]).toordinal() - date.fromisoformat(period["start"]).toordinal() + 1
            assert period["days"] == days
            assert data["day_count"] == "ACT/365F"  # the examples' convention
            amount = _EXACT.divide(
                _EXACT.multiply(Decimal(period["principal"]) * Decimal(period["annual_rate"]), days), 36500
            )
            assert Decimal(period["amount"]) == amount
            exact += amount
        unit = Decimal(1).scaleb(-exponent(data["currency"]))
        assert Decimal(data["total_interest"]) == exact.quantize(unit, rounding=ROUND_HALF_UP)
        if data["currency"] == "EUR" and data["interest_from"] == "2026-02-01":
            # 1000.00 EUR due 2026-01-31, 400.00 acknowledged on 2026-02-15, 10.15 % ACT/365F to 2026-03-02
            assert [p["days"] for p in periods] == [14, 16] and data["total_interest"] == "6.56"
            assert (Decimal("1000.00") * Decimal("10.15") * 30 / 36500).quantize(unit, ROUND_HALF_UP) == Decimal("8.34")
            hand_case_seen = True
    assert hand_case_seen


def test_notice_examples_list_the_firing_stages_first_and_quote_consistent_charges() -> None:
    for data in _examples_data("NoticeComposed"):
        with_stage = [item["stage_id"] is not None for item in data["items"]]
        assert with_stage[0] and with_stage == sorted(with_stage, reverse=True)  # stages first, then overdue only
        for item in data["items"]:
            stage_fields = [item[k] is None for k in ("stage_id", "stage", "sequence", "template")]
            assert len(set(stage_fields)) == 1  # all set, or all null
        assert len({item["invoice_id"] for item in data["items"]}) == len(data["items"])
    for data in _examples_data("NoticeSent"):
        assert not set(data["invoice_ids"]) & set(data["left_out"])
    quoted = [
        (i["invoice"], i["charges"]) for d in _examples_data("NoticeComposed") for i in d["items"] if "charges" in i
    ]
    quoted += [(d["invoice"], d["charges"]) for d in _examples_data("StageEscalated") if "charges" in d]
    assert quoted
    for invoice, charges in quoted:
        assert charges["currency"] == invoice["currency"]
        extra = sum(Decimal(charges.get(k, "0")) for k in ("total_late_fees", "total_interest"))
        assert Decimal(charges["total_due"]) == Decimal(invoice["balance"]) + extra


# --- topic catalogue -------------------------------------------------------------------


@pytest.fixture(scope="module")
def topics() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in TOPIC_FILES}


def test_expected_topics(topics: dict[str, dict[str, Any]]) -> None:
    assert set(topics) == {
        "dunning.invoices.v1",
        "dunning.customers.v1",
        "dunning.payments.v1",
        "dunning.stages.v1",
        "dunning.deliveries.v1",
        "dunning.deadletter.v1",
        "dunning.watermarks.v1",
    }


@pytest.mark.parametrize("path", TOPIC_FILES, ids=lambda p: p.stem)
def test_topic_entry_shape(path: Path) -> None:
    entry = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert entry["topic"] == path.stem
    required = {"topic", "description", "key", "partitions", "producers", "consumers", "events"}
    required |= {"compatibility", "retention"}
    assert required <= set(entry)
    # invoice topics are spread by invoice id; the watermarks are one ordered stream of statements
    assert entry["partitions"] == (1 if entry["topic"] == "dunning.watermarks.v1" else 6)
    assert entry["compatibility"] == "a breaking change is a new version, never an edit"
    assert entry["producers"]
    if entry["events"]:  # every schema'd topic is keyed by invoice id, but customers and the watermarks
        keys = {
            "dunning.watermarks.v1": "_payments | _invoice-ingest | _scheduler",
            "dunning.customers.v1": "customer_id",
        }
        assert entry["key"] == keys.get(entry["topic"], "invoice_id")
        carried = {e["name"] for e in entry["events"]}
        for consumer in entry["consumers"]:
            assert consumer["service"] and consumer["group"]
            assert set(consumer["events"]) <= carried


def test_deadletter_topic_documents_headers(topics: dict[str, dict[str, Any]]) -> None:
    dlq = topics["dunning.deadletter.v1"]
    assert dlq["events"] == []
    assert set(dlq["headers"]) == {
        "x-dlq-reason",
        "x-dlq-error",
        "x-dlq-original-topic",
        "x-dlq-original-partition",
        "x-dlq-original-offset",
        "x-dlq-consumer-group",
    }


def test_topic_events_exist_and_each_event_is_in_exactly_one_topic(topics: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, list[str]] = {}
    for topic, entry in topics.items():
        for event in entry["events"]:
            path = EVENTS_DIR / f"{event['name']}.v{event['version']}.schema.json"
            assert path.is_file(), f"{topic} names {event['name']} v{event['version']} but {path.name} is missing"
            assert event.get("type", f"dunning.{event['name']}.v{event['version']}") == (
                f"dunning.{event['name']}.v{event['version']}"
            )
            seen.setdefault(path.name, []).append(topic)
    for path in EVENTS_DIR.glob("*.schema.json"):
        assert len(seen.get(path.name, [])) == 1, f"{path.name} is in topics {seen.get(path.name, [])}"


# --- AsyncAPI ------------------------------------------------------------------------


def test_asyncapi_names_every_topic_and_event(topics: dict[str, dict[str, Any]]) -> None:
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert str(doc["asyncapi"]).startswith("3.")
    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert set(topics) <= addresses
    for op in doc["operations"].values():
        assert op["action"] in {"send", "receive"}
        assert op["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]
    payload_refs = {
        m["payload"]["schema"]["$ref"]
        for m in doc["components"]["messages"].values()
        if isinstance(m["payload"], dict) and "schema" in m["payload"]
    }
    for ref in payload_refs:
        assert (SCHEMAS / ref).resolve().is_file(), ref
    assert {f"./events/{n}.v1.schema.json" for n in EVENT_NAMES} <= payload_refs


def test_records_built_the_way_the_services_build_them_are_valid() -> None:
    """The new records, filled with values as Python computes them (a 34-digit exact amount, a tiny one
    Decimal writes with an exponent, a rate read back with trailing zeros, JPY without decimals), make
    events their schemas accept."""
    at = datetime(2026, 3, 2, 8, 0, 0, 412000, tzinfo=UTC)
    tiny = _EXACT.divide(Decimal("0.01") * Decimal("0.01"), 36500)
    assert "E" in str(tiny)  # written with an exponent: the schema's exact amount allows it
    customer = c.Customer(
        "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", "C-1", "Brandt", "ap@brandt.example", "de-DE", "Europe/Berlin",
        "DE", "BY", ("strategic",), {"industry": "construction"},
    )  # fmt: skip
    invoice = c.StageInvoice("RE-1", "INV-1", "JPY", Decimal("158000"), Decimal("158000"), date(2026, 10, 1),
                             date(2026, 10, 31), None)  # fmt: skip
    inv, stg, ntc = "inv_01KG3M5P7R9T1V3X5Z7B9D1F3H", "stg_01KG3M5Q1B3D5F7H9K1M3P5R7T", "ntc_01KJ4N6Q8S0U2W4Y6A8C0E2G4J"
    records = [
        c.LateChargesAssessed(
            inv,
            "ten_1",
            stg,
            "firm",
            "EUR",
            Decimal("40.00"),
            Decimal("6.56"),
            date(2026, 2, 1),
            date(2026, 3, 2),
            "ACT/365F",
            (
                c.InterestPeriod(
                    date(2026, 2, 1),
                    date(2026, 2, 14),
                    14,
                    Decimal("1000.00"),
                    Decimal("10.1500"),
                    _EXACT.divide(_EXACT.multiply(Decimal("1000.00") * Decimal("10.1500"), 14), 36500),
                ),
                c.InterestPeriod(date(2026, 2, 15), date(2026, 2, 15), 1, Decimal("0.01"), Decimal("0.01"), tiny),
            ),
            Decimal("40.00"),
            Decimal("6.56"),
            at,
        ),  # fmt: skip
        c.LateChargesAssessed(
            inv,
            "ten_1",
            stg,
            "soft",
            "GBP",
            Decimal("40.00"),
            Decimal("0.00"),
            None,
            None,
            None,
            (),
            Decimal("40.00"),
            Decimal("0.00"),
            at,
        ),  # fmt: skip
        c.LateChargesWaived(inv, "ten_1", "JPY", Decimal("0"), Decimal("1896"), "goodwill", "api", at),
        c.StageDeferred(
            inv,
            "ten_1",
            customer.customer_id,
            "contact_cap",
            "at most 3 reminders per P7D",
            at,
            (c.RescheduledStage(stg, "firm", 2, "email", at, at.replace(day=4), "scheduled"),),
        ),  # fmt: skip
        c.NoticeComposed(
            ntc,
            "ten_1",
            customer.customer_id,
            "email",
            at,
            customer,
            (
                c.NoticeItem(inv, stg, "firm", 2, "firm", invoice, {"currency": "JPY", "total_due": "158000"}),
                c.NoticeItem("inv_01KN6S8U0W2Y4A6C8E0G2J4L6N", None, None, None, None, invoice, None),
            ),
        ),  # fmt: skip
        c.NoticeSent(ntc, "ten_1", customer.customer_id, "email", "ap@brandt.example", "msg-1", (inv,), (), at),
        c.ReminderSent(
            "dlv_01KJ4N7A9C1E3G5J7L9N1Q3S5U", stg, inv, "ten_1", "firm", "email", "ap@brandt.example", "msg-1", at, ntc
        ),  # fmt: skip
    ]
    for record in records:
        validate(envelope(record, traceparent=False))
