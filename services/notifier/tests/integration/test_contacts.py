"""A reminder goes to the customer's contacts as they are when it is sent: CustomerUpdated applied
(version-guarded) into `contacts`, then the dispatcher against real PostgreSQL and the dev SMTP
server (aiosmtpd), read back as the server stored each message (headers and SMTP envelope)."""

import pytest

from dunning.handler_table import Rejected, topics_of
from dunning.ids import new_id
from dunning_notifier.handlers import HANDLERS
from dunning_tools.stack.procs import free_port
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


def addresses(header) -> list[str]:
    return [a.addr_spec for a in header.addresses] if header is not None else []


async def test_a_reminder_after_a_customer_update_goes_to_the_new_contacts_with_ccs(notifier, stage_data):
    data = stage_data(stage="firm", locale="en-US", currency="EUR", name="Old Name Ltd")
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    old = data["customer"]["email"]
    await notifier.receive(data)  # queued with the snapshot's address; the contacts change after
    ap, cfo, ctrl = (f"{who}+{new_id('m')[-8:]}@mueller.example" for who in ("ap", "cfo", "controller"))
    await notifier.customer_updated(
        customer_id=customer_id, version=2, email=ap, cc=[cfo, ctrl], name="Müller GmbH", locale="de-DE"
    )

    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "sent")

    [mail] = await notifier.mail_for(ap)
    assert addresses(mail["To"]) == [ap] and mail["To"].addresses[0].display_name == "Müller GmbH"
    assert addresses(mail["Cc"]) == [cfo, ctrl]
    assert mail["X-Envelope-To"] == f"{ap}, {cfo}, {ctrl}"  # the SMTP envelope's recipients
    assert [m["Message-ID"] for m in await notifier.mail_for(cfo)] == [mail["Message-ID"]]  # one message
    assert "1.250,00\xa0€" in mail.get_body(("plain",)).get_content()  # rendered for the new locale
    assert await notifier.mail_for(old) == []
    assert (row["recipient"], row["cc"]) == (ap, [cfo, ctrl])  # what the sent attempt used
    [event] = await notifier.reported(data["invoice_id"])
    assert event["type"] == "dunning.ReminderSent.v1" and event["data"]["recipient"] == ap


async def test_an_older_customer_update_after_a_newer_one_changes_nothing(notifier, stage_data):
    data = stage_data()
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    newer, older = (f"{v}+{new_id('m')[-8:]}@example.com" for v in ("v3", "v2"))
    await notifier.customer_updated(customer_id=customer_id, version=3, email=newer, cc=["cc3@example.com"])
    await notifier.customer_updated(customer_id=customer_id, version=2, email=older, cc=["cc2@example.com"])
    await notifier.customer_updated(customer_id=customer_id, version=3, email=older)  # same version, again
    held = await notifier.pool.fetchrow("SELECT * FROM contacts WHERE customer_id = $1", customer_id)
    assert (held["version"], held["email"], held["cc"]) == (3, newer, ["cc3@example.com"])

    await notifier.receive(data)
    async with notifier.dispatching():
        await notifier.wait_state(data["invoice_id"], "sent")

    [mail] = await notifier.mail_for(newer)
    assert addresses(mail["Cc"]) == ["cc3@example.com"]
    assert await notifier.mail_for(older) == []


async def test_without_a_customer_update_the_reminder_goes_to_the_events_snapshot(notifier, stage_data):
    data = stage_data(name="Snapshot Corp")
    other = stage_data()  # another customer of the tenant was updated: not this one's contacts
    await notifier.customer_updated(
        customer_id=new_id("cus"), version=2, email=other["customer"]["email"], cc=["x@example.com"]
    )
    data["customer"]["customer_id"] = new_id("cus")
    await notifier.receive(data)

    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "sent")

    [mail] = await notifier.mail_for(data["customer"]["email"])
    assert mail["To"].addresses[0].display_name == "Snapshot Corp"
    assert mail["Cc"] is None and mail["X-Envelope-To"] == data["customer"]["email"]
    assert (row["recipient"], row["cc"]) == (data["customer"]["email"], [])


