"""The last mile: every stop of an invoice reaches the notifier, and no attempt starts after the
notifier has applied it. Real PostgreSQL, a real SMTP server inside the test (aiosmtpd, refusing or
accepting on cue), the stops applied through the handler table as the consumer does."""

import asyncio

import pytest

from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
REFUSED = "451 4.3.0 Mailbox temporarily unavailable, try again later"
RETRY_MAX = 0.5  # the test settings' retry_max_seconds: a delivery left pending is due again within it


async def sent_to(notifier, smtp_capture, control: dict) -> None:
    """Wait until the SMTP server accepted the control delivery, then past any retry's backoff: a
    delivery still pending by then would have been attempted again."""
    await notifier.receive(control)
    await notifier.wait_state(control["invoice_id"], "sent")
    await asyncio.sleep(2 * RETRY_MAX)
    assert smtp_capture.copies({control["invoice_id"]})


async def test_a_delivery_in_retry_backoff_is_cancelled_when_the_invoice_is_paid_and_never_sent(
    notifier, smtp_capture, stage_data
):
    data = stage_data(stage="firm")
    refusing = True
    smtp_capture.on_data = lambda message: asyncio.sleep(0, REFUSED if refusing else None)
    await notifier.receive(data)

    async with notifier.dispatching(smtp_capture.port):

        async def in_backoff():
            row = await notifier.delivery(data["invoice_id"])
            return row["state"] == "pending" and row["attempts"] >= 2 and row

        await async_wait_until(in_backoff, what="two refused attempts")
        stop = await notifier.stop("stopped", data["invoice_id"], reason="invoice_settled")
        refusing = False  # the server accepts again: nothing of this invoice may reach it now
        await sent_to(notifier, smtp_capture, stage_data())

    row = await notifier.delivery(data["invoice_id"])
    assert row["state"] == "cancelled" and row["cancel_reason"] == "invoice_settled"
    assert smtp_capture.copies({data["invoice_id"]}) == {}
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderCancelled.v1"
    assert event["data"] == event["data"] | {
        "delivery_id": row["delivery_id"],
        "stage": "firm",
        "reason": "invoice_settled",
        "cause_event_id": stop["id"],
        "attempts": row["attempts"],
    }
    assert row["attempts"] >= 2


async def test_a_paused_invoices_delivery_is_cancelled_and_a_stage_after_the_resume_is_sent(notifier, stage_data):
    soft = stage_data(stage="soft")
    await notifier.receive(soft)
    pause = await notifier.stop("paused", soft["invoice_id"], cause="dispute")

    paused = await notifier.delivery(soft["invoice_id"])
    assert paused["state"] == "cancelled" and paused["cancel_reason"] == "dispute" and paused["attempts"] == 0
    await notifier.stop("resumed", soft["invoice_id"], cause="dispute", reason="dispute_rejected")
    firm = dict(stage_data(stage="firm"), invoice_id=soft["invoice_id"], customer=soft["customer"])
    await notifier.receive(firm)

    async with notifier.dispatching():
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT state = 'sent' FROM deliveries WHERE invoice_id = $1 AND stage = 'firm'", soft["invoice_id"]
            ),
            what="the firm reminder sent",
        )
    [mail] = await notifier.mail_to(soft["customer"]["email"])
    assert mail["headers"]["X-Dunning-Stage"] == "firm"
    reported = await notifier.reported(soft["invoice_id"])
    assert [(e["type"], e["data"]["stage"]) for e in reported] == [
        ("dunning.ReminderCancelled.v1", "soft"),
        ("dunning.ReminderSent.v1", "firm"),
    ]
    assert reported[0]["data"]["cause_event_id"] == pause["id"] and reported[0]["data"]["attempts"] == 0


