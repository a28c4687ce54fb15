"""Rendering: tone per stage, locale formatting, payment link, escaping, sandbox, message headers."""

import email
import email.policy

import pytest
from jinja2.sandbox import SecurityError

from dunning_notifier.channels import EmailChannel, NotConfigured, scheduled_at
from dunning_notifier.outcomes import Delivery, Failed
from dunning_notifier.rendering import Renderer, RenderError
from dunning_notifier.settings import Settings

pytestmark = pytest.mark.unit
NBSP = "\xa0"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(sender_name="Accounts Receivable")


@pytest.mark.parametrize(
    ("locale", "currency", "amount", "expected_amount", "expected_due"),
    [
        pytest.param("de-DE", "EUR", "1250.00", f"1.250,00{NBSP}€", "16. November 2026", id="de-DE-EUR"),
        pytest.param("ja-JP", "JPY", "1250", "￥1,250", "2026年11月16日", id="ja-JP-JPY-no-decimals"),
        pytest.param("en-US", "USD", "1250.00", "$1,250.00", "November 16, 2026", id="en-US-USD"),
    ],
)
def test_amount_and_dates_are_formatted_for_the_customers_locale(
    stage_data, renderer, locale, currency, amount, expected_amount, expected_due
):
    out = renderer.render(stage_data(locale=locale, currency=currency, amount=amount))
    for part in (out.text, out.html):
        assert expected_amount in part
        assert expected_due in part
    assert out.locale == locale


@pytest.mark.parametrize(
    ("stage", "subject_words", "body_words"),
    [
        pytest.param("pre_due", "Heads-up", "friendly heads-up", id="pre_due"),
        pytest.param("soft", "Reminder", "gentle reminder", id="soft"),
        pytest.param("firm", "Overdue notice", "suspend further deliveries", id="firm"),
        pytest.param("final", "Final notice", "collections agency", id="final"),
        pytest.param("collections", "is being escalated", "further collection steps may follow", id="collections"),
        pytest.param("courtesy_call", "Payment reminder", "This is a reminder about invoice", id="unknown-key-generic"),
    ],
)
def test_each_stage_has_its_own_tone(stage_data, renderer, stage, subject_words, body_words):
    data = stage_data(stage=stage)
    out = renderer.render(data)
    assert subject_words in out.subject
    assert data["invoice"]["number"] in out.subject
    assert body_words in out.text
    assert body_words in out.html
    assert "\n" not in out.subject


PROMISE = {
    "kind": "promise_broken",
    "promise_id": "prm_01JD8X0000000000000000",
    "promised_amount": "500.00",
    "promised_date": "2026-11-20",
}


def _instalment(number: str, due_date: str) -> dict:
    return {
        "kind": "instalment",
        "plan_id": "pln_01JD8X0000000000000000",
        "number": number,
        "instalments": "4",
        "amount": "312.50",
        "due_date": due_date,
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("template", "context", "subject", "quoted"),
    [
        pytest.param(
            "promise_broken",
            PROMISE,
            f"Ihre Zahlungszusage über 500,00{NBSP}€ bis zum 20. November 2026",
            [f"bis zum 20. November 2026 500,00{NBSP}€ auf die Rechnung", "die Zusage ist damit hinfällig"],
            id="promise_broken-quotes-amount-and-date",
        ),
        pytest.param(
            "instalment_pre_due",
            _instalment("2", "2026-11-26"),
            f"Rate 2 von 4 (312,50{NBSP}€) ist am 26. November 2026 fällig",
            ["Rate 2 von 4", f"312,50{NBSP}€", "ist am 26. November 2026 fällig", "(in 3 Tagen)"],
            id="instalment_pre_due-number-amount-due-date",
        ),
        pytest.param(
            "instalment_overdue",
            _instalment("3", "2026-11-20"),
            f"Rate 3 von 4 (312,50{NBSP}€) war am 20. November 2026 fällig",
            ["Rate 3 von 4", f"312,50{NBSP}€", "war am 20. November 2026 fällig", "(seit 3 Tagen überfällig)"],
            id="instalment_overdue-number-amount-due-date",
        ),
    ],
)
def test_promise_and_instalment_reminders_quote_the_context(stage_data, renderer, template, context, subject, quoted):
    data = stage_data(stage=template, locale="de-DE", currency="EUR", amount="1250.00")
    data["context"] = context  # fired 2026-11-23 (customer's calendar)
    out = renderer.render(data)
    assert subject in out.subject
    for words in quoted:
        assert words in out.text
        assert words.replace("(", "").replace(")", "") in out.html.replace("<strong>", "").replace("</strong>", "")
    assert data["invoice"]["number"] in out.text


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(None, id="no-context"),
        pytest.param({"kind": "promise_broken", "promised_amount": "500.00"}, id="promise-without-date"),
        pytest.param(dict(PROMISE, promised_amount="five hundred"), id="amount-not-a-decimal"),
    ],
)
def test_a_promise_broken_reminder_without_its_promise_is_a_render_error(stage_data, renderer, context):
    data = stage_data(stage="promise_broken")
    data["context"] = context
    with pytest.raises(RenderError):
        renderer.render(data)


