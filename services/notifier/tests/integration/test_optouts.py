"""Opt-outs, invalid contacts and channel fallback against real PostgreSQL and a real SMTP server: an
opted-out address gets nothing, the stage goes once on the tenant's next channel, the one-click URL
of a real reminder opts out, a DSN or a reply on the inbound SMTP endpoint does what it says."""

import email
import email.policy
import re
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from dunning import tenancy
from dunning.ids import new_id
from dunning_notifier import optouts
from dunning_notifier import optouts_repository as orepo
from dunning_notifier.api import ApiDeps, create_app
from dunning_notifier.inbound import InboundSmtp
from dunning_tools.stack.procs import free_port
from dunning_tools.testing.outbox import outbox_events
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
TENANT = "ten_test_notifier"
KEY = "dk_testkey_optouts_0123456789abcd"


def _fresh(stage_data, **kw) -> dict:
    data = stage_data(**kw)
    data["customer"]["customer_id"] = new_id("cus")
    return data


async def _prefs(pool, fallback, pause_on_reply=False, pause_days=7) -> None:
    await orepo.put_preferences(pool, TENANT, fallback, pause_on_reply, pause_days)


async def _opt_out(pool, data) -> None:
    async with pool.acquire() as conn, conn.transaction():
        assert await optouts.record_opt_out(
            conn, TENANT, data["customer"]["customer_id"], "email", data["customer"]["email"].upper(), "sms"
        )


async def _deliveries(pool, invoice_id):
    return await pool.fetch("SELECT * FROM deliveries WHERE invoice_id = $1 ORDER BY created_at", invoice_id)


async def test_an_opted_out_address_gets_nothing_and_the_stage_goes_once_on_the_next_channel(notifier, stage_data):
    data = _fresh(stage_data, stage="firm")
    await _prefs(notifier.pool, ["email", "webhook"])
    await _opt_out(notifier.pool, data)
    await notifier.receive(data)

    async with notifier.dispatching():
        failed = await notifier.wait_state(data["invoice_id"], "failed")
        fallback = await notifier.delivery(data["invoice_id"], "webhook")

    assert failed["last_error_code"] == "opted_out"
    assert await notifier.mail_to(data["customer"]["email"]) == []
    rows = await _deliveries(notifier.pool, data["invoice_id"])
    assert [(r["channel"], r["fallback_of"]) for r in rows] == [
        ("email", None),
        ("webhook", failed["delivery_id"]),
    ]
    assert fallback["stage"] == "firm" and fallback["stage_id"] == data["stage_id"]
    [event] = [e for e in await notifier.reported(data["invoice_id"]) if e["type"] == "dunning.ReminderFailed.v1"][:1]
    assert event["data"]["error_code"] == "opted_out" and event["data"]["permanent"] is True

    # The same failure applied again (a recorder retry, a DSN after it) makes no second delivery.
    origin = optouts.Origin(failed["delivery_id"], TENANT, "email", failed["recipient"], failed["payload"])
    async with notifier.pool.acquire() as conn, conn.transaction():
        assert await optouts.fall_back(conn, [(origin, "opted_out")], {"email", "webhook"}) == []
    assert len(await _deliveries(notifier.pool, data["invoice_id"])) == 2


async def test_with_no_channel_left_the_delivery_fails_no_allowed_channel(notifier, stage_data):
    data = _fresh(stage_data)
    await _prefs(notifier.pool, ["email"])
    await _opt_out(notifier.pool, data)
    await notifier.receive(data)

    async with notifier.dispatching():
        failed = await notifier.wait_state(data["invoice_id"], "failed")

    assert failed["last_error_code"] == "no_allowed_channel"
    assert len(await _deliveries(notifier.pool, data["invoice_id"])) == 1


async def test_a_550_to_rcpt_marks_the_address_invalid_and_later_stages_skip_it(notifier, stage_data):
    data = _fresh(stage_data, email=f"gone-{new_id('x')[-6:].lower()}@bounce.invalid")
    await _prefs(notifier.pool, ["email", "webhook"])
    await notifier.receive(data)
    async with notifier.dispatching():
        failed = await notifier.wait_state(data["invoice_id"], "failed")
    assert failed["last_error_code"] == "smtp_550"
    assert (await notifier.delivery(data["invoice_id"], "webhook"))["fallback_of"] == failed["delivery_id"]
    [block] = await notifier.pool.fetch("SELECT * FROM contact_blocks")
    assert (block["kind"], block["reason"], block["address"]) == ("invalid", "smtp_550", data["customer"]["email"])

    later = dict(_fresh(stage_data, stage="final", email=data["customer"]["email"]), invoice_id=data["invoice_id"])
    later["customer"]["customer_id"] = data["customer"]["customer_id"]
    await notifier.receive(later)
    async with notifier.dispatching():

        async def final_failed():
            return await notifier.pool.fetchrow(
                "SELECT * FROM deliveries WHERE invoice_id = $1 AND stage = 'final' AND channel = 'email'"
                " AND state = 'failed'",
                data["invoice_id"],
            )

        final_email = await async_wait_until(final_failed, what="final stage failed")
    assert final_email["last_error_code"] == "contact_invalid"
    assert await notifier.mail_to(data["customer"]["email"]) == []


