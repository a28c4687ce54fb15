"""The send window checked again when a stage is due: a backlog outside the window is deferred, not
fired (StageDeferred, the timers back to scheduled at the next opening plus the customer's spread),
and fires once the window is open."""

from datetime import datetime, timedelta

import pytest

from dunning.clock import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def h(firing_h):
    return firing_h


ESCALATED, DEFERRED = "dunning.StageEscalated.v1", "dunning.StageDeferred.v1"
NOTICE, ASSESSED = "dunning.NoticeComposed.v1", "dunning.LateChargesAssessed.v1"
RESCHEDULED, WAIVED = "dunning.StagesRescheduled.v1", "dunning.LateChargesWaived.v1"
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"  # the helpers' customer


def closed_window_now() -> dict:
    """A window on every day, an hour long, that does not contain now (customer zone UTC)."""
    hour = utcnow().hour
    start = hour + 2 if hour <= 20 else 1
    every = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return {"days": every, "start": f"{start:02d}:00", "end": f"{start + 1:02d}:00", "spread": "PT30M"}


OPEN_ALL_DAY = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "23:59:59",
                "spread": "PT1H"}  # fmt: skip


def next_opening(window: dict) -> datetime:
    """The next start of `window` after now (UTC zone, every day)."""
    now = utcnow()
    start = now.replace(hour=int(window["start"][:2]), minute=0, second=0, microsecond=0)
    return start if start > now else start + timedelta(days=1)


NOW = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]}]}


async def test_a_backlog_outside_the_window_is_deferred_then_fires_in_it(pool, h):
    await h.use_policy(pool, h.TENANT, NOW)
    window = closed_window_now()
    await h.use_settings(pool, h.TENANT, {"send_window": window})
    customers = ["cus_01JB2F7H9K3M5N7P9Q1R3S5TA1", "cus_01JB2F7H9K3M5N7P9Q1R3S5TB2", "cus_01JB2F7H9K3M5N7P9Q1R3S5TC3"]
    invoices = [await h.issue(pool, customer_id=c, timezone="UTC") for c in customers]
    for invoice in invoices:  # a backlog: due a while ago
        await pool.execute(
            "UPDATE timers SET scheduled_at = now() - interval '3 hours' WHERE invoice_id = $1", invoice["subject"]
        )

    assert await h.fire(pool) == 0
    assert await h.outbox_events(pool, ESCALATED) == []
    opening = next_opening(window)
    spread = timedelta(minutes=30)
    times = set()
    for invoice in invoices:
        rows = await h.timers(pool, invoice["subject"])
        assert {r["state"] for r in rows} == {"scheduled"}
        assert len({r["scheduled_at"] for r in rows}) == 1  # the customer's channels stay together
        [deferred] = await h.outbox_events(pool, DEFERRED, invoice["subject"])
        d = deferred["data"]
        assert d["reason"] == "send_window" and "is outside the send window" in d["detail"]
        assert d["customer_id"] == invoice["data"]["customer"]["customer_id"]
        assert sorted(s["channel"] for s in d["stages"]) == ["email", "sms"]
        new = h.at(d["stages"][0]["scheduled_at"])
        assert opening <= new < opening + spread and new == rows[0]["scheduled_at"]
        assert h.at(d["stages"][0]["previous_scheduled_at"]) < utcnow()
        times.add(new)
    assert len(times) > 1  # spread: not every customer in the same second

    # the window is open now, and the deferred stages fall due: they fire, each once
    await h.use_settings(pool, h.TENANT, {"send_window": OPEN_ALL_DAY})
    for invoice in invoices:
        await h.make_due(pool, invoice["subject"])
    assert await h.fire(pool) == 6
    for invoice in invoices:
        assert {r["state"] for r in await h.timers(pool, invoice["subject"])} == {"fired"}
        assert len(await h.outbox_events(pool, ESCALATED, invoice["subject"])) == 2
        assert len(await h.outbox_events(pool, DEFERRED, invoice["subject"])) == 1
    assert await h.fire(pool) == 0


async def test_without_settings_firing_is_unchanged(pool, h):
    await h.use_policy(pool, h.TENANT, NOW)
    invoice = await h.issue(pool)
    assert await h.fire(pool) == 2
    events = await h.outbox_events(pool, ESCALATED, invoice["subject"])
    assert [e["data"].get("notice_id") for e in events] == [None, None]
    assert [e["data"].get("charges") for e in events] == [None, None]
    assert await h.outbox_events(pool, DEFERRED) == []


async def test_a_customers_own_window_alone_defers_its_stages(pool, h):
    await h.use_policy(pool, h.TENANT, NOW)
    invoice = await h.issue(pool, timezone="UTC")
    other = await h.issue(pool, customer_id="cus_01JB2F7H9K3M5N7P9Q1R3S5TZZ", timezone="UTC")
    window = closed_window_now()
    await pool.execute(
        "INSERT INTO customer_settings (tenant_id, customer_id, send_window, changed_by) VALUES ($1, $2, $3, 'test')",
        h.TENANT,
        CUSTOMER,
        window,
    )
    assert await h.fire(pool) == 2  # the other customer's stage; this one's waits for its window
    assert len(await h.outbox_events(pool, ESCALATED, other["subject"])) == 2
    [deferred] = await h.outbox_events(pool, DEFERRED, invoice["subject"])
    assert deferred["data"]["reason"] == "send_window"
    assert next_opening(window) <= h.at(deferred["data"]["stages"][0]["scheduled_at"])
