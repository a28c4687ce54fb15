"""The dispatcher against real PostgreSQL and a real SMTP server (aiosmtpd): what the customer gets,
what the other services are told, and what happens when SMTP says no or is not there."""

from datetime import UTC

import pytest

from dunning_tools.stack.procs import free_port
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


async def test_stage_escalated_sends_one_email_and_reports_reminder_sent(notifier, stage_data):
    data = stage_data(stage="firm", locale="de-DE", currency="EUR", amount="1250.00")
    address = data["customer"]["email"]
    await notifier.receive(data)

    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "sent")

    [mail] = await notifier.mail_to(address)
    assert mail["subject"] == f"Mahnung: Rechnung {data['invoice']['number']} ist seit 7 Tagen überfällig"  # de-DE
    assert mail["from"] == "Accounts Receivable <ar@dunning.localhost>"
    assert mail["message_id"] == f"<{row['delivery_id']}@dunning.invalid>"
    assert mail["headers"]["X-Dunning-Invoice-Id"] == data["invoice_id"]
    assert mail["headers"]["X-Dunning-Stage"] == "firm"
    assert mail["headers"]["X-Dunning-Stage-Id"] == data["stage_id"]
    assert mail["headers"]["X-Dunning-Delivery-Id"] == row["delivery_id"]
    assert mail["headers"]["X-Dunning-Tenant-Id"] == data["tenant_id"]
    assert "1.250,00\xa0€" in mail["text"] and "1.250,00\xa0€" in mail["html"]
    assert data["invoice"]["payment_url"] in mail["text"]

    [event] = await notifier.reported(data["invoice_id"])  # checked against its contract
    assert event["type"] == "dunning.ReminderSent.v1"
    assert event["data"]["delivery_id"] == row["delivery_id"]
    assert event["data"]["recipient"] == address
    assert event["data"]["stage"] == "firm" and event["data"]["stage_id"] == data["stage_id"]
    assert event["data"]["provider_message_id"] == row["provider_message_id"]
    assert row["attempts"] == 1 and row["sent_at"] is not None


async def test_redelivered_and_reemitted_events_still_send_one_email(notifier, stage_data):
    data = stage_data(stage="soft")
    envelope = await notifier.receive(data)
    await notifier.redeliver(envelope)  # the broker redelivers
    again = dict(data, stage_id=stage_data()["stage_id"], fired_at="2026-11-23T09:00:00Z")
    await notifier.receive(again)  # a new event id, same invoice/stage/channel
    assert (
        await notifier.pool.fetchval("SELECT count(*) FROM deliveries WHERE invoice_id = $1", data["invoice_id"]) == 1
    )

    async with notifier.dispatching():
        await notifier.wait_state(data["invoice_id"], "sent")
    await notifier.receive(dict(data))  # and once more after it was sent

    assert len(await notifier.mail_to(data["customer"]["email"])) == 1
    assert [e["type"] for e in await notifier.reported(data["invoice_id"])] == ["dunning.ReminderSent.v1"]


async def test_recipient_rejected_by_the_server_fails_permanently(notifier, stage_data):
    data = stage_data(email="nobody@bounce.invalid")
    await notifier.receive(data)

    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "failed")

    assert row["attempts"] == 1  # not retried
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderFailed.v1"
    assert event["data"]["permanent"] is True
    assert event["data"]["error_code"] == "smtp_550"
    assert "Recipient address rejected" in event["data"]["error"]
    assert event["data"]["recipient"] == "nobody@bounce.invalid"
    assert await notifier.mail_to("nobody@bounce.invalid") == []


async def test_smtp_down_is_retried_and_sent_once_the_server_is_reachable(notifier, stage_data):
    data = stage_data()
    await notifier.receive(data)
    closed_port = free_port()

    async with notifier.dispatching(closed_port):

        async def retried_twice():
            row = await notifier.delivery(data["invoice_id"])
            return row["state"] == "pending" and row["attempts"] >= 2 and row

        row = await async_wait_until(retried_twice, what="two failed attempts")
    assert row["last_error_code"] == "smtp_connect"
    assert await notifier.reported(data["invoice_id"]) == []  # still trying: nothing to report

    async with notifier.dispatching():
        sent = await notifier.wait_state(data["invoice_id"], "sent")
    assert sent["attempts"] >= 3  # two refused connections at least, then the send
    assert len(await notifier.mail_to(data["customer"]["email"])) == 1
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderSent.v1"


