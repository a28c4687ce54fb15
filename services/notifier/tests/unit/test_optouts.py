"""Unsubscribe tokens, the RFC 8058 headers, and reading what the inbound endpoint receives: RFC 3464
DSNs (samples written here in the shapes Postfix, Exchange and a delaying relay send), automatic
replies, threading, our addresses."""

import email
import email.policy

import pytest

from dunning_notifier import inbound_mail as mail
from dunning_notifier import optouts
from dunning_notifier.outcomes import Delivery
from dunning_notifier.settings import Settings
from dunning_tools.stack.mailserver import dsn_message

pytestmark = pytest.mark.unit
DLV = "dlv_01JD5N7P9Q1R3S5T7V9W1X3Y5Z"
SETTINGS = Settings(env="dev", public_url="https://notifier.example/", inbound_smtp_port=2525)
SUBJECT = optouts.Subject(
    "ten_01JA8R2T4V6W8X0Y2Z4A6B8C0D", "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", "email", "AP@Acme.example"
)


def parse(raw: bytes | str) -> email.message.EmailMessage:
    data = raw.encode() if isinstance(raw, str) else raw
    if b"\r\n" not in data:  # the samples here are written with bare newlines
        data = data.replace(b"\n", b"\r\n")
    return email.message_from_bytes(data, policy=email.policy.default)


# --- tokens -------------------------------------------------------------------------------------


def test_a_token_names_what_it_opts_out_and_survives_case_folding():
    token = optouts.sign(SUBJECT, SETTINGS)
    assert token == token.lower() and "=" not in token
    assert optouts.verify(token, SETTINGS) == SUBJECT._replace(address="ap@acme.example")
    assert optouts.verify(token.upper(), SETTINGS).customer_id == SUBJECT.customer_id  # a folded local part


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"), id="mac-altered"),
        pytest.param(lambda t: t.replace(t[:4], "mfrg", 1), id="subject-altered"),
        pytest.param(lambda t: t.split(".")[0], id="no-mac"),
        pytest.param(lambda t: t + "x", id="truncated-base32"),
        pytest.param(lambda t: "not a token", id="garbage"),
    ],
)
def test_an_altered_token_is_refused(mangle):
    with pytest.raises(optouts.BadToken):
        optouts.verify(mangle(optouts.sign(SUBJECT, SETTINGS)), SETTINGS)


def test_a_token_signed_with_another_secret_is_refused():
    other = Settings(unsubscribe_secret="x" * 40)
    with pytest.raises(optouts.BadToken):
        optouts.verify(optouts.sign(SUBJECT, other), SETTINGS)


def test_without_a_secret_there_is_no_default_outside_dev():
    assert Settings().unsubscribe_secret is None
    assert Settings(env="dev").unsubscribe_secret is not None


# --- headers ------------------------------------------------------------------------------------


def _delivery(**kw) -> Delivery:
    base = dict(
        delivery_id=DLV,
        tenant_id=SUBJECT.tenant_id,
        invoice_id="inv_01JD2Q4R6S8T0V2W4X6Y8Z0A2B",
        stage_id="stg_01JD2Q4S1T2V3W4X5Y6Z7A8B9C",
        stage="soft",
        channel="email",
        recipient="ap@acme.example",
        attempts=1,
        payload={"customer": {"customer_id": SUBJECT.customer_id}},
    )
    return Delivery(**{**base, **kw})


def test_a_reminder_carries_one_click_headers_and_a_reply_address():
    headers = dict(optouts.list_unsubscribe_headers(_delivery(), SETTINGS))
    msg = parse("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\nbody\r\n")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [part.strip().strip("<>") for part in str(msg["List-Unsubscribe"]).split(",")]
    token = https.rsplit("/", 1)[1]
    assert https == f"https://notifier.example/v1/unsubscribe/{token}"
    assert mailto == f"mailto:unsubscribe+{token}@dunning.localhost"
    assert optouts.verify(token, SETTINGS).address == "ap@acme.example"
    assert msg["Reply-To"] == f"reply+{DLV}@dunning.localhost"
    assert optouts.envelope_from(_delivery(), SETTINGS) == f"bounce+{DLV}@dunning.localhost"


