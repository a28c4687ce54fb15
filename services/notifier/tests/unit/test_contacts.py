"""Contacts: who a claimed delivery goes to (the contacts row over the event's snapshot), and the Cc
header the e-mail channel writes for the copies."""

import email
import email.policy

import pytest

from dunning_notifier.channels import EmailChannel
from dunning_notifier.contacts import addresses, current
from dunning_notifier.mime import cc_header
from dunning_notifier.outcomes import Delivery
from dunning_notifier.rendering import Renderer
from dunning_notifier.settings import Settings

pytestmark = pytest.mark.unit
NO_CONTACT = dict.fromkeys(("contact_name", "contact_email", "contact_cc", "contact_locale", "contact_timezone"))


def claimed(data: dict, channel: str = "email", **contact) -> dict:
    """A row as repository.claim_due returns it."""
    return {
        "delivery_id": "dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0",
        "tenant_id": data["tenant_id"],
        "invoice_id": data["invoice_id"],
        "stage_id": data["stage_id"],
        "stage": data["stage"],
        "channel": channel,
        "recipient": data["customer"]["email"] if channel == "email" else None,
        "attempts": 1,
        "payload": data,
        "traceparent": None,
        **NO_CONTACT,
        **{f"contact_{k}": v for k, v in contact.items()},
    }


AP, A, B = "ap@x.example", "a@x.example", "b@x.example"


@pytest.mark.parametrize(
    ("channel", "email", "cc", "expected"),
    [
        pytest.param("email", AP, [A, B], (AP, (A, B)), id="to-and-copies"),
        pytest.param("email", AP, [AP.upper(), A, A.upper()], (AP, (A,)), id="no-address-twice"),
        pytest.param("email", "", [], (None, ()), id="no-address"),
        pytest.param("sms", AP, [A], (None, ()), id="not-an-email-channel"),
    ],
)
def test_addresses_of_a_channel(channel, email, cc, expected):
    assert addresses(channel, email, cc) == expected


def test_without_a_contacts_row_the_snapshot_as_recorded(stage_data):
    data = stage_data(name="Snapshot Corp")
    assert current(claimed(data)) == (data, data["customer"]["email"], ())
    delivery = Delivery.from_row(claimed(data))
    assert (delivery.recipient, delivery.cc, delivery.payload) == (data["customer"]["email"], (), data)


def test_a_contacts_row_replaces_the_customer_for_sending_and_rendering(stage_data):
    data = stage_data(name="Old Name", locale="en-US", currency="EUR")
    row = claimed(
        data, name="Neu GmbH", email="ap@neu.example", cc=["cfo@neu.example"], locale="de-DE", timezone="Europe/Berlin"
    )
    delivery = Delivery.from_row(row)
    assert (delivery.recipient, delivery.cc) == ("ap@neu.example", ("cfo@neu.example",))
    customer = delivery.payload["customer"]
    assert customer == data["customer"] | {
        "name": "Neu GmbH",
        "email": "ap@neu.example",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
    }
    assert data["customer"]["name"] == "Old Name"  # the recorded payload is left as it was
    assert "1.250,00\xa0€" in Renderer().render(delivery.payload).text


def test_a_contacts_row_gives_no_address_to_a_channel_without_one(stage_data):
    data = stage_data(channel="sms")
    delivery = Delivery.from_row(
        claimed(data, "sms", name="N", email="ap@x.example", cc=["c@x.example"], locale="en-GB", timezone="UTC")
    )
    assert (delivery.recipient, delivery.cc) == (None, ())


def _build(data: dict, cc: tuple[str, ...], recipient: str | None = None):
    delivery = Delivery(**{**Delivery.from_row(claimed(data)).__dict__, "cc": cc})
    if recipient is not None:
        delivery = Delivery(**{**delivery.__dict__, "recipient": recipient})
    renderer = Renderer()
    raw, _, utf8 = EmailChannel(Settings(), renderer).build(delivery, renderer.render(data))
    return email.message_from_bytes(raw, policy=email.policy.default), raw, utf8