def test_days_overdue_counts_in_the_customers_calendar(stage_data, renderer):
    data = stage_data(stage="firm", due_date="2026-11-16")  # fired 2026-11-23 08:00Z = 03:00 in New York
    assert "is 7 days past due" in renderer.render(data).subject
    data["customer"]["timezone"] = "Pacific/Kiritimati"  # UTC+14: already the 23rd there too
    assert "is 7 days past due" in renderer.render(data).subject
    data["fired_at"] = "2026-11-23T02:00:00Z"  # still the 22nd in New York
    data["customer"]["timezone"] = "America/New_York"
    assert "is 6 days past due" in renderer.render(data).subject


def test_payment_link_only_when_present(stage_data, renderer):
    with_link = renderer.render(stage_data(payment_url="https://pay.example.com/i/abc?x=1&y=2"))
    assert "Pay online: https://pay.example.com/i/abc?x=1&y=2" in with_link.text
    assert 'href="https://pay.example.com/i/abc?x=1&amp;y=2"' in with_link.html
    without = renderer.render(stage_data(payment_url=None))
    assert "Pay online" not in without.text
    assert "href=" not in without.html


def test_partial_payment_shows_total_and_balance(stage_data, renderer):
    data = stage_data(locale="de-DE", currency="EUR")
    data["invoice"].update(amount_due="1250.00", balance="750.00")
    out = renderer.render(data)
    assert f"Rechnungsbetrag:    1.250,00{NBSP}€" in out.text  # in the customer's language (de)
    assert f"Offener Betrag:     750,00{NBSP}€" in out.text


def test_customer_name_is_escaped_in_html_but_not_in_text(stage_data, renderer):
    out = renderer.render(stage_data(name='<script>alert("x")</script> & Co'))
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in out.html
    assert '<script>alert("x")</script> & Co' in out.text


def test_unknown_locale_falls_back_to_en_us(stage_data, renderer):
    out = renderer.render(stage_data(locale="zz-ZZ", currency="USD"))
    assert "$1,250.00" in out.text
    assert out.locale == "en-US"