def test_a_tenant_reply_to_wins_and_no_secret_means_no_list_unsubscribe():
    own = optouts.list_unsubscribe_headers(_delivery(), SETTINGS, [("Reply-To", "ar@tenant.example")])
    assert "Reply-To" not in dict(own)
    assert optouts.list_unsubscribe_headers(_delivery(), Settings(public_url="https://n.example")) == []


@pytest.mark.parametrize(
    "order,channel,configured,expected",
    [
        pytest.param(("email", "sms", "letter"), "email", {"email", "sms", "letter"}, ["sms", "letter"], id="next"),
        pytest.param(("email", "sms", "letter"), "email", {"email", "letter"}, ["letter"], id="skips-unconfigured"),
        pytest.param(("email", "sms", "letter"), "letter", {"email", "sms", "letter"}, [], id="last"),
        pytest.param(("sms", "email"), "webhook", {"email", "sms", "webhook"}, [], id="not-in-order"),
    ],
)
def test_next_channels_follow_the_tenants_order(order, channel, configured, expected):
    assert optouts.next_channels(order, channel, configured) == expected


# --- our addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address,expected",
    [
        pytest.param(f"bounce+{DLV}@Dunning.Localhost", mail.Target("bounce", DLV), id="bounce"),
        pytest.param(f"<reply+{DLV}@dunning.localhost>", mail.Target("reply", DLV), id="reply"),
        pytest.param("unsubscribe+abc.def@dunning.localhost", mail.Target("unsubscribe", "abc.def"), id="unsub"),
        pytest.param(f"reply+{DLV}@elsewhere.example", None, id="other-domain"),
        pytest.param("reply+nope@dunning.localhost", None, id="not-a-delivery"),
        pytest.param("postmaster@dunning.localhost", None, id="no-plus"),
    ],
)
def test_target_of(address, expected):
    assert mail.target_of(address, "dunning.localhost") == expected


# --- DSNs ---------------------------------------------------------------------------------------

POSTFIX = f"""From: MAILER-DAEMON@mx1.customer.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce+{DLV}@dunning.localhost
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4BC2B1C0E2.1733050000/mx1.customer.example"

--4BC2B1C0E2.1733050000/mx1.customer.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx1.customer.example.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--4BC2B1C0E2.1733050000/mx1.customer.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.customer.example
X-Postfix-Queue-ID: 4BC2B1C0E2
Arrival-Date: Tue,  1 Dec 2026 09:00:01 +0000 (UTC)

Final-Recipient: rfc822; ap@customer.example
Original-Recipient: rfc822;ap@customer.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mailstore.customer.example
Diagnostic-Code: smtp; 550 5.1.1 <ap@customer.example>: Recipient address
    rejected: User unknown in virtual mailbox table

--4BC2B1C0E2.1733050000/mx1.customer.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Message-ID: <{DLV}@dunning.invalid>
X-Dunning-Delivery-Id: {DLV}
Subject: Payment reminder

--4BC2B1C0E2.1733050000/mx1.customer.example--
"""

EXCHANGE = """From: postmaster@customer.example
To: ar@tenant.example
Subject: Undeliverable: Payment reminder
Content-Type: multipart/report; report-type=delivery-status; boundary="_000_"
MIME-Version: 1.0

--_000_
Content-Type: text/plain; charset="us-ascii"

Delivery has failed to these recipients or groups.

--_000_
Content-Type: message/delivery-status

Reporting-MTA: dns;EX01.customer.example
Received-From-MTA: dns;relay.tenant.example

Final-Recipient: rfc822;old.ap@customer.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--_000_
Content-Type: message/rfc822

From: Accounts Receivable <ar@tenant.example>
Message-ID: <dlv_01JE1A3B5C7D9E1F3G5H7J9K1M@dunning.invalid>
Subject: Payment reminder

Dear customer...

--_000_--
"""

