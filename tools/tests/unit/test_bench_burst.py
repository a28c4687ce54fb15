"""The burst bench's verdict: what was due against what the SMTP server stored."""

import pytest

from dunning_tools.bench.burst import Config, config, policy_at, read_mails, tally

pytestmark = pytest.mark.unit


def mail(stage: str, delivery: str, at: str = "2026-12-07T09:00:01.250000Z") -> dict[str, str]:
    return {
        "x-received-at": at,
        "x-dunning-stage-id": stage,
        "x-dunning-delivery-id": delivery,
        "message-id": f"<{delivery}@dunning.invalid>",
    }


@pytest.mark.parametrize(
    ("mails", "lost", "duplicates", "deliveries"),
    [
        pytest.param([mail("a", "d1"), mail("b", "d2")], 0, 0, 2, id="each stage once"),
        pytest.param([mail("a", "d1")], 1, 0, 1, id="a stage never mailed is lost"),
        pytest.param([mail("a", "d1"), mail("a", "d1"), mail("b", "d2")], 0, 1, 2, id="a delivery sent twice"),
        pytest.param([mail("a", "d1"), mail("a", "d3"), mail("b", "d2")], 0, 1, 3, id="a stage delivered twice"),
        pytest.param([], 2, 0, 0, id="nothing arrived"),
    ],
)
def test_tally_counts_the_lost_and_the_twice(mails, lost, duplicates, deliveries):
    counted = tally(["a", "b"], mails)
    assert (counted["lost"], counted["duplicates"], counted["distinct_delivery_ids"]) == (lost, duplicates, deliveries)


def test_a_stage_keeps_its_first_arrival():
    counted = tally(["a"], [mail("a", "d1", "2026-12-07T09:00:03Z"), mail("a", "d1", "2026-12-07T09:00:02Z")])
    assert counted["first"]["a"] == pytest.approx(1796634002.0)


def test_only_the_tenants_mails_are_read(tmp_path):
    head = "X-Received-At: 2026-12-07T09:00:01Z\r\nX-Dunning-Tenant-Id: {t}\r\nMessage-ID: <d@x>\r\n"
    head += "X-Dunning-Stage-Id: stg_1\r\nX-Dunning-Delivery-Id: d\r\n\r\nbody X-Dunning-Tenant-Id: ten_a\r\n"
    (tmp_path / "1").write_text(head.format(t="ten_a"))
    (tmp_path / "2").write_text(head.format(t="ten_b"))
    (got,) = read_mails(tmp_path, {"1", "2"}, "ten_a")
    assert got["x-dunning-stage-id"] == "stg_1" and got["message-id"] == "<d@x>"


@pytest.mark.parametrize(
    ("at", "send_time", "offset"),
    [
        pytest.param("2026-12-07T09:00:00+00:00", "09:00", "P0D", id="on the minute"),
        pytest.param("2026-12-07T09:00:37+00:00", "09:00", "PT37S", id="seconds into it"),
    ],
)
def test_the_policy_puts_the_stage_at_the_instant(at, send_time, offset):
    from datetime import datetime

    doc = policy_at(datetime.fromisoformat(at))
    assert (doc["anchor"], doc["send_time"], doc["stages"][0]["offset"]) == ("due_date", send_time, offset)
    assert doc["stages"][0]["channels"] == ["email"]


def test_full_size_is_one_round_and_quick_is_small():
    assert (config([]).reminders, config([]).customers, config([]).rounds) == (100_000, 5_000, 1)
    quick = config(["--quick"])
    assert (quick.reminders, quick.customers, quick.rounds) == (5_000, 250, 1)
    assert isinstance(quick, Config) and quick.align == 1