def test_sandbox_blocks_dunder_attributes(renderer):
    template = renderer.env.from_string("{{ invoice.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        template.render(invoice={"number": "1"})
    with pytest.raises(SecurityError):
        renderer.env.from_string("{{ ''.__class__.__subclasses__() }}").render()


def write_templates(directory, name: str, source: str) -> None:
    """An e-mail template `name` (its subject, text and HTML parts) in `directory`, each part `source`."""
    directory.mkdir(parents=True, exist_ok=True)
    for part in ("subject", "txt", "html"):
        (directory / f"{name}.{part}.j2").write_text(source)


def test_hostile_template_file_becomes_a_render_error(stage_data, tmp_path):
    write_templates(tmp_path / "email", "generic", "{{ customer.__class__.__base__.__subclasses__() }}")
    with pytest.raises(RenderError, match="unsafe"):
        Renderer(tmp_path).render(stage_data())


def test_missing_variable_is_a_render_error_not_a_blank(stage_data, tmp_path):
    write_templates(tmp_path / "email", "generic", "PO {{ invoice.po_number }}")
    with pytest.raises(RenderError, match="po_number"):
        Renderer(tmp_path).render(stage_data())


def test_per_locale_templates_are_tried_first(stage_data, tmp_path):
    write_templates(tmp_path / "email", "soft", "EN {{ invoice.number }}")
    write_templates(tmp_path / "email" / "de", "soft", "DE {{ invoice.balance }}")
    r = Renderer(tmp_path)
    assert r.render(stage_data(locale="de-DE", currency="EUR")).subject == f"DE 1.250,00{NBSP}€"
    assert r.render(stage_data(locale="de-AT", currency="EUR")).subject.startswith("DE ")
    assert r.render(stage_data(locale="en-GB")).subject.startswith("EN ")


def _delivery(data: dict, channel: str = "email") -> Delivery:
    return Delivery(
        delivery_id="dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0",
        tenant_id=data["tenant_id"],
        invoice_id=data["invoice_id"],
        stage_id=data["stage_id"],
        stage=data["stage"],
        channel=channel,
        recipient=data["customer"]["email"],
        attempts=1,
        payload=data,
    )


def test_message_is_multipart_with_dunning_headers(stage_data, renderer):
    data = stage_data(stage="firm", locale="ja-JP", currency="JPY", amount="158000", name="株式会社サクラ商事")
    channel = EmailChannel(Settings(), renderer)
    raw, msg_id, utf8 = channel.build(_delivery(data), renderer.render(data))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg_id == "<dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0@dunning.invalid>" == msg["Message-ID"]
    assert msg["From"] == "Accounts Receivable <ar@dunning.localhost>"
    assert msg["To"].addresses[0].addr_spec == data["customer"]["email"]
    assert msg["To"].addresses[0].display_name == "株式会社サクラ商事"
    assert msg["Date"].datetime.tzinfo is not None
    assert msg["X-Dunning-Invoice-Id"] == data["invoice_id"]
    assert msg["X-Dunning-Stage"] == "firm"
    assert msg["X-Dunning-Stage-Id"] == data["stage_id"]
    assert msg["X-Dunning-Delivery-Id"] == "dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0"
    assert msg["X-Dunning-Tenant-Id"] == data["tenant_id"]
    assert msg["X-Dunning-Channel"] == "email"
    assert msg["X-Dunning-Scheduled-At"] == data["scheduled_at"] == "2026-11-23T08:00:00Z"
    assert "￥158,000" in msg.get_body(("plain",)).get_content()
    assert not utf8


@pytest.mark.parametrize(
    ("value", "header"),
    [
        pytest.param("2026-11-23T08:00:00Z", "2026-11-23T08:00:00Z", id="utc-as-is"),
        pytest.param("2026-11-23T08:00:00.250Z", "2026-11-23T08:00:00.250000Z", id="fraction-kept"),
        pytest.param("2026-11-23T09:00:00+01:00", "2026-11-23T08:00:00Z", id="offset-to-utc"),
        pytest.param("2026-11-23T08:00:00", None, id="naive-left-out"),
        pytest.param("soon", None, id="unparsable-left-out"),
        pytest.param(None, None, id="missing-left-out"),
    ],
)
def test_scheduled_at_header_is_utc_with_z_or_absent(stage_data, renderer, value, header):
    data = stage_data()
    if value is None:
        del data["scheduled_at"]
    else:
        data["scheduled_at"] = value
    assert scheduled_at(data) == header
    raw, _, _ = EmailChannel(Settings(), renderer).build(_delivery(data), renderer.render(data))
    assert email.message_from_bytes(raw, policy=email.policy.default)["X-Dunning-Scheduled-At"] == header


def test_a_lease_that_a_live_send_could_outlast_is_refused():
    with pytest.raises(ValueError, match="lease_seconds"):
        Settings(lease_seconds=60, smtp_send_timeout=45)
    assert Settings().smtp_send_timeout == 45  # 3 * smtp_timeout (15), well inside the lease (120)
    assert Settings(lease_seconds=20).smtp_send_timeout == 10  # derived to fit a short lease
    assert Settings(lease_seconds=4, smtp_timeout=0.5, smtp_send_timeout=2).smtp_send_timeout == 2


async def test_template_error_fails_permanently_without_touching_smtp(stage_data, tmp_path):
    write_templates(tmp_path / "email", "generic", "{{ nope }}")
    settings = Settings(smtp_port=1)  # nothing listens there: a connection attempt would be a Retry
    session = EmailChannel(settings, Renderer(tmp_path)).open_session()
    outcome = await session.send(_delivery(stage_data()))
    assert isinstance(outcome, Failed) and outcome.permanent and outcome.error_code == "template_error"


async def test_channel_without_provider_fails_permanently(stage_data):
    outcome = await NotConfigured("sms").send(_delivery(stage_data(channel="sms"), channel="sms"))
    assert outcome == Failed("channel_not_configured", "no provider is configured for the 'sms' channel", True)


def test_headers_cannot_be_injected_and_long_values_fold(stage_data, renderer):
    data = stage_data(name="Evil\r\nBcc: victim@example.com", locale="de-DE", currency="EUR")
    d = _delivery(data)
    d = Delivery(**{**d.__dict__, "tenant_id": "ten\r\nBcc: x@example.com"})
    rendered = renderer.render(data)
    rendered = type(rendered)(
        subject=("Überfällige Rechnung " * 8).strip(), text=rendered.text, html=rendered.html, locale=rendered.locale
    )
    raw, _, _ = EmailChannel(Settings(), renderer).build(d, rendered)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"\nBcc:" not in head
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None
    assert msg["Subject"] == ("Überfällige Rechnung " * 8).strip()
    assert msg["To"].addresses[0].addr_spec == data["customer"]["email"]
    assert msg["To"].addresses[0].display_name == "Evil Bcc: victim@example.com"


def test_bodies_survive_the_round_trip(stage_data, renderer):
    data = stage_data(name="Brandt & Söhne GmbH", locale="de-DE", currency="EUR")
    rendered = renderer.render(data)
    raw, _, _ = EmailChannel(Settings(), renderer).build(_delivery(data), rendered)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered.text
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == rendered.html
    assert msg["To"].addresses[0].display_name == "Brandt & Söhne GmbH"


def test_non_ascii_address_needs_smtputf8(stage_data, renderer):
    data = stage_data(email="buchhaltung@müller.example")
    raw, _, utf8 = EmailChannel(Settings(), renderer).build(_delivery(data), renderer.render(data))
    assert utf8
    assert "buchhaltung@müller.example".encode() in raw


@pytest.mark.parametrize("address", ["", "no-at-sign", "a@b.com, c@d.com", "<a@b.com>"])
async def test_unusable_address_fails_permanently(stage_data, address):
    data = stage_data()
    d = Delivery(**{**_delivery(data).__dict__, "recipient": address})
    outcome = await EmailChannel(Settings(smtp_port=1), Renderer()).open_session().send(d)
    assert isinstance(outcome, Failed) and outcome.permanent and outcome.error_code == "invalid_recipient"