DELAYED = f"""From: MAILER-DAEMON@relay.example
To: bounce+{DLV}@dunning.localhost
Subject: Delayed Mail (still being retried)
Content-Type: multipart/report; report-type=delivery-status; boundary="D"
MIME-Version: 1.0

--D
Content-Type: text/plain

Your message is delayed; we keep trying for 5 days.

--D
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example

Final-Recipient: rfc822; ap@slow.example
Action: delayed
Status: 4.4.7
Will-Retry-Until: Sun, 6 Dec 2026 09:00:00 +0000

--D--
"""


def test_a_postfix_dsn_reports_a_permanent_failure_and_names_the_delivery():
    report = mail.parse_report(parse(POSTFIX))
    assert report is not None and report.delivery_id == DLV
    [r] = report.recipients
    assert (r.recipient, r.action, r.status, r.permanent_failure) == ("ap@customer.example", "failed", "5.1.1", True)
    assert r.diagnostic is not None and "User unknown in virtual mailbox table" in r.diagnostic


def test_an_exchange_dsn_names_the_delivery_by_the_returned_messages_id():
    report = mail.parse_report(parse(EXCHANGE))
    assert report is not None and report.delivery_id == "dlv_01JE1A3B5C7D9E1F3G5H7J9K1M"
    assert [(r.recipient, r.status) for r in report.recipients] == [("old.ap@customer.example", "5.1.10")]


def test_a_delayed_dsn_is_not_a_failure():
    report = mail.parse_report(parse(DELAYED))
    assert report is not None and report.delivery_id is None
    [r] = report.recipients
    assert (r.action, r.status, r.permanent_failure) == ("delayed", "4.4.7", False)


def test_the_dev_mail_servers_dsn_is_a_dsn_we_read():
    original = f"Message-ID: <{DLV}@dunning.invalid>\r\nX-Dunning-Delivery-Id: {DLV}\r\n\r\nbody\r\n".encode()
    report = mail.parse_report(parse(dsn_message(f"bounce+{DLV}@dunning.localhost", "ap+bounce@x.example", original)))
    assert report is not None and report.delivery_id == DLV
    assert [(r.recipient, r.permanent_failure) for r in report.recipients] == [("ap+bounce@x.example", True)]


def test_a_plain_message_is_not_a_dsn():
    assert mail.parse_report(parse("Subject: hello\n\nhi\n")) is None


# --- replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers,auto",
    [
        pytest.param("Subject: Re: reminder\n", False, id="person"),
        pytest.param("Subject: Re: reminder\nAuto-Submitted: no\n", False, id="auto-submitted-no"),
        pytest.param("Subject: Re: reminder\nAuto-Submitted: auto-replied\n", True, id="auto-replied"),
        pytest.param("Subject: Re: reminder\nPrecedence: bulk\n", True, id="precedence-bulk"),
        pytest.param("Subject: Automatic reply: Payment reminder\n", True, id="outlook-subject"),
        pytest.param("Subject: Out of Office: Payment reminder\n", True, id="out-of-office"),
        pytest.param("Subject: Abwesenheitsnotiz: Zahlungserinnerung\n", True, id="german-ooo"),
        pytest.param("Subject: Re: reminder\nX-Autoreply: yes\n", True, id="x-autoreply"),
    ],
)
def test_auto_reply_detection(headers, auto):
    assert mail.is_auto_reply(parse(headers + "\nbody\n")) is auto


def test_a_reply_is_threaded_by_in_reply_to_then_references():
    assert mail.replied_delivery(parse(f"In-Reply-To: <{DLV}@dunning.invalid>\n\nx\n")) == DLV
    refs = f"References: <a@b.example> <{DLV}@dunning.invalid>\n\nx\n"
    assert mail.replied_delivery(parse(refs)) == DLV
    assert mail.replied_delivery(parse("In-Reply-To: <abc@x.example>\n\nx\n")) is None


def test_a_replys_text_comes_from_plain_or_html():
    assert mail.text_of(parse("Content-Type: text/plain\n\nWe paid.\n")) == "We paid."
    assert mail.text_of(parse("Content-Type: text/html\n\n<p>We&nbsp;paid <b>today</b></p>\n")) == "We\xa0paid  today"
