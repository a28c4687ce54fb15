"""The sms channel against the Twilio stand-in over real HTTP: the official `twilio` client agrees
with the stand-in's API; the notifier's session posts what Twilio expects and maps its answers; the
stand-in's signed status callbacks (posted to the notifier's API served on a real port) move the
delivery's provider_status and publish ReminderDeliveryUpdated; a signed inbound STOP opts out."""

import asyncio
import contextlib
import secrets
import uuid

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dunning import tenancy
from dunning.ids import new_id
from dunning_notifier import delivery_inserts as repo
from dunning_notifier import sms
from dunning_notifier.api import ApiDeps, create_app
from dunning_notifier.outcomes import Delivery, Failed, Retry, Sent
from dunning_notifier.rendering import Renderer
from dunning_notifier.sms import SmsChannel
from dunning_tools.stack.procs import free_port, stop
from dunning_tools.stack.providers import app as providers
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
KEY = "dk_testkey_sms_0123456789abcdef01"
SID = "AC" + "5" * 32
TOKEN = "twilio_auth_token_for_tests_0123"


@pytest.fixture(scope="module")
def twilio_url(tmp_path_factory):
    """The provider stand-ins' process, as the stack starts it."""
    directory = tmp_path_factory.mktemp("providers")
    port = free_port()
    secrets = {"twilio_account_sid": SID, "twilio_auth_token": TOKEN}
    proc = providers.start(directory, port, secrets, directory / "providers.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


class _RedirectingClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending what it would send to api.twilio.com to the stand-in."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def request(self, method, url, *args, **kwargs):
        return super().request(method, url.replace("https://api.twilio.com", self.base), *args, **kwargs)


@pytest.fixture
async def env(notifier_pool, notifier_settings, twilio_url):
    """The sms channel, and the notifier's API served on a real port (Twilio's callbacks reach it)."""
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, "ten_test_notifier", "Acme", KEY)
    port = free_port()
    settings = notifier_settings(
        sms_api_url=twilio_url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        public_url=f"http://127.0.0.1:{port}",
        auth_cache_seconds=0,
    )
    app = create_app(ApiDeps(pool=notifier_pool, settings=settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await async_wait_until(started, timeout=10, what="the notifier's API")
    try:
        yield SmsChannel(settings, Renderer(), pool=notifier_pool), settings
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def recorded_delivery(pool, stage_data, phone: str, **stage) -> Delivery:
    """A delivery row as the consumer records it, and the Delivery the dispatcher would claim."""
    data = stage_data(channel="sms", stage=stage.pop("stage", "firm"), **stage)
    data["customer"]["phone"] = phone
    d = Delivery(
        new_id("dlv"), data["tenant_id"], data["invoice_id"], data["stage_id"], data["stage"], "sms", phone, 1, data
    )
    async with pool.acquire() as conn:
        await repo.insert_delivery(
            conn,
            delivery_id=d.delivery_id,
            tenant_id=d.tenant_id,
            invoice_id=d.invoice_id,
            stage_id=d.stage_id,
            stage=d.stage,
            channel="sms",
            template=d.stage,
            recipient=phone or None,
            payload=data,
            source_event_id=str(uuid.uuid4()),
            traceparent=None,
        )
    return d


async def messages_to(url: str, to: str) -> list[dict]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/_dev/sms", params={"to": to})).json()["messages"]


def test_the_official_client_sends_and_fetches_through_the_stand_in(twilio_url):
    client = Client(SID, TOKEN, http_client=_RedirectingClient(twilio_url))
    message = client.messages.create(to="+4915112345678", from_="+15005550006", body="Grüße € [1]")
    assert message.sid.startswith("SM") and message.status == "queued" and message.num_segments == "1"
    assert client.messages(message.sid).fetch().body == "Grüße € [1]"
    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to="+15005550001", from_="+15005550006", body="x")
    assert (refused.value.status, refused.value.code) == (400, 21211)
    wrong = Client(SID, "not-the-token", http_client=_RedirectingClient(twilio_url))
    with pytest.raises(TwilioRestException) as unauthorized:
        wrong.messages.create(to="+4915112345678", from_="+15005550006", body="x")
    assert (unauthorized.value.status, unauthorized.value.code) == (401, 20003)


async def test_an_sms_goes_out_and_the_callbacks_make_it_delivered(env, notifier_pool, stage_data, twilio_url):
    channel, _ = env
    phone = f"+49151{secrets.randbelow(10**8):08d}"
    d = await recorded_delivery(notifier_pool, stage_data, phone)
    session = channel.open_session()
    try:
        outcome = await session.send(d)
    finally:
        await session.close()
    assert isinstance(outcome, Sent) and outcome.provider_message_id.startswith("SM"), outcome
    [sent] = await messages_to(twilio_url, phone)
    assert sent["from"] == "+15005550006" and sent["sid"] == outcome.provider_message_id
    assert d.payload["invoice"]["number"] in sent["body"]

    async def delivered():
        return (
            await notifier_pool.fetchval("SELECT provider_status FROM deliveries WHERE delivery_id = $1", d.delivery_id)
            == "delivered"
        )

    await async_wait_until(delivered, timeout=10)
    row = await notifier_pool.fetchrow("SELECT * FROM deliveries WHERE delivery_id = $1", d.delivery_id)
    assert (row["sms_encoding"], row["sms_segments"]) == ("GSM-7", int(sent["num_segments"]))
    statuses = await notifier_pool.fetch(
        "SELECT status FROM sms_status_events WHERE message_sid = $1 ORDER BY received_at", outcome.provider_message_id
    )
    assert [r["status"] for r in statuses] == ["queued", "sent", "delivered"]

    _, settings = env
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=settings.public_url, headers=auth) as api:
        r = await api.get(f"/v1/deliveries/{d.delivery_id}/sms")
        assert r.status_code == 200, r.text
        [shown] = r.json()
        assert shown["message_sid"] == outcome.provider_message_id and shown["status"] == "delivered"
        assert [e["status"] for e in shown["events"]] == ["queued", "sent", "delivered"]
        assert (shown["encoding"], shown["segments"], shown["truncated"]) == ("GSM-7", row["sms_segments"], False)
        listed = (await api.get("/v1/deliveries", params={"invoice_id": d.invoice_id})).json()["data"]
        assert [(x["provider_status"], x["sms_segments"]) for x in listed] == [("delivered", row["sms_segments"])]
        assert (await api.get(f"/v1/deliveries/{new_id('dlv')}/sms")).status_code == 404


