"""Outbound webhooks on the real PostgreSQL and broker, with the stand-in receiver as a process:
the notifier's consumer (its real handler table) turns a published event into one message per
subscribed endpoint, the sender loop delivers it signed (verified with the `standardwebhooks`
package), failures are retried and recorded attempt by attempt, a failing endpoint is disabled and
comes back by PATCH, replays, rotation, and the `webhook` reminder channel."""

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from dunning import tenancy
from dunning.clock import isoformat, utcnow
from dunning.db import create_pool, migrations_of
from dunning.events import dumps, validate
from dunning.http import service_app
from dunning_notifier.api import ApiDeps
from dunning_notifier.bootstrap import build_consumer
from dunning_notifier.outcomes import Delivery, Failed, Retry, Sent
from dunning_notifier.settings import Settings
from dunning_notifier.webhooks_api import webhook_routes
from dunning_notifier.webhooks_channel import WebhookChannel
from dunning_notifier.webhooks_sender import WebhookSender
from dunning_tools.stack.procs import free_port, stop
from dunning_tools.stack.providers import app as providers
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


@pytest.fixture(scope="module")
def receiver(infra):
    """The provider stand-ins as a process; a slow- receiver answers after 3 s."""
    port = free_port()
    proc = providers.start(
        infra.workdir / f"hooks-{port}", port, {"hooks_slow_seconds": "3"}, infra.workdir / f"hooks-{port}.log"
    )
    yield f"http://127.0.0.1:{port}"
    stop(proc)


