"""The letter channel against the print-and-mail stand-in over real HTTP (Lob's API shape), with the
PDF stored in PostgreSQL and served by the API; the signed tracking webhook."""

import hashlib
import hmac
import json
import time

import httpx
import pytest

from dunning import tenancy
from dunning.ids import new_id
from dunning_notifier.api import ApiDeps, create_app
from dunning_notifier.letters import LetterChannel
from dunning_notifier.outcomes import Delivery, Failed, Retry, Sent
from dunning_notifier.rendering import Renderer
from dunning_tools.stack.procs import free_port, stop
from dunning_tools.stack.providers import app as providers

pytestmark = pytest.mark.integration
KEY = "dk_testkey_letters_0123456789abcdef"
API_KEY = "test_printmail_key_0123456789"
HOOK_SECRET = "lob_webhook_secret_for_tests"
ADDRESS = {
    "name": "Acme Widgets GmbH",
    "lines": ["Friedrichstraße 100"],
    "postal_code": "10117",
    "city": "Berlin",
    "region": None,
    "country": "DE",
}


@pytest.fixture(scope="module")
def printmail(tmp_path_factory):
    """The provider stand-ins' process, as the stack starts it."""
    directory = tmp_path_factory.mktemp("providers")
    port = free_port()
    proc = providers.start(directory, port, {"printmail_api_key": API_KEY}, directory / "providers.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture
async def env(notifier_pool, notifier_settings, printmail):
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, "ten_test_notifier", "Acme", KEY)
    settings = notifier_settings(
        printmail_api_url=printmail,
        printmail_api_key=API_KEY,
        printmail_webhook_secret=HOOK_SECRET,
        auth_cache_seconds=0,
        letter_from_country="DE",
    )
    channel = LetterChannel(settings, Renderer(), pool=notifier_pool)
    app = create_app(ApiDeps(pool=notifier_pool, settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        yield channel, api, settings


def delivery(stage_data, address=ADDRESS, attempts: int = 1, delivery_id: str | None = None) -> Delivery:
    data = stage_data(channel="letter", stage="firm")
    data["customer"]["postal_address"] = address
    return Delivery(
        delivery_id=delivery_id or new_id("dlv"),
        tenant_id=data["tenant_id"],
        invoice_id=data["invoice_id"],
        stage_id=data["stage_id"],
        stage="firm",
        channel="letter",
        recipient=None,
        attempts=attempts,
        payload=data,
    )


async def stand_in_letters(url: str) -> list[dict]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/_dev/letters")).json()["data"]


async def test_a_letter_is_posted_once_and_served_as_sent(env, stage_data, printmail):
    channel, api, _ = env
    d = delivery(stage_data)
    outcome = await channel.open_session().send(d)
    assert isinstance(outcome, Sent) and outcome.provider_message_id.startswith("ltr_")

    mine = [x for x in await stand_in_letters(printmail) if x["metadata"].get("delivery_id") == d.delivery_id]
    assert len(mine) == 1
    made = mine[0]
    assert made["to"]["address_line1"] == "Friedrichstraße 100" and made["to"]["address_country"] == "DE"
    assert made["use_type"] == "operational" and made["idempotency_key"] == d.delivery_id
    async with httpx.AsyncClient() as client:
        printed = (await client.get(f"{printmail}/_dev/letters/{made['id']}.pdf")).content

    served = await api.get(f"/v1/deliveries/{d.delivery_id}/letter.pdf", headers={"Authorization": f"Bearer {KEY}"})
    assert served.status_code == 200 and served.headers["content-type"] == "application/pdf"
    assert served.content == printed and served.content.startswith(b"%PDF-")

    # A retry (say the first answer was lost) sends the same bytes under the same key: one letter.
    again = await channel.open_session().send(d)
    assert isinstance(again, Sent) and again.provider_message_id == outcome.provider_message_id
    mine = [x for x in await stand_in_letters(printmail) if x["metadata"].get("delivery_id") == d.delivery_id]
    assert len(mine) == 1

    facts = await api.get(f"/v1/deliveries/{d.delivery_id}/letter", headers={"Authorization": f"Bearer {KEY}"})
    assert facts.status_code == 200
    assert facts.json()["provider_letter_id"] == outcome.provider_message_id
    assert facts.json()["pdf_sha256"] == hashlib.sha256(printed).hexdigest()


async def test_a_delivery_without_a_letter_is_a_404_naming_delivery_id(env):
    _, api, _ = env
    resp = await api.get(f"/v1/deliveries/{new_id('dlv')}/letter.pdf", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 404 and resp.json()["errors"][0]["field"] == "delivery_id"
    bad = await api.get("/v1/deliveries/not-an-id/letter.pdf", headers={"Authorization": f"Bearer {KEY}"})
    assert bad.status_code == 422
    anonymous = await api.get(f"/v1/deliveries/{new_id('dlv')}/letter.pdf")
    assert anonymous.status_code == 401


async def test_the_providers_refusals_map_to_outcomes(env, stage_data, notifier_pool, printmail):
    channel, _, settings = env
    us_without_state = {**ADDRESS, "country": "US", "postal_code": ""}
    refused = await channel.open_session().send(delivery(stage_data, address=us_without_state))
    assert isinstance(refused, Failed) and refused.error_code == "printmail_422" and refused.permanent
    assert "to.address_state" in refused.error

    wrong_key = LetterChannel(settings.model_copy(update={"printmail_api_key": "nope"}), Renderer(), pool=notifier_pool)
    outcome = await wrong_key.open_session().send(delivery(stage_data))
    assert isinstance(outcome, Retry) and outcome.error_code == "printmail_401" and not outcome.in_doubt

    down = LetterChannel(
        settings.model_copy(update={"printmail_api_url": f"http://127.0.0.1:{free_port()}"}),
        Renderer(),
        pool=notifier_pool,
    )
    outcome = await down.open_session().send(delivery(stage_data))
    assert isinstance(outcome, Retry) and outcome.error_code == "printmail_connect" and not outcome.in_doubt


def signed(body: bytes, secret: str = HOOK_SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Lob-Signature": digest, "Lob-Signature-Timestamp": stamp, "Content-Type": "application/json"}


async def test_tracking_events_are_verified_and_recorded_once(env, stage_data):
    channel, api, _ = env
    d = delivery(stage_data)
    sent = await channel.open_session().send(d)
    assert isinstance(sent, Sent)
    event = {
        "id": "evt_" + new_id("x")[-12:],
        "object": "event",
        "reference_id": sent.provider_message_id,
        "event_type": {"id": "letter.mailed", "resource": "letters", "object": "event_type"},
        "date_created": "2026-03-03T10:00:00.000Z",
        "body": {"id": sent.provider_message_id, "object": "letter"},
    }
    body = json.dumps(event).encode()
    first = await api.post("/v1/providers/printmail/events", content=body, headers=signed(body))
    assert first.status_code == 200 and first.json() == {"recorded": True, "delivery_id": d.delivery_id}
    replay = await api.post("/v1/providers/printmail/events", content=body, headers=signed(body))
    assert replay.status_code == 200 and replay.json()["recorded"] is False

    forged = await api.post("/v1/providers/printmail/events", content=body, headers=signed(body, secret="guess"))
    assert forged.status_code == 401 and forged.json()["errors"][0]["field"] == "Lob-Signature"
    stale = await api.post("/v1/providers/printmail/events", content=body, headers=signed(body, at=time.time() - 3600))
    assert stale.status_code == 401 and stale.json()["errors"][0]["field"] == "Lob-Signature-Timestamp"
    unknown = json.dumps({**event, "id": "evt_other", "reference_id": "ltr_nope", "body": {}}).encode()
    missing = await api.post("/v1/providers/printmail/events", content=unknown, headers=signed(unknown))
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "reference_id"
    no_type = json.dumps({**event, "id": "evt_x", "event_type": {"id": "postcard.mailed"}}).encode()
    refused = await api.post("/v1/providers/printmail/events", content=no_type, headers=signed(no_type))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "event_type.id"

    facts = (await api.get(f"/v1/deliveries/{d.delivery_id}/letter", headers={"Authorization": f"Bearer {KEY}"})).json()
    assert [e["event_type"] for e in facts["events"]] == ["letter.mailed"]


@pytest.fixture
async def served_api(env, notifier_pool):
    """The notifier's API on a real port, so the stand-in can call its webhook route."""
    import asyncio

    import uvicorn

    _, _, settings = env
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ApiDeps(pool=notifier_pool, settings=settings)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, timeout=10)


async def test_the_stand_ins_signed_events_reach_the_notifier(env, stage_data, printmail, served_api):
    channel, api, _ = env
    d = delivery(stage_data)
    sent = await channel.open_session().send(d)
    assert isinstance(sent, Sent)
    async with httpx.AsyncClient(base_url=printmail, timeout=15) as stand_in:
        hook = {"url": f"{served_api}/v1/providers/printmail/events", "secret": HOOK_SECRET}
        assert (await stand_in.put("/_dev/webhook", json=hook)).status_code == 200
        for event_type in ("letter.mailed", "letter.in_transit", "letter.delivered"):
            answer = await stand_in.post(
                f"/_dev/letters/{sent.provider_message_id}/events", json={"event_type": event_type}
            )
            assert answer.status_code == 200 and answer.json()["status_code"] == 200, answer.text
        await stand_in.put("/_dev/webhook", json={**hook, "secret": "not the notifier's"})
        forged = await stand_in.post(
            f"/_dev/letters/{sent.provider_message_id}/events", json={"event_type": "letter.returned_to_sender"}
        )
        assert forged.json()["status_code"] == 401

    facts = (await api.get(f"/v1/deliveries/{d.delivery_id}/letter", headers={"Authorization": f"Bearer {KEY}"})).json()
    assert [e["event_type"] for e in facts["events"]] == ["letter.mailed", "letter.in_transit", "letter.delivered"]


@pytest.mark.parametrize(
    ("status", "kind", "permanent"),
    [
        pytest.param(400, Failed, True, id="400-bad-request"),
        pytest.param(404, Failed, True, id="404"),
        pytest.param(413, Failed, True, id="413-file-too-large"),
        pytest.param(422, Failed, True, id="422-address"),
        pytest.param(401, Retry, None, id="401-our-key"),
        pytest.param(403, Retry, None, id="403"),
        pytest.param(429, Retry, None, id="429-rate-limited"),
        pytest.param(500, Retry, None, id="500"),
        pytest.param(503, Retry, None, id="503"),
    ],
)
async def test_each_answer_of_a_provider_maps_to_an_outcome(env, stage_data, notifier_pool, status, kind, permanent):
    """A provider on a real port answering `status` in Lob's error shape."""
    import asyncio

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(request_head.split("content-length:")[1].split("\r\n")[0])
        await reader.readexactly(length)  # the whole request, as a server would, before answering
        body = json.dumps({"error": {"message": "refused", "status_code": status, "code": "some_code"}}).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head += "Connection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, _, settings = env
    try:
        channel = LetterChannel(
            settings.model_copy(update={"printmail_api_url": f"http://127.0.0.1:{port}"}),
            Renderer(),
            pool=notifier_pool,
        )
        outcome = await channel.open_session().send(delivery(stage_data))
    finally:
        server.close()
    assert isinstance(outcome, kind) and outcome.error_code == f"printmail_{status}"
    assert "some_code: refused" in outcome.error
    if kind is Failed:
        assert outcome.permanent is permanent
    else:
        assert not outcome.in_doubt


async def test_no_answer_after_the_request_went_out_is_an_in_doubt_retry(env, stage_data, notifier_pool):
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, _, settings = env
    try:
        channel = LetterChannel(
            settings.model_copy(update={"printmail_api_url": f"http://127.0.0.1:{port}", "printmail_timeout": 0.5}),
            Renderer(),
            pool=notifier_pool,
        )
        outcome = await channel.open_session().send(delivery(stage_data))
    finally:
        server.close()
    assert isinstance(outcome, Retry) and outcome.error_code == "printmail_timeout" and outcome.in_doubt