@pytest.fixture
async def api(notifier_pool, notifier_settings):
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", KEY)
    settings = notifier_settings(auth_cache_seconds=0, env="dev", public_url="https://notifier.example")
    app = create_app(ApiDeps(pool=notifier_pool, settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def test_one_click_from_a_received_reminder_opts_out_and_get_does_not(notifier, api, stage_data):
    data = _fresh(stage_data)
    await notifier.receive(data)
    async with notifier.dispatching(env="dev", public_url="https://notifier.example", inbound_smtp_port=2599):
        await notifier.wait_state(data["invoice_id"], "sent")
    [mail] = await notifier.mail_for(data["customer"]["email"])
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<https://notifier\.example(/v1/unsubscribe/[^>]+)>", str(mail["List-Unsubscribe"])).group(1)
    assert re.search(r"<mailto:unsubscribe\+[a-z2-7.]+@dunning\.localhost>", str(mail["List-Unsubscribe"]))
    assert str(mail["Reply-To"]).startswith("reply+dlv_")

    page = await api.get(url)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert await notifier.pool.fetchval("SELECT count(*) FROM contact_blocks") == 0  # a GET changes nothing

    assert (await api.post(url, data={"List-Unsubscribe": "Two-Clicks"})).status_code == 422
    assert (await api.post(url[:-3] + "aaa", data={"List-Unsubscribe": "One-Click"})).status_code == 404
    for _ in range(2):  # twice: one opt-out, one event
        resp = await api.post(url, data={"List-Unsubscribe": "One-Click"})
        assert resp.status_code == 200 and "Unsubscribed" in resp.text
    [event] = await outbox_events(notifier.pool, "dunning.ContactOptedOut.v1")
    assert event["data"]["address"] == data["customer"]["email"].lower()
    assert event["data"]["reason"] == "one_click"

    customer_id = data["customer"]["customer_id"]
    auth = {"Authorization": f"Bearer {KEY}"}
    prefs = (await api.get(f"/v1/customers/{customer_id}/contact-preferences", headers=auth)).json()
    [block] = prefs["channels"]["email"]
    assert block["kind"] == "opted_out" and block["cleared_at"] is None
    resp = await api.delete(f"/v1/customers/{customer_id}/opt-outs/email?cleared_by=agent-7", headers=auth)
    assert resp.status_code == 200 and resp.json()["cleared"][0]["cleared_by"] == "agent-7"
    assert (await api.delete(f"/v1/customers/{customer_id}/opt-outs/email", headers=auth)).status_code == 404
    prefs = (await api.get(f"/v1/customers/{customer_id}/contact-preferences", headers=auth)).json()
    assert [h["action"] for h in prefs["history"]] == ["cleared", "blocked"]


async def test_channel_preferences_are_validated_naming_the_field(api):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert (await api.get("/v1/channel-preferences", headers=auth)).json()["fallback"] == ["email", "sms", "letter"]
    bad = await api.put("/v1/channel-preferences", json={"fallback": ["email", "fax"]}, headers=auth)
    assert bad.status_code == 422 and "fallback" in bad.text
    twice = await api.put("/v1/channel-preferences", json={"fallback": ["email", "email"]}, headers=auth)
    assert twice.status_code == 422
    ok = await api.put("/v1/channel-preferences", json={"pause_on_reply": True}, headers=auth)
    assert ok.json() == {**ok.json(), "fallback": ["email", "sms", "letter"], "pause_on_reply": True, "pause_days": 7}
    assert (await api.get("/v1/channel-preferences")).status_code == 401


async def _null_sender(port: int, recipients: list[str], raw: bytes) -> None:
    """Send as a mail server sends a DSN: MAIL FROM:<> (aiosmtplib.send insists on a sender)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        await client.sendmail("", recipients, raw)


def _dsn(delivery_id: str, recipient: str, status: str, action: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.com\r\nSubject: Undelivered Mail\r\n"
        f"To: bounce+{delivery_id}@dunning.localhost\r\n"
        "MIME-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{delivery_id}@dunning.invalid>\r\n"
        f"X-Dunning-Delivery-Id: {delivery_id}\r\n\r\n--B--\r\n"
    ).encode()


async def test_inbound_dsn_bounces_and_a_reply_is_stored_and_published(notifier, notifier_settings, stage_data):
    data = _fresh(stage_data)
    await _prefs(notifier.pool, ["email", "webhook"], pause_on_reply=True, pause_days=5)
    await notifier.receive(data)
    port = free_port()
    async with notifier.dispatching(inbound_smtp_port=port):
        sent = await notifier.wait_state(data["invoice_id"], "sent")
    settings = notifier_settings(inbound_smtp_port=port, env="dev")
    inbound = InboundSmtp(notifier.pool, settings, {"email", "webhook"})
    server = await inbound.start()
    dlv, address = sent["delivery_id"], data["customer"]["email"]
    smtp: dict = dict(hostname="127.0.0.1", port=port)
    bounce_to = [f"bounce+{dlv}@dunning.localhost"]
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):  # not one of our addresses
            await aiosmtplib.send(b"Subject: x\r\n\r\nhi\r\n", sender="a@b.c", recipients=["x@elsewhere"], **smtp)
        await _null_sender(port, bounce_to, _dsn(dlv, address, "4.4.7", "delayed"))
        row = await notifier.delivery(data["invoice_id"])
        assert row["provider_status"] is None and await notifier.delivery(data["invoice_id"], "webhook") is None

        await _null_sender(port, bounce_to, _dsn(dlv, address, "5.1.1", "failed"))
        row = await notifier.delivery(data["invoice_id"])
        assert row["provider_status"] == "bounced"
        assert (await notifier.delivery(data["invoice_id"], "webhook"))["fallback_of"] == dlv
        [block] = await notifier.pool.fetch("SELECT * FROM contact_blocks")
        assert (block["kind"], block["reason"]) == ("invalid", "dsn_5.1.1")

        reply = EmailMessage()
        reply["From"] = f"Accounts <{address}>"
        reply["To"] = "ar@dunning.localhost"
        reply["Subject"] = "Re: reminder"
        reply["Message-ID"] = "<r1@customer.example>"
        reply["In-Reply-To"] = f"<{dlv}@dunning.invalid>"
        reply.set_content("We paid yesterday.")
        await aiosmtplib.send(reply, sender=address, recipients=[f"reply+{dlv}@dunning.localhost"], **smtp)
        ooo = EmailMessage()
        ooo["From"] = address
        ooo["Subject"] = "Out of Office: reminder"
        ooo["Auto-Submitted"] = "auto-replied"
        ooo["In-Reply-To"] = f"<{dlv}@dunning.invalid>"
        ooo.set_content("Back on Monday.")
        await aiosmtplib.send(ooo, sender=address, recipients=[f"reply+{dlv}@dunning.localhost"], **smtp)
    finally:
        server.close()
        await server.wait_closed()

    events = await outbox_events(notifier.pool, "dunning.CustomerReplied.v1")
    assert [(e["data"]["auto_reply"], e["data"]["pause_days"]) for e in events] == [(False, 5), (True, None)]
    assert events[0]["data"]["excerpt"] == "We paid yesterday."
    rate = await orepo.response_rate(notifier.pool, TENANT, sent["sent_at"])
    assert [(r["channel"], r["sent"], r["replied"]) for r in rate] == [("email", 1, 1)]


def test_dsn_helper_parses():  # the test's own DSN is one the parser reads
    from dunning_notifier.inbound_mail import parse_report

    raw = _dsn("dlv_01JD5N7P9Q1R3S5T7V9W1X3Y5Z", "a@b.c", "5.1.1", "failed")
    report = parse_report(email.message_from_bytes(raw, policy=email.policy.default))
    assert report is not None and report.recipients[0].permanent_failure


async def test_a_consolidated_notice_to_an_opted_out_address_is_not_sent(notifier, notice_item, notice_data):
    data = notice_data([notice_item(stage="soft"), notice_item(stage="firm")], tenant_id=TENANT)
    async with notifier.pool.acquire() as conn, conn.transaction():
        await optouts.record_opt_out(conn, TENANT, data["customer_id"], "email", data["customer"]["email"], "http")
    await notifier.compose(data)

    async with notifier.dispatching():
        row = await notifier.wait_notice(data["notice_id"], "failed")

    assert row["last_error_code"] == "opted_out"
    assert await notifier.mail_to(data["customer"]["email"]) == []


async def test_a_mail_to_the_unsubscribe_address_opts_out(notifier, notifier_settings):
    settings = notifier_settings(env="dev", inbound_smtp_port=free_port())
    customer_id = new_id("cus")
    token = optouts.sign(optouts.Subject(TENANT, customer_id, "email", "AP@Example.com"), settings)
    server = await InboundSmtp(notifier.pool, settings, {"email"}).start()
    smtp: dict = dict(hostname="127.0.0.1", port=settings.inbound_smtp_port)
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):  # a token we did not sign
            await aiosmtplib.send(
                b"Subject: unsubscribe\r\n\r\n",
                sender="ap@example.com",
                recipients=[f"unsubscribe+{token}x@dunning.localhost"],
                **smtp,
            )
        await aiosmtplib.send(
            b"Subject: unsubscribe\r\n\r\n",
            sender="ap@example.com",
            recipients=[f"unsubscribe+{token}@dunning.localhost"],
            **smtp,
        )
    finally:
        server.close()
        await server.wait_closed()
    [block] = await notifier.pool.fetch("SELECT * FROM contact_blocks")
    assert (block["customer_id"], block["address"], block["reason"]) == (customer_id, "ap@example.com", "mailto")
    [event] = await outbox_events(notifier.pool, "dunning.ContactOptedOut.v1")
    assert event["subject"] == customer_id and event["data"]["source"] == "inbound_smtp"