def test_copies_go_in_a_cc_header(stage_data):
    data = stage_data()
    copies = tuple(f"person{i}@accounts-payable.example" for i in range(10))
    msg, raw, utf8 = _build(data, copies)
    assert [a.addr_spec for a in msg["Cc"].addresses] == list(copies)
    assert [a.addr_spec for a in msg["To"].addresses] == [data["customer"]["email"]]
    cc_lines = raw.split(b"\r\nCc: ", 1)[1].split(b"\r\n")[: len(copies)]
    assert all(len(line) <= 78 for line in cc_lines) and cc_lines[-1].strip() == copies[-1].encode()  # folded
    assert not utf8


def test_no_copies_no_cc_header(stage_data):
    msg, _, _ = _build(stage_data(), ())
    assert msg["Cc"] is None


def test_a_non_ascii_copy_needs_smtputf8(stage_data):
    _, raw, utf8 = _build(stage_data(), ("buchhaltung@müller.example",))
    assert utf8 and "Cc: buchhaltung@müller.example".encode() in raw


@pytest.mark.parametrize("copy", ["no-at-sign", "a@b.example, c@d.example", "x@y.example\r\nBcc: v@w.example"])
def test_an_unusable_copy_is_refused(stage_data, copy):
    with pytest.raises(ValueError, match="not an e-mail address"):
        _build(stage_data(), ("fine@x.example", copy))


def test_cc_header_stays_on_one_line_when_it_fits():
    assert cc_header(["a@x.example", "b@x.example"]) == "a@x.example, b@x.example"


ADDRESS = {"name": None, "lines": ["Friedrichstraße 123"], "postal_code": "10117", "city": "Berlin", "country": "DE"}


@pytest.mark.parametrize(
    ("channel", "phone", "address", "expected"),
    [
        pytest.param("sms", "+4930123456", ADDRESS, ("+4930123456", ()), id="sms-to-the-phone"),
        pytest.param("call", "+4930123456", None, ("+4930123456", ()), id="call-to-the-phone"),
        pytest.param("sms", None, ADDRESS, (None, ()), id="sms-without-a-phone"),
        pytest.param("letter", "+4930123456", ADDRESS, ("Friedrichstraße 123, 10117 Berlin, DE", ()), id="letter"),
        pytest.param("letter", None, None, (None, ()), id="letter-without-an-address"),
        pytest.param("webhook", "+4930123456", ADDRESS, (None, ()), id="webhook-has-none"),
    ],
)
def test_addresses_of_the_phone_and_letter_channels(channel, phone, address, expected):
    assert addresses(channel, AP, [A], phone, address) == expected


def test_the_contacts_row_overrides_the_snapshots_phone_and_address(stage_data):
    data = stage_data()
    data["customer"] |= {"phone": "+4930000001", "postal_address": {**ADDRESS, "city": "Old Town"}}
    row = claimed(
        data,
        channel="sms",
        name="Now GmbH",
        email=AP,
        cc=[],
        locale="de-DE",
        timezone="Europe/Berlin",
        phone="+4989123456",
        postal_address=ADDRESS,
    )
    payload, to, cc = current(row)
    assert (to, cc) == ("+4989123456", ())
    assert payload["customer"]["phone"] == "+4989123456" and payload["customer"]["postal_address"] == ADDRESS
    letter = current({**row, "channel": "letter"})
    assert letter[1] == "Friedrichstraße 123, 10117 Berlin, DE"


def test_a_contacts_row_without_a_phone_clears_the_snapshots(stage_data):
    data = stage_data()
    data["customer"] |= {"phone": "+4930000001", "postal_address": ADDRESS}
    row = claimed(data, channel="sms", name="N", email=AP, cc=[], locale="en", timezone="UTC")
    payload, to, _ = current(row)
    assert to is None and "phone" not in payload["customer"] and "postal_address" not in payload["customer"]


def test_without_a_contacts_row_an_sms_goes_to_the_recorded_phone(stage_data):
    data = stage_data()
    data["customer"]["phone"] = "+4930123456"
    row = {**claimed(data, channel="sms"), "recipient": "+4930123456"}
    assert current(row)[1] == "+4930123456"
