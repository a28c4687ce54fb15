"""Consolidated notices against real PostgreSQL and a real SMTP server: one e-mail per notice listing
every invoice with totals per currency, sent once; an invoice stopped before the notice goes is left
out (NoticeSent.left_out), a notice with no stage left is cancelled; the stages' Reminder* events
carry the notice. Events applied through the handler table as the consumer does."""

import asyncio

import pytest

from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
REFUSED = "451 4.3.0 Mailbox temporarily unavailable, try again later"
NBSP = "\xa0"


async def reported(notifier, *subjects: str) -> list[dict]:
    """The notifier's outbox events about these invoices or customers, oldest first."""
    found = []
    for subject in subjects:
        found += await notifier.reported(subject)
    return sorted(found, key=lambda e: e["time"])


def listed(header: str) -> list[str]:
    """The invoice ids of an X-Dunning-Invoice-Ids header (folded when long)."""
    return [part.strip() for part in header.split(",")]


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == f"dunning.{kind}.v1"]


async def test_a_notice_of_three_invoices_is_sent_once_as_one_email_with_totals_per_currency(
    notifier, notice_item, notice_data, stage_data
):
    fee = {"currency": "EUR", "late_fee": "40.00", "total_late_fees": "40.00", "total_due": "1040.00"}
    firm = notice_item(stage="firm", currency="EUR", amount="1000.00", charges=fee)
    soft = notice_item(stage="soft", currency="EUR", amount="2000.00", balance="1500.00")
    overdue = notice_item(stage=None, currency="USD", amount="310.00")
    data = notice_data([firm, soft, overdue])
    for item in (firm, soft):  # the scheduler's StageEscalated of each stage, in the notice: no delivery
        stage = stage_data(stage=item["stage"], invoice_id=item["invoice_id"])
        await notifier.receive(dict(stage, stage_id=item["stage_id"], notice_id=data["notice_id"]))
    await notifier.compose(data)

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "sent")

    assert await notifier.pool.fetchval("SELECT count(*) FROM deliveries") == 0
    [mail] = await notifier.mail_to(data["customer"]["email"])
    assert mail["subject"] == f"3 overdue invoices: EUR{NBSP}2,540.00, USD{NBSP}310.00"
    assert mail["headers"]["X-Dunning-Notice-Id"] == data["notice_id"]
    assert listed(mail["headers"]["X-Dunning-Invoice-Ids"]) == [i["invoice_id"] for i in (firm, soft, overdue)]
    assert mail["message_id"] == f"<{row['delivery_id']}@dunning.invalid>"
    for part in (mail["text"], mail["html"]):
        for item in (firm, soft, overdue):
            assert item["invoice"]["number"] in part
            assert item["invoice"]["payment_url"] in part
        assert "€1,040.00" in part and "€40.00" in part  # the firm invoice's fee and total due
        assert "€1,500.00" in part and "€2,540.00" in part and "$310.00" in part  # a balance, the totals
        assert "overdue" in part
    assert "1. Invoice " + firm["invoice"]["number"] + " (firm)" in mail["text"]
    assert "3. Invoice " + overdue["invoice"]["number"] + " (overdue)" in mail["text"]

    events = await reported(notifier, data["customer_id"], firm["invoice_id"], soft["invoice_id"])
    [sent] = of_type(events, "NoticeSent")
    assert sent["subject"] == data["customer_id"]
    assert sent["data"] == sent["data"] | {
        "notice_id": data["notice_id"],
        "invoice_ids": [firm["invoice_id"], soft["invoice_id"], overdue["invoice_id"]],
        "left_out": [],
        "recipient": data["customer"]["email"],
        "provider_message_id": row["provider_message_id"],
    }
    reminders = of_type(events, "ReminderSent")
    assert sorted((e["data"]["stage_id"], e["data"]["stage"]) for e in reminders) == sorted(
        [(firm["stage_id"], "firm"), (soft["stage_id"], "soft")]
    )
    for e in reminders:
        assert e["data"] == e["data"] | {
            "notice_id": data["notice_id"],
            "delivery_id": row["delivery_id"],
            "provider_message_id": row["provider_message_id"],
            "recipient": data["customer"]["email"],
        }
    assert len(events) == 3  # nothing about the overdue-only invoice but the notice itself
    assert row["attempts"] == 1 and row["left_out"] == [] and len(row["invoice_ids"]) == 3