@pytest.mark.parametrize(
    ("stop_reason", "sent"),
    [
        pytest.param("invoice_settled", True, id="settled-then-reopened-sends"),
        pytest.param("invoice_voided", False, id="voided-stays-stopped"),
    ],
)
async def test_a_settled_invoice_reopened_sends_the_stages_fired_after_the_reopen(
    notifier, stage_data, stop_reason, sent
):
    """Issue 11: money taken back reopens a settled invoice; the scheduler's DunningResumed (cause
    `settled`, reason `reopened`) lifts the stop that settled it, so a stage fired after it is sent
    (a void is never lifted)."""
    soft = stage_data(stage="soft")
    await notifier.receive(soft)
    await notifier.stop("stopped", soft["invoice_id"], reason=stop_reason)
    assert (await notifier.delivery(soft["invoice_id"]))["state"] == "cancelled"
    await notifier.stop("resumed", soft["invoice_id"], cause="settled", reason="reopened")
    firm = dict(stage_data(stage="firm"), invoice_id=soft["invoice_id"], customer=soft["customer"])
    await notifier.receive(firm)

    query = "SELECT state FROM deliveries WHERE invoice_id = $1 AND stage = 'firm'"
    if sent:
        async with notifier.dispatching():
            await async_wait_until(
                lambda: notifier.pool.fetchval(f"SELECT ({query}) = 'sent'", soft["invoice_id"]),
                what="the firm reminder sent",
            )
        [mail] = await notifier.mail_to(soft["customer"]["email"])
        assert mail["headers"]["X-Dunning-Stage"] == "firm"
    else:
        assert await notifier.pool.fetchval(query, soft["invoice_id"]) == "cancelled"


async def test_an_instalment_reminder_the_scheduler_fires_under_its_plans_pause_is_sent(notifier, stage_data):
    soft = stage_data(stage="soft")
    await notifier.receive(soft)
    await notifier.stop("paused", soft["invoice_id"], cause="payment_plan")  # the soft reminder is dropped
    instalment = dict(
        stage_data(stage="instalment_1_pre_due"),
        template="instalment_pre_due",
        invoice_id=soft["invoice_id"],
        customer=soft["customer"],
        context={"kind": "instalment", "plan_id": "pln_01JD8X0000000000000000", "number": "1", "instalments": "3",
                 "amount": "416.67", "due_date": "2026-11-26", "currency": "USD"},
    )  # fmt: skip
    await notifier.receive(instalment)

    async with notifier.dispatching():
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT state = 'sent' FROM deliveries WHERE invoice_id = $1 AND stage = 'instalment_1_pre_due'",
                soft["invoice_id"],
            ),
            what="the instalment reminder sent",
        )
    [mail] = await notifier.mail_to(soft["customer"]["email"])
    assert mail["subject"] == "Heads-up: instalment 1 of 3 ($416.67) is due on November 26, 2026"
    assert await notifier.pool.fetchval(
        "SELECT state FROM deliveries WHERE invoice_id = $1 AND stage = 'soft'", soft["invoice_id"]
    ) == "cancelled"  # fmt: skip


@pytest.mark.parametrize(
    "stops",
    [
        pytest.param([("stopped", {"reason": "invoice_voided"})], id="after-a-terminal-stop"),
        pytest.param(
            [
                ("paused", {"cause": "hold"}),
                ("stopped", {"reason": "invoice_voided"}),
                ("resumed", {"cause": "hold"}),
            ],
            id="a-resume-does-not-undo-a-terminal-stop",
        ),
    ],
)
async def test_a_stage_escalated_after_a_terminal_stop_makes_no_sendable_delivery(
    notifier, smtp_capture, stage_data, stops
):
    data = stage_data(stage="final")
    for kind, fields in stops:
        await notifier.stop(kind, data["invoice_id"], **fields)
    await notifier.receive(data)  # a redelivery or re-emission of a stage fired before the stop

    row = await notifier.delivery(data["invoice_id"])
    assert row["state"] == "cancelled" and row["cancel_reason"] == "invoice_voided"
    async with notifier.dispatching(smtp_capture.port):
        await sent_to(notifier, smtp_capture, stage_data())
    assert smtp_capture.copies({data["invoice_id"]}) == {}
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderCancelled.v1"
    assert event["data"]["attempts"] == 0 and event["data"]["reason"] == "invoice_voided"


@pytest.mark.parametrize(
    ("reply", "state", "reported"),
    [
        pytest.param(REFUSED, "cancelled", "dunning.ReminderCancelled.v1", id="fails-transiently-then-cancelled"),
        pytest.param(None, "sent", "dunning.ReminderSent.v1", id="accepted-and-recorded-sent"),
    ],
)
async def test_the_attempt_in_flight_at_the_stop_finishes_and_is_never_retried(
    notifier, smtp_capture, stage_data, reply, state, reported
):
    data = stage_data(stage="soft")
    mid_attempt: list[str] = []

    async def stop_mid_attempt(message):
        if message.invoice_id == data["invoice_id"] and not mid_attempt:
            # The message is in the server's hands: the invoice is paid now, before the reply.
            await notifier.stop("stopped", data["invoice_id"], reason="invoice_settled")
            mid_attempt.append((await notifier.delivery(data["invoice_id"]))["state"])
            return reply
        return None

    smtp_capture.on_data = stop_mid_attempt
    await notifier.receive(data)
    async with notifier.dispatching(smtp_capture.port):
        row = await notifier.wait_state(data["invoice_id"], state)
        await sent_to(notifier, smtp_capture, stage_data())  # the server accepts: a retry would get through

    assert mid_attempt == ["sending"]  # the stop found it mid-attempt, and let it finish
    row = await notifier.delivery(data["invoice_id"])
    assert row["state"] == state and row["attempts"] == 1
    assert sum(smtp_capture.copies({data["invoice_id"]}).values()) == (1 if state == "sent" else 0)
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == reported
    if state == "cancelled":
        assert event["data"]["attempts"] == 1 and event["data"]["reason"] == "invoice_settled"