async def test_the_workers_sessions_share_one_client(env, notifier_pool, stage_data, twilio_url, monkeypatch):
    """Twenty workers' sessions send through the channel's one client (one TLS context, one pool of
    keep-alive connections), and a worker closing its session leaves the others able to send."""
    channel, _ = env
    built = []

    class Counted(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sms.httpx, "AsyncClient", Counted)
    sessions = [channel.open_session() for _ in range(20)]
    phones = [f"+49151{secrets.randbelow(10**8):08d}" for _ in sessions[:3]]
    deliveries = [await recorded_delivery(notifier_pool, stage_data, phone) for phone in phones]
    first = await sessions[0].send(deliveries[0])
    await sessions[0].close()
    rest = [await s.send(d) for s, d in zip(sessions[1:], deliveries[1:], strict=False)]
    assert all(isinstance(o, Sent) for o in (first, *rest)), (first, rest)
    assert len(built) == 1 and built[0] is channel.client() and not built[0].is_closed
    for phone in phones:
        [sent] = await messages_to(twilio_url, phone)
        assert sent["to"] == phone


async def test_an_undelivered_sms_publishes_reminder_delivery_updated(env, notifier_pool, stage_data):
    channel, _ = env
    d = await recorded_delivery(notifier_pool, stage_data, "+4915112340000")
    outcome = await channel.open_session().send(d)
    assert isinstance(outcome, Sent)

    async def reported():
        return await notifier_pool.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'dunning.ReminderDeliveryUpdated.v1'",
            d.invoice_id,
        )

    await async_wait_until(reported, timeout=10)
    row = await notifier_pool.fetchrow("SELECT provider_status FROM deliveries WHERE delivery_id = $1", d.delivery_id)
    assert row["provider_status"] == "undelivered"
    error = await notifier_pool.fetchval("SELECT error_code FROM sms_messages WHERE delivery_id = $1", d.delivery_id)
    assert error == 30003


