"""ReminderDeliveryUpdated on the invoice's timeline: an SMS Twilio accepted (ReminderSent) and then
reported undelivered shows the stage failed with the provider's error, in either arrival order."""

from datetime import UTC, datetime, timedelta

import pytest

from dunning.ids import new_id

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)


def sms_story(kit, invoice_id: str) -> list[dict]:
    stage = {"stage_id": new_id("stg"), "stage": "firm", "channel": "sms"}
    common = {"tenant_id": kit.TENANT, "invoice_id": invoice_id}
    sent = kit.event_like(
        "ReminderSent",
        "eur-soft-email.json",
        **common,
        **stage,
        recipient="+4915112340000",
        provider_message_id="SM" + "1" * 32,
        sent_at=T0,
    )
    updated = kit.event_like(
        "ReminderDeliveryUpdated",
        "sms-undelivered-unreachable-handset.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice_id,
        **stage,
        provider_message_id="SM" + "1" * 32,
        reported_at=T0 + timedelta(seconds=9),
    )
    return [sent, updated]


@pytest.mark.parametrize("order", [pytest.param((0, 1), id="in-order"), pytest.param((1, 0), id="reversed")])
async def test_an_undelivered_sms_shows_the_stage_failed_with_the_providers_error(client, pool, kit, order):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    events = sms_story(kit, invoice["id"])
    for i in order:
        assert await kit.apply(pool, events[i])
    [stage] = (await client.get(f"/v1/invoices/{invoice['id']}")).json()["timeline"]
    assert (stage["stage"], stage["channel"], stage["state"]) == ("firm", "sms", "failed")
    assert stage["reason"] == "twilio: undelivered (error 30003) to +4915112340000"
    assert [h["state"] for h in stage["history"]] == ["sent", "failed"]
