"""The dispatcher against real PostgreSQL and a real SMTP server (aiosmtpd): what the customer gets,
what the other services are told, and what happens when SMTP says no or is not there."""

from datetime import UTC

import pytest

from dunning.events import validate
from dunning_tools.stack.procs import free_port
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


async def delivery_row(pool, invoice_id: str, channel: str = "email"):
    return await pool.fetchrow("SELECT * FROM deliveries WHERE invoice_id = $1 AND channel = $2", invoice_id, channel)


async def wait_state(pool, invoice_id: str, state: str, channel: str = "email"):
    async def check():
        row = await delivery_row(pool, invoice_id, channel)
        return row if row is not None and row["state"] == state else None

    return await async_wait_until(check, what=f"delivery {state}")


async def test_stage_escalated_sends_one_email_and_reports_reminder_sent(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    data = stage_data(stage="firm", locale="de-DE", currency="EUR", amount="1250.00")
    address = data["customer"]["email"]
    await consume(notifier_pool, stage_escalated(data))

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        row = await wait_state(notifier_pool, data["invoice_id"], "sent")

    [mail] = await mail_to(mailserver.api, address)
    assert mail["subject"] == f"Overdue notice: invoice {data['invoice']['number']} is 7 days past due"
    assert mail["from"] == "Accounts Receivable <ar@dunning.localhost>"
    assert mail["message_id"] == f"<{row['delivery_id']}@dunning.invalid>"
    assert mail["headers"]["X-Dunning-Invoice-Id"] == data["invoice_id"]
    assert mail["headers"]["X-Dunning-Stage"] == "firm"
    assert mail["headers"]["X-Dunning-Stage-Id"] == data["stage_id"]
    assert mail["headers"]["X-Dunning-Delivery-Id"] == row["delivery_id"]
    assert mail["headers"]["X-Dunning-Tenant-Id"] == data["tenant_id"]
    assert "1.250,00\xa0€" in mail["text"] and "1.250,00\xa0€" in mail["html"]
    assert data["invoice"]["payment_url"] in mail["text"]

    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    validate(event)
    assert event["type"] == "dunning.ReminderSent.v1"
    assert event["data"]["delivery_id"] == row["delivery_id"]
    assert event["data"]["recipient"] == address
    assert event["data"]["stage"] == "firm" and event["data"]["stage_id"] == data["stage_id"]
    assert event["data"]["provider_message_id"] == row["provider_message_id"]
    assert row["attempts"] == 1 and row["sent_at"] is not None


async def test_redelivered_and_reemitted_events_still_send_one_email(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    data = stage_data(stage="soft")
    envelope = stage_escalated(data)
    await consume(notifier_pool, envelope)
    await consume(notifier_pool, envelope)  # the broker redelivers
    again = dict(data, stage_id=stage_data()["stage_id"], fired_at="2026-11-23T09:00:00Z")
    await consume(notifier_pool, stage_escalated(again))  # a new event id, same invoice/stage/channel
    assert (
        await notifier_pool.fetchval("SELECT count(*) FROM deliveries WHERE invoice_id = $1", data["invoice_id"]) == 1
    )

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        await wait_state(notifier_pool, data["invoice_id"], "sent")
    await consume(notifier_pool, stage_escalated(dict(data)))  # and once more after it was sent

    assert len(await mail_to(mailserver.api, data["customer"]["email"])) == 1
    assert [e["type"] for e in await outbox_events(notifier_pool, data["invoice_id"])] == ["dunning.ReminderSent.v1"]


async def test_recipient_rejected_by_the_server_fails_permanently(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    data = stage_data(email="nobody@bounce.invalid")
    await consume(notifier_pool, stage_escalated(data))

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        row = await wait_state(notifier_pool, data["invoice_id"], "failed")

    assert row["attempts"] == 1  # not retried
    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    validate(event)
    assert event["type"] == "dunning.ReminderFailed.v1"
    assert event["data"]["permanent"] is True
    assert event["data"]["error_code"] == "smtp_550"
    assert "Recipient address rejected" in event["data"]["error"]
    assert event["data"]["recipient"] == "nobody@bounce.invalid"
    assert await mail_to(mailserver.api, "nobody@bounce.invalid") == []


async def test_smtp_down_is_retried_and_sent_once_the_server_is_reachable(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    data = stage_data()
    await consume(notifier_pool, stage_escalated(data))
    closed_port = free_port()

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=closed_port)):

        async def retried_twice():
            row = await delivery_row(notifier_pool, data["invoice_id"])
            return row["state"] == "pending" and row["attempts"] >= 2 and row

        row = await async_wait_until(retried_twice, what="two failed attempts")
    assert row["last_error_code"] == "smtp_connect"
    assert await outbox_events(notifier_pool, data["invoice_id"]) == []  # still trying: nothing to report

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        sent = await wait_state(notifier_pool, data["invoice_id"], "sent")
    assert sent["attempts"] >= 3  # two refused connections at least, then the send
    assert len(await mail_to(mailserver.api, data["customer"]["email"])) == 1
    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    validate(event)
    assert event["type"] == "dunning.ReminderSent.v1"


async def test_gives_up_after_max_attempts_with_a_non_permanent_failure(
    notifier_pool, stage_data, stage_escalated, consume, running_dispatcher, notifier_settings, outbox_events
):
    data = stage_data()
    await consume(notifier_pool, stage_escalated(data))

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=free_port(), max_attempts=3)):
        row = await wait_state(notifier_pool, data["invoice_id"], "failed")

    assert row["attempts"] == 3
    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    validate(event)
    assert event["data"]["permanent"] is False
    assert event["data"]["attempts"] == 3
    assert event["data"]["error_code"] == "smtp_connect"