class World:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, api: httpx.AsyncClient, receiver: str, tenant: str):
        self.settings, self.pool, self.api, self.receiver, self.tenant = settings, pool, api, receiver, tenant
        self.name_prefix = uuid.uuid4().hex[:8]

    def hook(self, kind: str = "ok") -> tuple[str, str]:
        """(name, url) of a fresh receiver of the stand-in; `kind` is its rule (ok, fail, slow, ...)."""
        name = f"{kind}-{self.name_prefix}-{uuid.uuid4().hex[:6]}"
        return name, f"{self.receiver}/hooks/{name}"

    async def received(self, name: str) -> list[dict]:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.receiver}/_dev/hooks/{name}")).json()

    async def endpoint(self, url: str, event_types: list[str]) -> dict:
        r = await self.api.post("/v1/webhook-endpoints", json={"url": url, "event_types": event_types})
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
async def world(infra, migrated, receiver):
    schema = migrated(migrations_of("dunning_notifier"))
    settings = infra.settings(
        Settings,
        schema,
        auth_cache_seconds=0,
        webhook_retry_base_seconds=0.05,
        webhook_retry_max_seconds=0.2,
        webhook_poll_seconds=0.1,
        webhook_timeout_seconds=1.0,
        webhook_max_attempts=3,
        webhook_disable_after_failures=2,
        webhook_secret_overlap_seconds=3600,
    )
    pool = await create_pool(infra.database_url, schema, min_size=1, max_size=6)
    tenant, key = f"ten_{uuid.uuid4().hex[:20]}", f"dk_test_{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        await tenancy.provision(conn, tenant, "Webhooks Ltd", key)
    # The service's app factory with the webhook routes only (the whole notifier app: the e2e test).
    app = service_app(distribution="dunning-notifier", settings=settings, pool=pool, description="webhooks", tags=[])
    webhook_routes(app, ApiDeps(pool=pool, settings=settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://notifier", headers={"Authorization": f"Bearer {key}"}
    ) as api:
        yield World(settings, pool, api, receiver, tenant)
    await pool.close()


def example(name: str, file: str, tenant: str, **data) -> dict:
    """A catalogue example re-addressed to `tenant`, with a new id and the data fields given."""
    envelope = json.loads((EXAMPLES / name / "1" / file).read_text())
    envelope["id"] = str(uuid.uuid4())
    envelope["tenantid"] = envelope["data"]["tenant_id"] = tenant
    envelope["time"] = isoformat(utcnow())
    envelope["data"].update(data)
    validate(envelope)
    return envelope


async def running(*workers):
    return [asyncio.create_task(w.run()) for w in workers]


async def stopped(workers, tasks) -> None:
    for w in workers:
        w.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def test_an_event_published_reaches_each_subscribed_endpoint_once_signed(world, producer):
    paid_name, paid_url = world.hook()
    other_name, other_url = world.hook()
    paid = await world.endpoint(paid_url, ["invoice.paid", "payment.received"])
    await world.endpoint(other_url, ["dispute.opened"])  # not subscribed: gets nothing
    settled = example("StagesCancelled", "jpy-invoice-settled.json", world.tenant, reason="invoice_settled")
    voided = example("StagesCancelled", "eur-invoice-voided.json", world.tenant)  # not invoice.paid
    payment = example("PaymentReceived", "settling-api-payment-jpy.json", world.tenant)
    for envelope in (settled, settled, voided, payment):  # the settled one twice: redelivered
        await producer.send_and_wait(envelope_topic(envelope), dumps(envelope), key=envelope["subject"].encode())

    consumer, sender = build_consumer(world.pool, world.settings), WebhookSender(world.pool, world.settings)
    tasks = await running(consumer, sender)
    try:
        got = await async_wait_until(
            lambda: _at_least(world, paid_name, 2), timeout=60, what="invoice.paid and payment.received received"
        )
        await asyncio.sleep(1.0)  # a duplicate would arrive by now
        got = await world.received(paid_name)
    finally:
        await stopped([consumer, sender], tasks)

    assert sorted(json.loads(r["body"])["type"] for r in got) == ["invoice.paid", "payment.received"]
    for request in got:
        verified = Webhook(paid["secret"]).verify(request["body"], request["headers"])
        assert request["headers"]["content-type"] == "application/json"
        if verified["type"] == "invoice.paid":
            assert verified["data"]["invoice_id"] == settled["data"]["invoice_id"]
            assert verified["data"]["reason"] == "invoice_settled"
            assert verified["timestamp"] == settled["time"]
    assert await world.received(other_name) == []

    messages = (await world.api.get("/v1/webhook-messages", params={"status": "delivered"})).json()["data"]
    assert len(messages) == 2 and {m["endpoint_id"] for m in messages} == {paid["endpoint_id"]}
    assert {r["headers"]["webhook-id"] for r in got} == {m["message_id"] for m in messages}
    only_paid = (await world.api.get("/v1/webhook-messages", params={"event_type": "invoice.paid"})).json()["data"]
    assert [m["payload"]["data"]["invoice_id"] for m in only_paid] == [settled["data"]["invoice_id"]]
    attempts = (await world.api.get(f"/v1/webhook-endpoints/{paid['endpoint_id']}/attempts")).json()["data"]
    assert len(attempts) == 2
    assert all(a["status_code"] == 200 and a["trigger"] == "scheduled" and a["duration_ms"] >= 0 for a in attempts)
    assert all('"received":true' in a["response_snippet"].replace(" ", "") for a in attempts)


def envelope_topic(envelope: dict) -> str:
    from dunning.contracts import topic_of

    return topic_of(envelope["type"])


async def _at_least(world: World, name: str, n: int):
    got = await world.received(name)
    return got if len(got) >= n else None


async def record(world: World, envelope: dict) -> None:
    """Apply an event through the notifier's real handler (its consumer's transaction, without the broker)."""
    from dunning_notifier.handlers import HANDLERS
    from dunning_tools.testing.runner import feed, records, runner_on

    await feed(runner_on(world.pool, HANDLERS, name="t-webhooks"), records([envelope]), 10)


async def test_a_failing_endpoint_is_retried_every_attempt_recorded_then_disabled_and_replayed(world):
    name, url = world.hook("fail")
    endpoint = await world.endpoint(url, ["promise.made"])
    eid = endpoint["endpoint_id"]
    sender = WebhookSender(world.pool, world.settings)
    tasks = await running(sender)
    try:
        await record(world, example("PromiseMade", _first("PromiseMade"), world.tenant))
        first = await async_wait_until(lambda: _message_in(world, "failed"), timeout=30, what="message failed")
        assert first["attempts"] == 3 and first["last_status_code"] == 500
        attempts = (await world.api.get(f"/v1/webhook-endpoints/{eid}/attempts")).json()["data"]
        assert [a["status_code"] for a in attempts] == [500, 500, 500]
        assert all(a["error"] == "HTTP 500" and a["message_id"] == first["message_id"] for a in attempts)
        assert len(await world.received(name)) == 3
        assert (await world.api.get(f"/v1/webhook-endpoints/{eid}")).json()["enabled"] is True  # one failure

        await record(world, example("PromiseMade", _first("PromiseMade"), world.tenant))  # a second one fails
        disabled = await async_wait_until(lambda: _disabled(world, eid), timeout=30, what="endpoint disabled")
        assert disabled["disabled_reason"].startswith("failing: 2 messages in a row")
        assert disabled["consecutive_failures"] == 2 and disabled["disabled_at"] is not None

        replay = await world.api.post(f"/v1/webhook-messages/{first['message_id']}/replay")
        assert replay.status_code == 409 and "disabled" in replay.json()["detail"]

        async with httpx.AsyncClient() as client:  # the receiver is fixed
            await client.put(f"{world.receiver}/_dev/hooks/{name}/answer", json={"status": 204})
        enabled = await world.api.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": True})
        assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
        assert enabled.json()["consecutive_failures"] == 0
        replay = await world.api.post(f"/v1/webhook-messages/{first['message_id']}/replay")
        assert replay.status_code == 202 and replay.json()["state"] == "pending"

        async def delivered():
            r = await world.api.get(f"/v1/webhook-messages/{first['message_id']}")
            return r.json() if r.json()["state"] == "delivered" else None

        again = await async_wait_until(delivered, timeout=30, what="replay delivered")
        assert again["attempts"] == 4 and again["last_status_code"] == 204
    finally:
        await stopped([sender], tasks)
    attempts = (await world.api.get(f"/v1/webhook-endpoints/{eid}/attempts")).json()["data"]
    assert attempts[0]["trigger"] == "replay" and attempts[0]["status_code"] == 204
    bodies = [r for r in await world.received(name) if r["headers"]["webhook-id"] == first["message_id"]]
    assert len(bodies) == 4 and len({r["body"] for r in bodies}) == 1  # the same message each time


def _first(name: str) -> str:
    return sorted(p.name for p in (EXAMPLES / name / "1").iterdir())[0]


async def _message_in(world: World, state: str):
    data = (await world.api.get("/v1/webhook-messages", params={"status": state})).json()["data"]
    return data[0] if data else None


async def _disabled(world: World, endpoint_id: str):
    r = (await world.api.get(f"/v1/webhook-endpoints/{endpoint_id}")).json()
    return r if not r["enabled"] else None


async def test_a_final_4xx_is_not_retried_and_429_waits_for_retry_after(world):
    gone_name, gone_url = world.hook("gone")
    limit_name, limit_url = world.hook("limit")
    await world.endpoint(gone_url, ["dispute.opened"])
    limited = await world.endpoint(limit_url, ["dispute.opened"])
    sender = WebhookSender(world.pool, world.settings)
    await record(world, example("DisputeOpened", _first("DisputeOpened"), world.tenant))
    async with world.pool.acquire() as conn:
        await sender.step()
        rows = {
            r["endpoint_id"]: r
            for r in await conn.fetch("SELECT endpoint_id, state, attempts, next_attempt_at FROM webhook_messages")
        }
        attempted = await conn.fetchval(
            "SELECT attempted_at FROM webhook_attempts WHERE endpoint_id = $1", limited["endpoint_id"]
        )
    states = sorted((r["state"], r["attempts"]) for r in rows.values())
    assert states == [("failed", 1), ("pending", 1)]  # 410 final at once; 429 retried
    wait = rows[limited["endpoint_id"]]["next_attempt_at"] - attempted
    assert wait >= timedelta(seconds=0.9)  # Retry-After: 1 beats the 0.05 s backoff
    assert len(await world.received(gone_name)) == len(await world.received(limit_name)) == 1


async def test_secret_rotation_signs_with_both_secrets_during_the_overlap(world):
    name, url = world.hook()
    endpoint = await world.endpoint(url, ["dunning.paused"])
    rotated = await world.api.post(f"/v1/webhook-endpoints/{endpoint['endpoint_id']}/secret/rotate")
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["secret"] != endpoint["secret"] and new["previous_secret_expires_at"] is not None
    assert "secret" not in (await world.api.get(f"/v1/webhook-endpoints/{endpoint['endpoint_id']}")).json()
    await record(world, example("DunningPaused", _first("DunningPaused"), world.tenant))
    await WebhookSender(world.pool, world.settings).step()
    (request,) = await world.received(name)
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(endpoint["secret"]).verify(request["body"], request["headers"])
    Webhook(new["secret"]).verify(request["body"], request["headers"])


def reminder(world: World) -> Delivery:
    stage = json.loads((EXAMPLES / "StageEscalated" / "1" / _first("StageEscalated")).read_text())["data"]
    stage["tenant_id"] = world.tenant
    return Delivery(
        delivery_id=f"dlv_{uuid.uuid4().hex[:26]}",
        tenant_id=world.tenant,
        invoice_id=stage["invoice_id"],
        stage_id=stage["stage_id"],
        stage=stage["stage"],
        channel="webhook",
        recipient=None,
        attempts=1,
        payload=stage,
    )


async def test_the_webhook_channel_posts_reminder_due_to_subscribed_endpoints(world):
    channel = WebhookChannel(world.settings, pool=world.pool)
    d = reminder(world)
    nothing = await channel.send(d)
    assert isinstance(nothing, Failed) and nothing.error_code == "channel_not_configured" and nothing.permanent

    name, url = world.hook()
    endpoint = await world.endpoint(url, ["reminder.due"])
    sent = await channel.send(d)
    assert isinstance(sent, Sent) and sent.provider_message_id == endpoint["endpoint_id"]
    (request,) = await world.received(name)
    body = Webhook(endpoint["secret"]).verify(request["body"], request["headers"])
    assert request["headers"]["webhook-id"] == d.delivery_id
    assert body["type"] == "reminder.due"
    assert body["data"]["delivery_id"] == d.delivery_id
    assert body["data"]["invoice"]["balance"] == d.payload["invoice"]["balance"]
    assert body["data"]["invoice"]["payment_url"] == d.payload["invoice"]["payment_url"]
    (attempt,) = (await world.api.get(f"/v1/webhook-endpoints/{endpoint['endpoint_id']}/attempts")).json()["data"]
    assert (
        attempt["trigger"] == "reminder" and attempt["delivery_id"] == d.delivery_id and attempt["message_id"] is None
    )


async def test_a_webhook_reminder_timing_out_after_sending_is_retried_in_doubt(world):
    channel = WebhookChannel(world.settings, pool=world.pool)  # timeout 1 s; the slow receiver takes 3
    name, url = world.hook("slow")
    await world.endpoint(url, ["reminder.due"])
    outcome = await channel.send(reminder(world))
    assert isinstance(outcome, Retry) and outcome.in_doubt and outcome.error_code == "webhook_network"
    assert len(await world.received(name)) == 1  # it got there: hence in doubt


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"url": "ftp://x.example/", "event_types": ["invoice.paid"]}, "url", id="scheme"),
        pytest.param({"url": "https://x.example/", "event_types": ["invoice.eaten"]}, "event_types", id="type"),
        pytest.param({"url": "https://x.example/", "event_types": []}, "event_types", id="no-types"),
        pytest.param({"url": "https://x.example/"}, "event_types", id="missing"),
        pytest.param(
            {"url": "https://x.example/", "event_types": ["invoice.paid"], "secret": "x"}, "secret", id="extra"
        ),
    ],
)
async def test_bad_endpoints_are_refused_naming_the_field_and_change_nothing(world, body, field):
    r = await world.api.post("/v1/webhook-endpoints", json=body)
    assert r.status_code == 422, r.text
    assert any(field in e["field"] for e in r.json()["errors"])
    assert (await world.api.get("/v1/webhook-endpoints")).json()["data"] == []


