"""firing_rules.decide and simulate: window, caps, quiet period, consolidation (pure)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dunning_scheduler.calendars import EVERY_DAY, WorkingCalendar
from dunning_scheduler.firing_rules import ContactLog, Due, consolidation_horizon, decide, simulate
from dunning_scheduler.tenant_settings import parse_settings, parse_window

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = WorkingCalendar(frozenset(range(5)), None, None, frozenset())
WINDOW = parse_window({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"})


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def due(invoice: str, stage: str = "soft", seq: int = 1, channel: str = "email", at: datetime | None = None) -> Due:
    at = at or utc(2026, 12, 7, 8)
    return Due(f"stg_{invoice}_{stage}_{channel}", invoice, "cus_1", stage, seq, channel, at)


def test_outside_the_window_everything_is_deferred_to_the_next_opening_with_the_spread():
    settings = parse_settings({"send_window": WINDOW_DOC})
    # Saturday 2026-12-05 10:00 Berlin: the next opening is Monday 2026-12-07 08:00 Berlin = 07:00 UTC
    now = utc(2026, 12, 5, 9)
    ds = decide([due("a"), due("b")], now=now, settings=settings, window=WINDOW, zone=BERLIN, calendar=WEEKDAYS,
                contacts=ContactLog())  # fmt: skip
    assert len(ds) == 1 and ds[0].kind == "defer" and ds[0].reason == "send_window"
    assert {d.invoice_id for d in ds[0].due} == {"a", "b"}
    assert utc(2026, 12, 7, 7) <= ds[0].at < utc(2026, 12, 7, 8)
    assert ds[0].at == WINDOW.place(now, BERLIN, WEEKDAYS, "cus_1")[0]
    assert "Saturday 10:00 is outside the send window Mon–Fri 08:00–17:00 (Europe/Berlin)" == ds[0].detail


WINDOW_DOC = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"}


def test_inside_the_window_without_caps_each_invoice_stage_fires_as_its_own_contact():
    settings = parse_settings({"send_window": WINDOW_DOC})
    now = utc(2026, 12, 7, 9)  # Monday 10:00 Berlin
    ds = decide([due("a"), due("a", channel="sms"), due("b")], now=now, settings=settings, window=WINDOW,
                zone=BERLIN, calendar=WEEKDAYS, contacts=ContactLog())  # fmt: skip
    assert [(d.kind, sorted(x.channel for x in d.due), d.notice) for d in ds] == [
        ("fire", ["email", "sms"], False),
        ("fire", ["email"], False),
    ]


def test_the_cap_defers_until_the_oldest_contact_leaves_the_period():
    settings = parse_settings({"contact_caps": {"max_reminders": 2, "period": "P7D"}})
    now = utc(2026, 12, 7, 9)
    contacts = ContactLog([utc(2026, 12, 2, 9), utc(2026, 12, 6, 9)])
    ds = decide([due("a")], now=now, settings=settings, window=None, zone=BERLIN, calendar=EVERY_DAY,
                contacts=contacts)  # fmt: skip
    assert [(d.kind, d.reason, d.at) for d in ds] == [("defer", "contact_cap", utc(2026, 12, 9, 9))]
    assert ds[0].detail == "at most 2 reminders per P7D: 2 sent since 2026-12-02T09:00:00Z"
    # one contact in the period: the first invoice's stage fires, the second's is held by the cap
    ds = decide([due("a"), due("b")], now=now, settings=settings, window=None, zone=BERLIN, calendar=EVERY_DAY,
                contacts=ContactLog([utc(2026, 12, 6, 9)]))  # fmt: skip
    assert [(d.kind, [x.invoice_id for x in d.due]) for d in ds] == [("fire", ["a"]), ("defer", ["b"])]
    assert ds[1].at == utc(2026, 12, 13, 9)  # the 2026-12-06 contact leaves the period


def test_a_deferral_by_the_cap_is_placed_in_the_window():
    settings = parse_settings({"contact_caps": {"max_reminders": 1, "period": "P1D"}, "send_window": WINDOW_DOC})
    now = utc(2026, 12, 4, 15)  # Friday 16:00 Berlin
    contacts = ContactLog([utc(2026, 12, 4, 8)])  # Friday 09:00 Berlin: leaves Saturday 09:00 -> Monday opening
    ds = decide([due("a")], now=now, settings=settings, window=WINDOW, zone=BERLIN, calendar=WEEKDAYS,
                contacts=contacts)  # fmt: skip
    assert ds[0].reason == "contact_cap"
    assert utc(2026, 12, 7, 7) <= ds[0].at < utc(2026, 12, 7, 8)


def test_quiet_period_after_the_last_contact():
    settings = parse_settings({"contact_caps": {"quiet_period": "P2D"}})
    now = utc(2026, 12, 7, 9)
    ds = decide([due("a")], now=now, settings=settings, window=None, zone=BERLIN, calendar=EVERY_DAY,
                contacts=ContactLog([utc(2026, 12, 6, 9)]))  # fmt: skip
    assert [(d.kind, d.reason, d.at) for d in ds] == [("defer", "quiet_period", utc(2026, 12, 8, 9))]
    ds = decide([due("a")], now=now, settings=settings, window=None, zone=BERLIN, calendar=EVERY_DAY,
                contacts=ContactLog([utc(2026, 12, 5, 9)]))  # fmt: skip
    assert [d.kind for d in ds] == ["fire"]


def test_consolidation_fires_everything_as_one_notice_one_contact():
    settings = parse_settings(
        {"consolidation": {"enabled": True}, "contact_caps": {"max_reminders": 1, "period": "P7D"}}
    )
    ds = decide([due("a"), due("b"), due("c", channel="sms")], now=utc(2026, 12, 7, 9), settings=settings,
                window=None, zone=BERLIN, calendar=EVERY_DAY, contacts=ContactLog())  # fmt: skip
    assert len(ds) == 1 and ds[0].kind == "fire" and ds[0].notice
    assert {d.invoice_id for d in ds[0].due} == {"a", "b", "c"}


def test_horizon_is_the_end_of_the_opening_or_of_the_local_day():
    now = utc(2026, 12, 7, 9)
    assert consolidation_horizon(now, WINDOW, BERLIN) == utc(2026, 12, 7, 16)
    assert consolidation_horizon(now, None, BERLIN) == utc(2026, 12, 7, 23)


def test_simulate_runs_decide_forward_like_the_loop():
    settings = parse_settings({"contact_caps": {"max_reminders": 1, "period": "P7D"}, "send_window": WINDOW_DOC})
    # Two invoices' stages due Saturday: both deferred to Monday's opening; then one fires, the other waits a week
    timers = {"cus_1": [due("a", at=utc(2026, 12, 5, 9)), due("b", at=utc(2026, 12, 5, 9))]}
    sends = simulate(timers, settings, {"cus_1": WINDOW}, {"cus_1": BERLIN}, {"cus_1": WEEKDAYS}, {},
                     utc(2026, 12, 1))  # fmt: skip
    kinds = [(s.decision.kind, s.decision.reason, [d.invoice_id for d in s.decision.due]) for s in sends]
    assert kinds == [
        ("defer", "send_window", ["a", "b"]),
        ("fire", None, ["a"]),
        ("defer", "contact_cap", ["b"]),
        ("fire", None, ["b"]),
    ]
    monday = sends[1].now
    assert utc(2026, 12, 7, 7) <= monday < utc(2026, 12, 7, 8)
    assert sends[3].now == monday + timedelta(days=7)


def test_simulate_pulls_later_stages_of_the_day_into_the_notice():
    settings = parse_settings({"consolidation": {"enabled": True}})
    timers = {"cus_1": [due("a", at=utc(2026, 12, 7, 8)), due("b", at=utc(2026, 12, 7, 15)),
                        due("c", at=utc(2026, 12, 8, 8))]}  # fmt: skip
    sends = simulate(timers, settings, {}, {"cus_1": BERLIN}, {"cus_1": EVERY_DAY}, {}, utc(2026, 12, 1))
    assert [(s.now, sorted(d.invoice_id for d in s.decision.due)) for s in sends] == [
        (utc(2026, 12, 7, 8), ["a", "b"]),
        (utc(2026, 12, 8, 8), ["c"]),
    ]