async def test_the_same_notice_delivered_twice_sends_one_email(notifier, notice_item, notice_data):
    data = notice_data([notice_item(stage="soft"), notice_item(stage=None)])
    envelope = await notifier.compose(data)
    await notifier.redeliver(envelope)  # the broker redelivers
    await notifier.compose(data)  # re-emitted: a new event id, the same notice
    assert await notifier.pool.fetchval("SELECT count(*) FROM notices WHERE notice_id = $1", data["notice_id"]) == 1

    async with notifier.dispatching():
        await notifier.wait_notice(data["notice_id"], "sent")
        await notifier.compose(data)  # and once more after it went
        await asyncio.sleep(0.3)

    assert len(await notifier.mail_to(data["customer"]["email"])) == 1
    events = await reported(notifier, data["customer_id"], data["items"][0]["invoice_id"])
    assert [e["type"] for e in events] == ["dunning.NoticeSent.v1", "dunning.ReminderSent.v1"]


async def test_an_invoice_paid_a_moment_before_the_notice_was_sent_is_left_out(
    notifier, smtp_capture, notice_item, notice_data
):
    kept = notice_item(stage="firm", currency="EUR", amount="700.00")
    paid = notice_item(stage="soft", currency="EUR", amount="300.00")
    overdue = notice_item(stage=None, currency="EUR", amount="50.00")
    data = notice_data([kept, paid, overdue])
    await notifier.compose(data)
    stops: list[dict] = []

    async def first_attempt_refused_as_the_payment_arrives(message):
        if not stops:  # the invoice is paid while the first attempt is on the wire; the server says 451
            stops.append(await notifier.stop("stopped", paid["invoice_id"], reason="invoice_settled"))
            return REFUSED
        return None

    smtp_capture.on_data = first_attempt_refused_as_the_payment_arrives
    async with notifier.dispatching(smtp_capture.port):
        row = await notifier.wait_notice(data["notice_id"], "sent")

    [received] = smtp_capture.accepted  # the refused first attempt was not kept; the retry was sent
    assert received.headers["X-Dunning-Notice-Id"] == data["notice_id"]
    assert listed(received.headers["X-Dunning-Invoice-Ids"]) == [kept["invoice_id"], overdue["invoice_id"]]
    assert row["attempts"] == 2
    assert row["invoice_ids"] == [kept["invoice_id"], overdue["invoice_id"]]
    assert row["left_out"] == [paid["invoice_id"]]

    events = await reported(notifier, data["customer_id"], kept["invoice_id"], paid["invoice_id"])
    [sent] = of_type(events, "NoticeSent")
    assert sent["data"]["invoice_ids"] == [kept["invoice_id"], overdue["invoice_id"]]
    assert sent["data"]["left_out"] == [paid["invoice_id"]]
    [reminder] = of_type(events, "ReminderSent")
    assert reminder["data"]["stage_id"] == kept["stage_id"] and reminder["data"]["notice_id"] == data["notice_id"]
    [cancelled] = of_type(events, "ReminderCancelled")
    assert cancelled["data"] == cancelled["data"] | {
        "stage_id": paid["stage_id"],
        "invoice_id": paid["invoice_id"],
        "notice_id": data["notice_id"],
        "delivery_id": row["delivery_id"],
        "reason": "invoice_settled",
        "cause_event_id": stops[0]["id"],
        "attempts": 1,
    }