@pytest.mark.parametrize(
    "phone, code, kind",
    [
        pytest.param("+15005550002", "twilio_21612", Failed, id="cannot-route"),
        pytest.param("+15005550003", "twilio_21408", Failed, id="region-not-enabled"),
        pytest.param("+15005550004", "twilio_21610", Failed, id="unsubscribed"),
        pytest.param("+15005550009", "twilio_21614", Failed, id="not-mobile"),
    ],
)
async def test_twilios_refusals_are_failures_named_by_code(env, notifier_pool, stage_data, phone, code, kind):
    channel, _ = env
    d = await recorded_delivery(notifier_pool, stage_data, phone)
    outcome = await channel.open_session().send(d)
    assert isinstance(outcome, kind) and outcome.error_code == code, outcome


async def test_an_invalid_number_fails_before_any_request(env, notifier_pool, stage_data):
    channel, _ = env
    for phone in (None, "0301234567", "+49 30 123456", "+1555"):
        d = await recorded_delivery(notifier_pool, stage_data, phone or "")
        d = Delivery(**{**d.__dict__, "recipient": phone})
        outcome = await channel.open_session().send(d)
        assert isinstance(outcome, Failed) and outcome.error_code == "invalid_recipient", (phone, outcome)


async def test_bad_credentials_and_an_unreachable_api_are_retried(env, notifier_pool, stage_data, notifier_settings):
    channel, settings = env
    d = await recorded_delivery(notifier_pool, stage_data, "+4915112349999")
    wrong = SmsChannel(
        settings.model_copy(update={"twilio_auth_token": SecretStr("wrong")}), Renderer(), pool=notifier_pool
    )
    outcome = await wrong.open_session().send(d)
    assert isinstance(outcome, Retry) and outcome.error_code == "twilio_20003"
    gone = SmsChannel(settings.model_copy(update={"sms_api_url": f"http://127.0.0.1:{free_port()}"}), Renderer())
    outcome = await gone.open_session().send(d)
    assert isinstance(outcome, Retry) and outcome.error_code == "twilio_connect" and not outcome.in_doubt


async def test_a_callback_with_a_bad_signature_is_403_and_changes_nothing(env, notifier_pool):
    _, settings = env
    url = f"{settings.public_url}/v1/providers/twilio/status"
    form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered", "AccountSid": SID}
    async with httpx.AsyncClient() as client:
        r = await client.post(url, data=form, headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
        assert r.status_code == 403 and r.json()["errors"][0]["field"] == "X-Twilio-Signature"
        r = await client.post(url, data=form)
        assert r.status_code == 403
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        r = await client.post(url, data=form, headers={"X-Twilio-Signature": signature})
        assert r.status_code == 404 and r.json()["errors"][0]["field"] == "MessageSid"
        bad = {**form, "MessageStatus": "exploded"}
        r = await client.post(
            url, data=bad, headers={"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, bad)}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "MessageStatus"


async def test_an_inbound_stop_opts_the_number_out(env, notifier_pool, stage_data, twilio_url):
    channel, settings = env
    phone = "+4915112347777"
    d = await recorded_delivery(notifier_pool, stage_data, phone)
    customer_id = d.payload["customer"]["customer_id"]
    await notifier_pool.execute(
        "UPDATE deliveries SET customer_id = $2 WHERE delivery_id = $1", d.delivery_id, customer_id
    )
    assert isinstance(await channel.open_session().send(d), Sent)
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{twilio_url}/_dev/sms/inbound",
            json={"url": f"{settings.public_url}/v1/providers/twilio/inbound", "from": phone, "body": " stop "},
        )
    assert r.json()["status"] == 200 and "<Response>" in r.json()["body"]
    blocks = await notifier_pool.fetch(
        "SELECT channel, kind, reason FROM contact_blocks WHERE customer_id = $1", customer_id
    )
    assert [(b["channel"], b["kind"], b["reason"]) for b in blocks] == [("sms", "opted_out", "sms_stop")]


async def test_a_recipient_twilio_says_replied_stop_is_opted_out(env, notifier_pool, stage_data):
    channel, _ = env
    d = await recorded_delivery(notifier_pool, stage_data, "+15005550004")
    outcome = await channel.open_session().send(d)
    assert isinstance(outcome, Failed) and outcome.error_code == "twilio_21610"
    blocks = await notifier_pool.fetch(
        "SELECT channel, address, kind FROM contact_blocks WHERE customer_id = $1", d.payload["customer"]["customer_id"]
    )
    assert [(b["channel"], b["address"], b["kind"]) for b in blocks] == [("sms", "+15005550004", "opted_out")]