async def test_expired_lease_goes_back_to_pending_and_is_sent(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    data = stage_data()
    await consume(notifier_pool, stage_escalated(data))
    # A replica claimed it and died before recording anything.
    await notifier_pool.execute(
        "UPDATE deliveries SET state = 'sending', attempts = 1, claimed_until = now() - interval '1 second'"
        " WHERE invoice_id = $1",
        data["invoice_id"],
    )

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        row = await wait_state(notifier_pool, data["invoice_id"], "sent")

    assert row["attempts"] == 2
    assert row["in_doubt_attempts"] == 1 and row["last_in_doubt_at"] is not None  # the dead replica's attempt
    assert len(await mail_to(mailserver.api, data["customer"]["email"])) == 1
    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    assert event["type"] == "dunning.ReminderSent.v1"


async def test_a_live_lease_is_left_alone(
    notifier_pool, mailserver, stage_data, stage_escalated, consume, running_dispatcher, notifier_settings, mail_to
):
    leased, free = stage_data(), stage_data()
    await consume(notifier_pool, stage_escalated(leased))
    await consume(notifier_pool, stage_escalated(free))
    await notifier_pool.execute(
        "UPDATE deliveries SET state = 'sending', attempts = 1, claimed_until = now() + interval '1 hour'"
        " WHERE invoice_id = $1",
        leased["invoice_id"],
    )

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=mailserver.smtp_port)):
        await wait_state(notifier_pool, free["invoice_id"], "sent")

    assert (await delivery_row(notifier_pool, leased["invoice_id"]))["state"] == "sending"
    assert (await delivery_row(notifier_pool, free["invoice_id"]))["in_doubt_attempts"] == 0
    assert await mail_to(mailserver.api, leased["customer"]["email"]) == []


async def test_sms_channel_fails_permanently_as_not_configured(
    notifier_pool, stage_data, stage_escalated, consume, running_dispatcher, notifier_settings, outbox_events
):
    data = stage_data(channel="sms")
    await consume(notifier_pool, stage_escalated(data))

    async with running_dispatcher(notifier_pool, notifier_settings(smtp_port=free_port())):
        row = await wait_state(notifier_pool, data["invoice_id"], "failed", channel="sms")

    assert row["last_error_code"] == "channel_not_configured"
    [event] = await outbox_events(notifier_pool, data["invoice_id"])
    validate(event)
    assert event["type"] == "dunning.ReminderFailed.v1"
    assert event["data"] == event["data"] | {
        "channel": "sms",
        "error_code": "channel_not_configured",
        "permanent": True,
        "recipient": None,
        "attempts": 1,
    }


async def test_two_replicas_send_each_delivery_once(
    notifier_pool,
    mailserver,
    stage_data,
    stage_escalated,
    consume,
    running_dispatcher,
    notifier_settings,
    mail_to,
    outbox_events,
):
    batch = [stage_data(stage=stage) for stage in ("soft", "firm", "final") for _ in range(10)]
    for data in batch:
        await consume(notifier_pool, stage_escalated(data))
    settings = notifier_settings(smtp_port=mailserver.smtp_port, dispatch_concurrency=3)

    async with running_dispatcher(notifier_pool, settings), running_dispatcher(notifier_pool, settings):
        await async_wait_until(
            lambda: notifier_pool.fetchval("SELECT count(*) = $1 FROM deliveries WHERE state = 'sent'", len(batch)),
            what="all sent",
        )

    for data in batch:
        assert len(await mail_to(mailserver.api, data["customer"]["email"])) == 1
        assert [e["type"] for e in await outbox_events(notifier_pool, data["invoice_id"])] == [
            "dunning.ReminderSent.v1"
        ]


async def test_a_stale_worker_cannot_overwrite_a_newer_claim(notifier_pool, stage_data, stage_escalated, consume):
    from datetime import datetime

    from dunning_notifier import repository as repo

    data = stage_data()
    await consume(notifier_pool, stage_escalated(data))
    [first] = await repo.claim_due(notifier_pool, 10, 0.001)  # a worker claims, then stalls past its lease
    await notifier_pool.execute("UPDATE deliveries SET claimed_until = now() - interval '1 second'")
    await repo.release_expired_leases(notifier_pool)
    [second] = await repo.claim_due(notifier_pool, 10, 30)  # another replica takes it over
    assert second["attempts"] == first["attempts"] + 1

    async with notifier_pool.acquire() as conn:
        now = datetime.now(UTC)
        assert await repo.mark_failed(conn, [(first["delivery_id"], first["attempts"], "smtp_550", "late")]) == set()
        assert await repo.mark_sent(conn, [(second["delivery_id"], second["attempts"], "<id>", now)]) == {
            second["delivery_id"]
        }
    assert (await delivery_row(notifier_pool, data["invoice_id"]))["state"] == "sent"