async def test_an_invoice_stopped_while_the_notice_waits_is_left_out_and_one_stopped_after_it_went_changes_nothing(
    notifier, notice_item, notice_data
):
    kept, paid = notice_item(stage="soft"), notice_item(stage="soft")
    data = notice_data([kept, paid])
    await notifier.compose(data)
    stop = await notifier.stop("stopped", paid["invoice_id"], reason="invoice_credited")
    [cancelled] = of_type(await notifier.reported(paid["invoice_id"]), "ReminderCancelled")
    assert cancelled["data"]["attempts"] == 0 and cancelled["data"]["cause_event_id"] == stop["id"]

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "sent")
    await notifier.stop("stopped", kept["invoice_id"], reason="invoice_settled")  # after it went

    [mail] = await notifier.mail_to(data["customer"]["email"])
    assert kept["invoice"]["number"] in mail["text"] and paid["invoice"]["number"] not in mail["text"]
    assert mail["subject"] == f"1 overdue invoice: EUR{NBSP}1,000.00"
    assert (await notifier.notice(data["notice_id"]))["state"] == "sent"
    assert row["left_out"] == [paid["invoice_id"]]
    assert of_type(await notifier.reported(kept["invoice_id"]), "ReminderCancelled") == []


async def test_a_notice_whose_stage_invoices_are_all_stopped_is_cancelled_and_nothing_is_sent(
    notifier, notice_item, notice_data
):
    settled, disputed = notice_item(stage="firm"), notice_item(stage="soft")
    overdue = notice_item(stage=None)
    data = notice_data([settled, disputed, overdue], composed_at="2026-11-30T09:00:00.000Z")
    await notifier.stop("stopped", settled["invoice_id"], reason="invoice_settled")  # before the notice arrives
    await notifier.compose(data)
    assert (await notifier.notice(data["notice_id"]))["state"] == "pending"
    pause = await notifier.stop("paused", disputed["invoice_id"], cause="dispute", paused_at="2026-11-30T09:05:00Z")

    row = await notifier.notice(data["notice_id"])
    assert row["state"] == "cancelled" and row["cancel_reason"] == "dispute"
    async with notifier.dispatching():
        await asyncio.sleep(0.5)
    assert (await notifier.notice(data["notice_id"]))["state"] == "cancelled"
    assert await notifier.mail_to(data["customer"]["email"]) == []

    events = await reported(notifier, data["customer_id"], settled["invoice_id"], disputed["invoice_id"])
    assert {e["type"] for e in events} == {"dunning.ReminderCancelled.v1"}
    assert sorted((e["data"]["stage_id"], e["data"]["reason"], e["data"]["notice_id"]) for e in events) == sorted(
        [
            (settled["stage_id"], "invoice_settled", data["notice_id"]),
            (disputed["stage_id"], "dispute", data["notice_id"]),
        ]
    )
    assert [e["data"]["cause_event_id"] for e in events if e["data"]["reason"] == "dispute"] == [pause["id"]]


async def test_a_pause_the_scheduler_applied_before_composing_the_notice_leaves_nothing_out(
    notifier, notice_item, notice_data
):
    planned = notice_item(stage="soft")
    data = notice_data([planned], composed_at="2026-11-30T11:00:00.000Z")
    await notifier.stop("paused", planned["invoice_id"], cause="payment_plan")  # paused at 10:00, before it
    await notifier.compose(data)

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "sent")
    assert row["left_out"] == [] and row["invoice_ids"] == [planned["invoice_id"]]


async def test_a_notice_refused_for_good_reports_each_stage_failed(notifier, notice_item, notice_data):
    data = notice_data([notice_item(stage="soft"), notice_item(stage="firm")], email="nobody@bounce.invalid")
    await notifier.compose(data)

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "failed")

    ids = [i["invoice_id"] for i in data["items"]]
    events = await reported(notifier, data["customer_id"], *ids)
    assert [e["type"] for e in events] == ["dunning.ReminderFailed.v1"] * 2
    assert {e["data"]["notice_id"] for e in events} == {data["notice_id"]}
    assert {e["data"]["delivery_id"] for e in events} == {row["delivery_id"]}
    assert all(e["data"]["permanent"] for e in events)