async def test_contacts_of_another_tenant_are_never_used(notifier, stage_data):
    data = stage_data()
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    intruder = f"intruder+{new_id('m')[-8:]}@example.com"
    await notifier.customer_updated(customer_id=customer_id, version=9, email=intruder, tenant_id="ten_other")
    await notifier.receive(data)

    async with notifier.dispatching():
        await notifier.wait_state(data["invoice_id"], "sent")

    assert len(await notifier.mail_for(data["customer"]["email"])) == 1
    assert await notifier.mail_for(intruder) == []


async def test_a_retry_goes_to_the_contacts_current_when_it_is_sent(notifier, stage_data):
    data = stage_data()
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    await notifier.receive(data)
    async with notifier.dispatching(free_port()):  # the SMTP server is down: a transient failure

        async def retried():
            row = await notifier.delivery(data["invoice_id"])
            return row["state"] == "pending" and row["attempts"] >= 1 and row

        first = await async_wait_until(retried, what="a failed attempt")
    assert (first["recipient"], first["cc"]) == (data["customer"]["email"], [])  # that attempt's addresses

    fixed = f"fixed+{new_id('m')[-8:]}@example.com"
    await notifier.customer_updated(customer_id=customer_id, version=2, email=fixed, cc=["copy@example.com"])
    async with notifier.dispatching():
        sent = await notifier.wait_state(data["invoice_id"], "sent")

    assert (sent["recipient"], sent["cc"]) == (fixed, ["copy@example.com"])
    assert len(await notifier.mail_for(fixed)) == 1
    assert await notifier.mail_for(data["customer"]["email"]) == []


async def test_a_customer_update_whose_envelope_disagrees_is_rejected(notifier, customer_updated):
    from dunning_tools.testing.handlers import apply_event

    envelope = customer_updated(customer_id=new_id("cus"), version=2, email="a@example.com")
    envelope["tenantid"] = "ten_other"
    with pytest.raises(Rejected):
        await apply_event(notifier.pool, envelope, topic="dunning.customers.v1", handlers=HANDLERS)
    assert await notifier.pool.fetchval("SELECT count(*) FROM contacts") == 0


def test_the_consumer_subscribes_to_the_customers_topic():
    # customers (contacts) and stages (deliveries, stops); invoices, payments and deliveries for the
    # webhook subscriptions (webhooks_catalogue.py)
    assert topics_of(HANDLERS) == [
        "dunning.customers.v1",
        "dunning.deliveries.v1",
        "dunning.invoices.v1",
        "dunning.payments.v1",
        "dunning.stages.v1",
    ]


async def test_an_sms_goes_to_the_phone_of_the_latest_customer_update_and_a_letter_to_its_address(notifier, stage_data):
    from dunning_notifier import repository as repo
    from dunning_notifier.outcomes import Delivery

    data = stage_data(channel="sms")
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    data["customer"]["phone"] = "+4930123456"
    await notifier.receive(data)
    assert (await notifier.delivery(data["invoice_id"], "sms"))["recipient"] == "+4930123456"  # the snapshot's

    address = {"lines": ["Hauptstraße 1"], "postal_code": "80331", "city": "München", "country": "DE"}
    email = f"ap+{new_id('m')[-8:]}@x.example"
    await notifier.customer_updated(
        customer_id=customer_id, version=2, email=email, phone="+4989123456", postal_address=address
    )
    stored = await notifier.pool.fetchrow(
        "SELECT phone, postal_address FROM contacts WHERE customer_id = $1", customer_id
    )
    assert (stored["phone"], stored["postal_address"]) == ("+4989123456", address)
    claimed = [r for r in await repo.claim_due(notifier.pool, 100, 60) if r["invoice_id"] == data["invoice_id"]]
    delivery = Delivery.from_row(claimed[0])
    assert delivery.recipient == "+4989123456"
    assert delivery.payload["customer"]["postal_address"] == address
