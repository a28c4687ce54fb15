"""None twice, and the one window where a reminder can go out twice, shown happening and counted.

Real PostgreSQL, the real broker, notifiers as processes (`python -m dunning_notifier`) and an SMTP
server (aiosmtpd) inside the test, which counts what it accepted per Message-ID: the customer's
view. The window (dispatcher.py): the SMTP server has accepted a message, the `sent` row has not
committed, and the notifier dies or stalls; the delivery's in_doubt_attempts must then show it.
"""

import asyncio

import asyncpg
import httpx
import pytest

from dunning import tenancy
from dunning.contracts import StageEscalated, topic
from dunning.db import connect
from dunning.events import dumps
from dunning_tools.testing.metrics import samples
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
API_KEY = "dk_testkey_notifier_none_twice_0123"
# A short lease, so that a dead notifier's claim comes back within seconds (the send timeout is
# derived from it: 3 s, so a live send can never outlast the lease).
FAST = dict(
    lease_seconds=6,
    smtp_timeout=1,
    dispatch_concurrency=4,
    poll_seconds=0.05,
    retry_base_seconds=0.2,
    retry_max_seconds=1,
)


async def produce(producer, *envelopes: dict) -> None:
    for envelope in envelopes:
        await producer.send_and_wait(topic(StageEscalated), dumps(envelope), key=envelope["subject"].encode())


