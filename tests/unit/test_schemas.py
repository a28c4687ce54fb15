"""Contract tests for schemas/: JSON Schemas, examples, topic catalogue, AsyncAPI."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EVENTS_DIR = SCHEMAS / "events"
EXAMPLES_DIR = SCHEMAS / "examples"
TOPICS_DIR = SCHEMAS / "topics"
ENVELOPE_ID = "urn:dunning:schema:envelope:1"


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
    assert len(EVENT_NAMES) == 35
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
        keys = {"dunning.watermarks.v1": "_payments | _invoice-ingest", "dunning.customers.v1": "customer_id"}
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