async def test_gives_up_after_max_attempts_with_a_non_permanent_failure(notifier, stage_data):
    data = stage_data()
    await notifier.receive(data)

    async with notifier.dispatching(free_port(), max_attempts=3):
        row = await notifier.wait_state(data["invoice_id"], "failed")

    assert row["attempts"] == 3
    [event] = await notifier.reported(data["invoice_id"])
    assert event["data"]["permanent"] is False
    assert event["data"]["attempts"] == 3
    assert event["data"]["error_code"] == "smtp_connect"


async def test_expired_lease_goes_back_to_pending_and_is_sent(notifier, stage_data):
    data = stage_data()
    await notifier.receive(data)
    await notifier.leased(data["invoice_id"], seconds_left=-1)  # a replica claimed it and died before recording

    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "sent")

    assert row["attempts"] == 2
    assert row["in_doubt_attempts"] == 1 and row["last_in_doubt_at"] is not None  # the dead replica's attempt
    assert len(await notifier.mail_to(data["customer"]["email"])) == 1
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderSent.v1"


async def test_a_live_lease_is_left_alone(notifier, stage_data):
    leased, free = stage_data(), stage_data()
    await notifier.receive(leased)
    await notifier.receive(free)
    await notifier.leased(leased["invoice_id"], seconds_left=3600)

    async with notifier.dispatching():
        await notifier.wait_state(free["invoice_id"], "sent")

    assert (await notifier.delivery(leased["invoice_id"]))["state"] == "sending"
    assert (await notifier.delivery(free["invoice_id"]))["in_doubt_attempts"] == 0
    assert await notifier.mail_to(leased["customer"]["email"]) == []


async def test_sms_channel_fails_permanently_as_not_configured(notifier, stage_data):
    data = stage_data(channel="sms")
    await notifier.receive(data)

    async with notifier.dispatching(free_port()):
        row = await notifier.wait_state(data["invoice_id"], "failed", channel="sms")

    assert row["last_error_code"] == "channel_not_configured"
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderFailed.v1"
    assert event["data"] == event["data"] | {
        "channel": "sms",
        "error_code": "channel_not_configured",
        "permanent": True,
        "recipient": None,
        "attempts": 1,
    }


async def test_two_replicas_send_each_delivery_once(notifier, stage_data):
    batch = [stage_data(stage=stage) for stage in ("soft", "firm", "final") for _ in range(10)]
    for data in batch:
        await notifier.receive(data)

    async with notifier.dispatching(dispatch_concurrency=3), notifier.dispatching(dispatch_concurrency=3):
        await async_wait_until(
            lambda: notifier.pool.fetchval("SELECT count(*) = $1 FROM deliveries WHERE state = 'sent'", len(batch)),
            what="all sent",
        )

    for data in batch:
        assert len(await notifier.mail_to(data["customer"]["email"])) == 1
        assert [e["type"] for e in await notifier.reported(data["invoice_id"])] == ["dunning.ReminderSent.v1"]


async def test_a_stale_worker_cannot_overwrite_a_newer_claim(notifier, stage_data):
    from datetime import datetime

    from dunning_notifier import repository as repo

    data = stage_data()
    await notifier.receive(data)
    [first] = await repo.claim_due(notifier.pool, 10, 0.001)  # a worker claims, then stalls past its lease
    await notifier.pool.execute("UPDATE deliveries SET claimed_until = now() - interval '1 second'")
    await repo.release_expired_leases(notifier.pool)
    [second] = await repo.claim_due(notifier.pool, 10, 30)  # another replica takes it over
    assert second["attempts"] == first["attempts"] + 1

    async with notifier.pool.acquire() as conn:
        now = datetime.now(UTC)
        to = data["customer"]["email"]
        stale = (first["delivery_id"], first["attempts"], "smtp_550", "late", to, ())
        assert await repo.mark_failed(conn, [stale]) == set()
        assert await repo.mark_sent(conn, [(second["delivery_id"], second["attempts"], "<id>", now, to, ())]) == {
            second["delivery_id"]
        }
    assert (await notifier.delivery(data["invoice_id"]))["state"] == "sent"