async def test_a_reminder_with_charges_shows_the_fee_and_interest(notifier, stage_data):
    data = stage_data(stage="soft", currency="EUR", amount="1000.00")
    data["charges"] = {
        "currency": "EUR",
        "late_fee": "40.00",
        "interest": "8.34",
        "total_late_fees": "40.00",
        "total_interest": "8.34",
        "total_due": "1048.34",
        "interest_to": "2026-11-23",
        "day_count": "ACT/365F",
        "annual_rate": "10.15",
    }
    await notifier.receive(data)

    async with notifier.dispatching():
        await notifier.wait_state(data["invoice_id"], "sent")

    [mail] = await notifier.mail_to(data["customer"]["email"])
    for part in (mail["text"], mail["html"]):
        assert "Late fees" in part and "€40.00" in part
        assert "€8.34" in part and f"10.15{NBSP}% a year, ACT/365F, to November 23, 2026" in part
        assert "Total due" in part and "€1,048.34" in part


async def test_the_final_reminder_quotes_the_next_stages_date_and_never_7_days(notifier, stage_data):
    data = stage_data(stage="final", due_date="2026-11-02")
    data["context"] = {"kind": "stage", "next_stage": "collections", "next_stage_on": "2026-12-08"}
    await notifier.receive(data)

    async with notifier.dispatching():
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT state = 'sent' FROM deliveries WHERE invoice_id = $1", data["invoice_id"]
            ),
            what="the final reminder sent",
        )

    [mail] = await notifier.mail_to(data["customer"]["email"])
    for part in (mail["text"], mail["html"]):
        assert "If payment is not received by December 8, 2026" in part
        assert "7 days" not in part


async def test_a_notice_whose_only_stage_is_stopped_mid_attempt_is_cancelled_instead_of_retried(
    notifier, smtp_capture, notice_item, notice_data
):
    paid, overdue = notice_item(stage="final"), notice_item(stage=None)
    data = notice_data([paid, overdue])
    await notifier.compose(data)
    stops: list[dict] = []

    async def refused_as_the_payment_arrives(message):
        stops.append(await notifier.stop("stopped", paid["invoice_id"], reason="invoice_settled"))
        return REFUSED

    smtp_capture.on_data = refused_as_the_payment_arrives
    async with notifier.dispatching(smtp_capture.port):
        row = await notifier.wait_notice(data["notice_id"], "cancelled")
        await asyncio.sleep(0.6)  # past any retry's backoff: nothing more is attempted

    assert len(stops) == 1 and smtp_capture.accepted == []
    assert row["cancel_reason"] == "invoice_settled" and row["attempts"] == 1
    [cancelled] = await reported(notifier, data["customer_id"], paid["invoice_id"])
    assert cancelled["type"] == "dunning.ReminderCancelled.v1"
    assert cancelled["data"] == cancelled["data"] | {
        "stage_id": paid["stage_id"],
        "notice_id": data["notice_id"],
        "attempts": 1,
        "cause_event_id": stops[0]["id"],
    }


async def test_a_notice_whose_lease_ran_out_is_taken_back_and_sent_once(notifier, notice_item, notice_data):
    data = notice_data([notice_item(stage="soft"), notice_item(stage=None)])
    await notifier.compose(data)
    await notifier.pool.execute(  # a replica claimed it and died mid-send
        "UPDATE notices SET state = 'sending', attempts = 1, claimed_until = now() - interval '1 second'"
        " WHERE notice_id = $1",
        data["notice_id"],
    )

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "sent")

    assert row["attempts"] == 2 and row["in_doubt_attempts"] == 1
    assert len(await notifier.mail_to(data["customer"]["email"])) == 1
    events = await reported(notifier, data["customer_id"], data["items"][0]["invoice_id"])
    assert [e["type"] for e in events] == ["dunning.NoticeSent.v1", "dunning.ReminderSent.v1"]
