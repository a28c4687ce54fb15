import copy
import json
import re
import time
from datetime import date, datetime, timezone
from decimal import Decimal

import orjson
import pytest

from dunning.events import InvalidEvent, decode, new_event, schemas_dir, topic_for_type, validate
from dunning.ids import new_id, new_ids

pytestmark = pytest.mark.unit


def example(name: str) -> dict:
    path = sorted((schemas_dir() / "examples" / name / "1").glob("*.json"))[0]
    return json.loads(path.read_text())


def test_new_event_serialises_decimals_dates_and_utc_times_canonically():
    data = copy.deepcopy(example("InvoiceIssued")["data"])
    data["amount_due"] = Decimal("1250.00")
    data["due_date"] = date(2026, 12, 1)
    data["issued_at"] = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    env = new_event("dunning.InvoiceIssued.v1", data, source="/invoice-ingest", subject=data["invoice_id"],
                    tenant_id=data["tenant_id"])
    validate(env)
    assert env["data"]["amount_due"] == "1250.00"
    assert env["data"]["due_date"] == "2026-12-01"
    assert env["data"]["issued_at"] == "2026-11-23T10:00:00Z"
    assert env["time"].endswith("Z")
    event = decode(orjson.dumps(env))
    assert event.subject == data["invoice_id"] and event.name == "InvoiceIssued"


@pytest.mark.parametrize("value,reason", [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"{oops", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "not a JSON object", id="array"),
    pytest.param(b'{"type": "dunning.Nope.v1"}', "unknown event type", id="unknown-type"),
])
def test_decode_refuses_what_can_never_be_processed(value, reason):
    with pytest.raises(InvalidEvent, match=reason):
        decode(value)


def test_decode_names_the_offending_field():
    env = example("PaymentReceived")
    env["data"]["amount"] = 10.5
    with pytest.raises(InvalidEvent, match="data/amount"):
        decode(orjson.dumps(env))


def test_every_event_type_has_a_topic():
    mapping = topic_for_type()
    for name in ("InvoiceIssued", "PaymentReceived", "DunningPlanned", "StageEscalated", "StagesCancelled",
                 "ReminderSent", "ReminderFailed"):
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