async def delivery(pool: asyncpg.Pool, invoice_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM deliveries WHERE invoice_id = $1", invoice_id)


async def wait_sent(pool: asyncpg.Pool, invoice_id: str) -> asyncpg.Record:
    async def sent():
        row = await delivery(pool, invoice_id)
        return row if row is not None and row["state"] == "sent" else None

    return await async_wait_until(sent, timeout=60, what=f"delivery of {invoice_id} sent")


async def test_notifier_killed_after_smtp_accept_before_sent_commit_sends_again_and_shows_in_doubt(
    infra, schema_name, notifier_pool, notifier_process, smtp_capture, stage_data, stage_escalated, producer
):
    data = stage_data(stage="final")
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, data["tenant_id"], "Acme", API_KEY)
    first = await notifier_process(smtp_capture.port, **FAST)
    blocker = await connect(infra.database_url, schema_name)
    held = blocker.transaction()
    killed = asyncio.Event()

    async def kill_after_the_250(message):
        if message.invoice_id != data["invoice_id"] or killed.is_set():
            return None  # accept
        # Hold the delivery row until the process is dead: its `sent` write, which can only start
        # once it has our 250, then cannot commit first, however late the kill lands.
        await held.start()
        killed.set()
        await blocker.execute("SELECT 1 FROM deliveries WHERE delivery_id = $1 FOR UPDATE", message.delivery_id)
        asyncio.get_running_loop().call_later(0.05, first.kill)  # after the 250 below is on the wire
        return None

    smtp_capture.on_data = kill_after_the_250
    try:
        await produce(producer, stage_escalated(data))
        await asyncio.wait_for(killed.wait(), timeout=60)
        await first.wait_exit()
        dead = await delivery(notifier_pool, data["invoice_id"])
    finally:
        if killed.is_set():
            await held.rollback()
        await blocker.close()
    # The kill landed inside the window: the server has the message, the row is still being sent.
    assert len(smtp_capture.copies({data["invoice_id"]})) == 1
    assert (dead["state"], dead["attempts"], dead["in_doubt_attempts"]) == ("sending", 1, 0)

    second = await notifier_process(smtp_capture.port, **FAST)
    row = await wait_sent(notifier_pool, data["invoice_id"])

    message_id = f"<{row['delivery_id']}@dunning.invalid>"
    assert smtp_capture.copies({data["invoice_id"]}) == {message_id: 2}  # the duplicate, same Message-ID
    copies = [m for m in smtp_capture.accepted if m.invoice_id == data["invoice_id"]]
    assert all(m.headers == copies[0].headers for m in copies)
    assert copies[0].headers == copies[0].headers | {
        "X-Dunning-Delivery-Id": row["delivery_id"],
        "X-Dunning-Stage": "final",
        "X-Dunning-Channel": "email",
        "X-Dunning-Stage-Id": data["stage_id"],
        "X-Dunning-Scheduled-At": data["scheduled_at"],
    }
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
        listed = (
            await client.get(
                "/v1/deliveries",
                params={"invoice_id": data["invoice_id"]},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        ).json()["data"]
        gauges = samples((await client.get("/metrics")).text)
    [shown] = listed
    assert shown["delivery_id"] == row["delivery_id"] and shown["state"] == "sent"
    assert shown["attempts"] == 2 and shown["in_doubt_attempts"] == 1  # the duplicate is explained
    assert shown["last_in_doubt_at"] is not None
    assert gauges["dunning_notifier_in_doubt_reclaims_total"] >= 1
    assert gauges["dunning_notifier_in_doubt_attempts"] >= 1


async def test_a_send_whose_reply_never_comes_is_in_doubt_and_sent_again(notifier, smtp_capture, stage_data):
    data = stage_data()
    await notifier.receive(data)
    stalled = asyncio.Event()

    async def answer_too_late_once(message):
        if not stalled.is_set():
            stalled.set()
            await asyncio.sleep(2.5)  # past the client's timeout: the server keeps the message all the same
        return None

    smtp_capture.on_data = answer_too_late_once
    async with notifier.dispatching(smtp_capture.port, smtp_timeout=0.5, smtp_send_timeout=1, lease_seconds=4):
        row = await wait_sent(notifier.pool, data["invoice_id"])
        await async_wait_until(
            lambda: _copies_at_least(smtp_capture, data["invoice_id"], 2), what="the late copy to be stored"
        )

    assert smtp_capture.copies({data["invoice_id"]}) == {f"<{row['delivery_id']}@dunning.invalid>": 2}
    assert (row["attempts"], row["in_doubt_attempts"]) == (2, 1)


async def test_a_refused_message_is_not_in_doubt(notifier, smtp_capture, stage_data):
    data = stage_data()
    await notifier.receive(data)
    refused = asyncio.Event()

    async def refuse_once(message):
        if refused.is_set():
            return None
        refused.set()
        return "451 4.3.0 try again later"  # a reply: the server says it did not take it

    smtp_capture.on_data = refuse_once
    async with notifier.dispatching(smtp_capture.port):
        row = await wait_sent(notifier.pool, data["invoice_id"])

    assert smtp_capture.copies({data["invoice_id"]}) == {f"<{row['delivery_id']}@dunning.invalid>": 1}
    assert (row["attempts"], row["in_doubt_attempts"]) == (2, 0)


async def _copies_at_least(capture, invoice_id: str, n: int) -> bool:
    return sum(capture.copies({invoice_id}).values()) >= n


async def test_the_same_stage_escalated_twice_and_reemitted_is_one_email(
    notifier_pool, notifier_process, smtp_capture, stage_data, stage_escalated, producer
):
    data = stage_data(stage="soft")
    envelope = stage_escalated(data)
    reemitted = stage_escalated(dict(data, stage_id=stage_data()["stage_id"], fired_at="2026-11-23T09:00:00Z"))
    assert reemitted["id"] != envelope["id"]
    await notifier_process(smtp_capture.port, **FAST)

    await produce(producer, envelope, envelope, reemitted)  # a redelivery, then a re-emission (new event id)
    await async_wait_until(
        lambda: notifier_pool.fetchval(
            "SELECT count(*) = 2 FROM inbox WHERE event_id = ANY($1::uuid[])", [envelope["id"], reemitted["id"]]
        ),
        timeout=60,
        what="both StageEscalated consumed",
    )
    row = await wait_sent(notifier_pool, data["invoice_id"])

    # Every event is applied and the one delivery recorded: any second e-mail would need a second row.
    assert (
        await notifier_pool.fetchval("SELECT count(*) FROM deliveries WHERE invoice_id = $1", data["invoice_id"]) == 1
    )
    assert smtp_capture.copies({data["invoice_id"]}) == {f"<{row['delivery_id']}@dunning.invalid>": 1}
    assert row["stage_id"] == data["stage_id"] and row["in_doubt_attempts"] == 0


async def test_two_notifier_processes_on_one_backlog_send_each_delivery_once(
    notifier_pool, notifier_process, smtp_capture, stage_data, stage_escalated, consume
):
    async def a_little_slow(message):
        await asyncio.sleep(0.02)  # so that neither replica can drain the backlog alone
        return None

    smtp_capture.on_data = a_little_slow
    await notifier_process(smtp_capture.port, name="replica-a", **FAST)
    await notifier_process(smtp_capture.port, name="replica-b", **FAST)
    batch = [stage_data(stage=stage) for stage in ("soft", "firm", "final") for _ in range(20)]
    for data in batch:  # both replicas are polling when the backlog appears
        await consume(notifier_pool, stage_escalated(data))
    invoices = {d["invoice_id"] for d in batch}

    await async_wait_until(
        lambda: notifier_pool.fetchval(
            "SELECT count(*) = $1 FROM deliveries WHERE invoice_id = ANY($2::text[]) AND state = 'sent'",
            len(batch),
            list(invoices),
        ),
        timeout=60,
        what="the whole backlog sent",
    )

    ids = await notifier_pool.fetch(
        "SELECT delivery_id, in_doubt_attempts FROM deliveries WHERE invoice_id = ANY($1::text[])", list(invoices)
    )
    assert smtp_capture.copies(invoices) == {f"<{r['delivery_id']}@dunning.invalid>": 1 for r in ids}
    assert {r["in_doubt_attempts"] for r in ids} == {0}
    by_replica = {m.helo for m in smtp_capture.accepted if m.invoice_id in invoices}
    assert by_replica == {"replica-a", "replica-b"}  # both took part: the test raced them for real
