import copy
import json
import re
import time
import typing
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest

from dunning import contracts
from dunning.events import InvalidEvent, decode, envelope, known_types, new_event, schemas_dir, topic_for_type, validate
from dunning.ids import new_id, new_ids

pytestmark = pytest.mark.unit


def example(name: str) -> dict:
    path = sorted((schemas_dir() / "examples" / name / "1").glob("*.json"))[0]
    return json.loads(path.read_text())


def test_new_event_serialises_decimals_dates_and_utc_times_canonically():
    data = copy.deepcopy(example("InvoiceIssued")["data"])
    data["amount_due"] = Decimal("1250.00")
    data["due_date"] = date(2026, 12, 1)
    data["issued_at"] = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    env = new_event(
        "dunning.InvoiceIssued.v1",
        data,
        source="/invoice-ingest",
        subject=data["invoice_id"],
        tenant_id=data["tenant_id"],
    )
    validate(env)
    assert env["data"]["amount_due"] == "1250.00"
    assert env["data"]["due_date"] == "2026-12-01"
    assert env["data"]["issued_at"] == "2026-11-23T10:00:00Z"
    assert env["time"].endswith("Z")
    event = decode(orjson.dumps(env))
    assert event.subject == data["invoice_id"] and event.name == "InvoiceIssued"


@pytest.mark.parametrize(
    "value,reason",
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"{oops", "not JSON", id="not-json"),
        pytest.param(b"[1, 2]", "not a JSON object", id="array"),
        pytest.param(b'{"type": "dunning.Nope.v1"}', "unknown event type", id="unknown-type"),
    ],
)
def test_decode_refuses_what_can_never_be_processed(value, reason):
    with pytest.raises(InvalidEvent, match=reason):
        decode(value)


def test_decode_names_the_offending_field():
    env = example("PaymentReceived")
    env["data"]["amount"] = 10.5
    with pytest.raises(InvalidEvent, match="data/amount"):
        decode(orjson.dumps(env))


EXAMPLES = sorted((schemas_dir() / "examples").glob("*/1/*.json"))


def _instants_as_utc(value):
    """The example's data with every RFC 3339 instant written the way the services write it."""
    if isinstance(value, dict):
        return {k: _instants_as_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instants_as_utc(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", value):
        return contracts.instant_text(datetime.fromisoformat(value))
    return value


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.parent.name}/{p.stem}" for p in EXAMPLES])
def test_every_example_round_trips_through_its_record(path):
    env = json.loads(path.read_text())
    event = decode(path.read_bytes())
    record = event.data
    assert type(record) is contracts.BY_TYPE[env["type"]] and record.TYPE == env["type"]
    assert record.SOURCE == env["source"]
    assert type(record).from_data(record.to_data()) == record
    assert record.to_data() == _instants_as_utc(env["data"])
    again = envelope(record, time=env["time"], event_id=env["id"], traceparent=env.get("traceparent"))
    validate(again)
    assert {k: again.get(k) for k in env if k != "data"} == {k: v for k, v in env.items() if k != "data"}


def _field_types(record_type):
    hints = typing.get_type_hints(record_type)
    return {name: hints[name] for name in record_type._fields}


@pytest.mark.parametrize("record_type", list(contracts.BY_TYPE.values()), ids=lambda t: t.__name__)
def test_records_hold_money_as_decimal_and_time_as_datetime(record_type):
    schema = json.loads((schemas_dir() / "events" / f"{record_type.__name__}.v1.schema.json").read_text())
    data_props = schema["$defs"]["data"]["properties"]
    assert list(record_type._fields) == list(data_props)  # the record's fields follow its schema
    for name, prop in data_props.items():
        ref = prop.get("$ref", "")
        if ref.endswith("/money"):
            assert _field_types(record_type)[name] is Decimal, name
        if ref.endswith("/timestamp"):  # required; or optional: a field added later, defaulting to None
            optional = name not in schema["$defs"]["data"]["required"]
            assert _field_types(record_type)[name] == (datetime | None if optional else datetime), name
            assert optional == (name in record_type._field_defaults), name


def test_every_schema_has_a_record_and_every_record_a_topic():
    assert set(contracts.BY_TYPE) == known_types()
    for record_type in contracts.BY_TYPE.values():
        assert contracts.topic(record_type) == topic_for_type()[record_type.TYPE]


def test_every_event_type_has_a_topic():
    mapping = topic_for_type()
    for name in (
        "InvoiceIssued",
        "PaymentReceived",
        "DunningPlanned",
        "StageEscalated",
        "StagesCancelled",
        "ReminderSent",
        "ReminderFailed",
    ):
        assert f"dunning.{name}.v1" in mapping


def test_ids_are_prefixed_unique_and_carry_their_creation_time():
    shape = re.compile(r"^inv_[0-9A-HJKMNP-TV-Z]{26}$")
    batch = new_ids("inv", 1000)
    singles = [new_id("inv") for _ in range(1000)]
    assert all(shape.fullmatch(i) for i in batch + singles)
    assert len(set(batch + singles)) == 2000

    def millis(i: str) -> int:  # the first 10 Crockford characters are the milliseconds
        return int("".join(f"{'0123456789ABCDEFGHJKMNPQRSTVWXYZ'.index(ch):05b}" for ch in i[4:14]), 2)

    assert abs(millis(new_id("inv")) - time.time() * 1000) < 5_000
    assert millis(singles[0]) <= millis(singles[-1])