async def test_unknown_ids_and_filters_are_clear_4xx(world):
    assert (await world.api.get("/v1/webhook-endpoints/whe_01NOSUCHENDPOINT00000000")).status_code == 404
    assert (await world.api.get("/v1/webhook-endpoints/not-an-id")).status_code == 404
    assert (await world.api.delete("/v1/webhook-endpoints/whe_01NOSUCHENDPOINT00000000")).status_code == 404
    assert (await world.api.post("/v1/webhook-messages/msg_01NOSUCHMESSAGE000000000/replay")).status_code == 404
    r = await world.api.get("/v1/webhook-messages", params={"status": "lost"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith("status")
    r = await world.api.get("/v1/webhook-messages", params={"event_type": "invoice.eaten"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "event_type"
    name, url = world.hook()
    e = await world.endpoint(url, ["invoice.paid"])
    r = await world.api.patch(f"/v1/webhook-endpoints/{e['endpoint_id']}", json={"url": "javascript:alert(1)"})
    assert (
        r.status_code == 422 and (await world.api.get(f"/v1/webhook-endpoints/{e['endpoint_id']}")).json()["url"] == url
    )
    assert (await world.api.delete(f"/v1/webhook-endpoints/{e['endpoint_id']}")).status_code == 204
    assert (await world.api.get(f"/v1/webhook-endpoints/{e['endpoint_id']}")).status_code == 404


async def test_a_run_of_events_records_the_same_messages_as_one_event_at_a_time(world):
    """record_messages_batch (the consumer's path for the types read only for webhooks) against
    record_messages, the reference: the same (endpoint, type, source event, body) rows, and a second
    pass records nothing (no inbox for these types: the unique (endpoint, source event) holds)."""
    from dunning.events import decode
    from dunning_notifier import webhooks_catalogue as catalogue

    _, first = world.hook()
    _, second = world.hook()
    await world.endpoint(first, ["payment.received", "reminder.sent"])
    await world.endpoint(second, ["payment.received"])
    other = f"ten_{uuid.uuid4().hex[:20]}"  # another tenant's events: none of these endpoints' business
    envelopes = [
        example("PaymentReceived", "settling-api-payment-jpy.json", world.tenant),
        example("ReminderSent", "eur-soft-email.json", world.tenant),
        example("ReminderSent", "jpy-firm-email.json", other),
        example("PaymentReceived", "partial-stripe-payment.json", world.tenant),
    ]
    events = [decode(dumps(e)) for e in envelopes]

    async def recorded() -> list[tuple]:
        rows = await world.pool.fetch(
            "SELECT endpoint_id, event_type, source_event_id::text AS s, body FROM webhook_messages"
            " ORDER BY source_event_id, endpoint_id"
        )
        return [tuple(r) for r in rows]

    async with world.pool.acquire() as conn:
        for event in events:
            await catalogue.record_messages(conn, event)
    one_at_a_time = await recorded()
    await world.pool.execute("DELETE FROM webhook_messages")
    async with world.pool.acquire() as conn:
        await catalogue.record_messages_batch(conn, events)
        batched = await recorded()
        await catalogue.record_messages_batch(conn, events)  # redelivered
    assert batched == one_at_a_time and len(batched) == 5  # 2 payments x 2 endpoints + 1 reminder.sent
    assert await recorded() == batched


async def test_outcomes_of_one_endpoints_messages_recorded_at_once_never_deadlock(world):
    """Two replicas' senders record outcomes of the same endpoint's messages at the same moment: each
    takes the endpoint's row lock before its message's (as a DELETE of the endpoint, cascading to its
    messages, does), so none waits on another in a cycle and every outcome is recorded."""
    from dunning_notifier import webhooks_repository as repo
    from dunning_notifier.webhooks_http import Answer

    _, url = world.hook()
    endpoint = await world.endpoint(url, ["promise.made"])
    for _ in range(24):
        await record(world, example("PromiseMade", _first("PromiseMade"), world.tenant))
    async with world.pool.acquire() as conn:
        rows = await repo.claim_due(conn, 24, 60)
    assert len(rows) == 24
    senders = [WebhookSender(world.pool, world.settings) for _ in range(2)]

    async def outcome(i: int, row) -> None:
        status = 500 if i % 3 else 204
        answer = Answer(utcnow(), 5, status, None, "HTTP 500" if status == 500 else None)
        async with world.pool.acquire() as conn:
            await senders[i % 2]._record(conn, row, answer)

    await asyncio.gather(*(outcome(i, row) for i, row in enumerate(rows)))
    attempts = await world.pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = $1", endpoint["endpoint_id"]
    )
    sending = await world.pool.fetchval("SELECT count(*) FROM webhook_messages WHERE state = 'sending'")
    assert (attempts, sending) == (24, 0)