async def test_an_expired_lease_of_a_stopped_invoice_is_cancelled_not_sent_again(notifier, smtp_capture, stage_data):
    data = stage_data()
    await notifier.receive(data)
    await notifier.leased(data["invoice_id"], seconds_left=-1)  # a replica claimed it and died mid-send
    await notifier.stop("paused", data["invoice_id"], cause="promise")

    async with notifier.dispatching(smtp_capture.port):
        row = await notifier.wait_state(data["invoice_id"], "cancelled")
        await sent_to(notifier, smtp_capture, stage_data())

    assert row["in_doubt_attempts"] == 1 and row["cancel_reason"] == "promise"
    assert smtp_capture.copies({data["invoice_id"]}) == {}
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderCancelled.v1" and event["data"]["attempts"] == 1


async def test_a_second_pause_and_a_redelivered_stop_cancel_nothing_twice(notifier, stage_data):
    data = stage_data()
    await notifier.receive(data)
    hold = await notifier.stop("paused", data["invoice_id"], cause="hold")
    await notifier.redeliver(hold)  # the inbox drops it
    await notifier.stop("paused", data["invoice_id"], cause="dispute")

    row = await notifier.delivery(data["invoice_id"])
    assert row["cancel_reason"] == "hold"
    assert [e["data"]["cause_event_id"] for e in await notifier.reported(data["invoice_id"])] == [hold["id"]]


async def blocked(pool) -> bool:
    """Whether some statement of this test's database waits for a row lock."""
    return await pool.fetchval("SELECT count(*) > 0 FROM pg_locks WHERE NOT granted")


@pytest.mark.parametrize("first", ["stop", "retry"])
async def test_a_stop_and_a_retry_write_racing_on_one_row_end_cancelled_whichever_commits_first(
    notifier, notifier_settings, stage_data, stop_event, first
):
    from dunning import inbox  # the consumer's and the recorder's transactions, held open half-way
    from dunning.events import decode, dumps
    from dunning_notifier import repository as repo
    from dunning_notifier.bootstrap import build_dispatcher
    from dunning_notifier.handlers import HANDLERS
    from dunning_notifier.outcomes import Delivery, Retry
    from dunning_notifier.recording import Attempt

    data = stage_data()
    await notifier.receive(data)
    [claim] = await repo.claim_due(notifier.pool, 10, 30)  # one attempt in flight, failing transiently
    recorder = build_dispatcher(notifier.pool, notifier_settings())
    attempt = Attempt(Delivery.from_row(claim), Retry("smtp_451", "451 try again later"), None, retry_in=0.0)
    stop = decode(dumps(stop_event("stopped", data["invoice_id"])))
    [handler] = [spec.each for t, spec in HANDLERS.items() if t.TYPE == stop.type]

    async def apply_stop(conn):
        await inbox.claim(conn, stop.id, stop.type, "dunning.stages.v1")
        await handler(conn, stop)

    async def record_retry(conn):
        await recorder._record(conn, [attempt])

    steps = {"stop": apply_stop, "retry": record_retry}
    second = "retry" if first == "stop" else "stop"
    async with notifier.pool.acquire() as a, notifier.pool.acquire() as b:
        held = a.transaction()
        await held.start()
        await steps[first](a)  # holds the row until it commits
        later = asyncio.create_task(_in_transaction(b, steps[second]))
        await async_wait_until(lambda: blocked(notifier.pool), what="the second write waiting for the row")
        await held.commit()
        await asyncio.wait_for(later, timeout=10)

    row = await notifier.delivery(data["invoice_id"])
    assert row["state"] == "cancelled" and row["cancel_reason"] == "invoice_settled"
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderCancelled.v1" and event["data"]["attempts"] == 1


async def _in_transaction(conn, step):
    async with conn.transaction():
        await step(conn)
