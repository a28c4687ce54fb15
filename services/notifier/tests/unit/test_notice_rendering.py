"""Rendering consolidated notices, and the charges and deadlines reminders quote from their events
(never a template's fixed "within 7 days")."""

import copy
import email
import email.policy

import orjson
import pytest

from dunning.events import schemas_dir
from dunning_notifier.channels import EmailChannel
from dunning_notifier.notice_sender import notice_delivery
from dunning_notifier.rendering import Renderer, RenderError
from dunning_notifier.settings import Settings

pytestmark = pytest.mark.unit
NBSP = "\xa0"
NOTICES = schemas_dir() / "examples" / "NoticeComposed" / "1"
CHARGES = {
    "currency": "EUR",
    "late_fee": "40.00",
    "interest": "6.56",
    "total_late_fees": "40.00",
    "total_interest": "6.56",
    "total_due": "646.56",
    "interest_to": "2026-03-02",
    "day_count": "ACT/365F",
    "annual_rate": "10.15",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(sender_name="Accounts Receivable")


def notice(example: str = "eur-two-stages-and-an-overdue-invoice", **customer) -> dict:
    data = copy.deepcopy(orjson.loads((NOTICES / f"{example}.json").read_bytes())["data"])
    data["customer"].update(customer)
    return data


def mixed_notice(locale: str = "en-US") -> dict:
    """Three invoices in two currencies: a firm stage with charges, a soft one, a JPY one overdue only."""
    data = notice(locale=locale, name="Brandt & <Söhne>")
    jpy = copy.deepcopy(data["items"][2])
    jpy["invoice"].update(currency="JPY", amount_due="31000", balance="31000", number="INV-JP-7")
    data["items"][2] = jpy
    return data


def test_a_notice_lists_every_invoice_with_its_stage_and_totals_per_currency(renderer):
    out = renderer.render(mixed_notice())
    assert out.subject == f"3 overdue invoices: EUR{NBSP}1,126.56, JPY{NBSP}31,000"
    firm, soft, overdue = (item["invoice"] for item in mixed_notice()["items"])
    text = out.text
    assert f"1. Invoice {firm['number']} (firm)" in text
    assert f"2. Invoice {soft['number']} (soft)" in text
    assert f"3. Invoice {overdue['number']} (overdue)" in text
    assert "Invoice total:      €1,000.00" in text and "Amount outstanding: €600.00" in text  # partly paid
    assert "Late fees:          €40.00" in text
    assert f"Interest:           €6.56 (10.15{NBSP}% a year, ACT/365F, to March 2, 2026)" in text
    assert "Total due:          €646.56" in text
    assert "EUR: €1,126.56" in text and "JPY: ¥31,000" in text
    for part in (text, out.html):
        for invoice in (firm, soft, overdue):
            assert invoice["number"] in part and invoice["payment_url"] in part
        assert "January 31, 2026" in part  # the firm invoice's due date, long, for the locale
    assert "Brandt &amp; &lt;Söhne&gt;" in out.html and "Brandt & <Söhne>" in text
    assert "€1,126.56" in out.html and "¥31,000" in out.html


def test_a_notice_is_formatted_for_the_customers_locale(renderer):
    out = renderer.render(mixed_notice("de-DE"))
    assert out.subject == f"3 überfällige Rechnungen: EUR{NBSP}1.126,56, JPY{NBSP}31.000"
    assert f"646,56{NBSP}€" in out.text and "31. Januar 2026" in out.text
    assert out.locale == "de-DE"


def test_a_notice_of_one_invoice_says_so(renderer):
    data = notice(locale="en-US")
    data["items"] = data["items"][1:2]
    out = renderer.render(data)
    assert out.subject == f"1 overdue invoice: EUR{NBSP}480.00"
    assert "Late fees" not in out.text and "Total due" not in out.text  # no charges on this one


def test_a_notice_item_with_garbled_charges_is_a_render_error(renderer):
    data = notice()
    data["items"][0]["charges"] = dict(CHARGES, total_due="a lot")
    with pytest.raises(RenderError):
        renderer.render(data)


def test_the_claimed_items_alone_are_rendered_and_listed(renderer):
    data = notice()
    row = {
        "notice_id": data["notice_id"],
        "delivery_id": "dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0",
        "tenant_id": data["tenant_id"],
        "channel": "email",
        "recipient": data["customer"]["email"],
        "attempts": 2,
        "payload": data,
        "traceparent": None,
        **{f"contact_{f}": None for f in ("name", "email", "cc", "locale", "timezone")},
    }
    delivery, listed, left_out = notice_delivery(row, [0, 2])  # the soft invoice was paid meanwhile
    ids = [item["invoice_id"] for item in data["items"]]
    assert listed == [ids[0], ids[2]] and left_out == [ids[1]]
    out = renderer.render(delivery.payload)
    assert out.subject.startswith("2 überfällige Rechnungen")  # the example's customer reads German
    assert data["items"][1]["invoice"]["number"] not in out.text + out.html

    raw, msg_id, _ = EmailChannel(Settings(), renderer).build(delivery, out)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["X-Dunning-Notice-Id"] == data["notice_id"]
    assert msg["X-Dunning-Customer-Id"] == data["customer_id"]
    assert [i.strip() for i in str(msg["X-Dunning-Invoice-Ids"]).split(",")] == listed
    assert msg["X-Dunning-Stage"] is None and msg["X-Dunning-Invoice-Id"] is None
    assert msg_id == "<dlv_01JDK8W2X4Y6Z8A0B2C4D6E8F0@dunning.invalid>"


# --- charges and deadlines in single reminders -------------------------------------------------


@pytest.mark.parametrize("stage", ["soft", "firm", "final", "pre_due", "collections", "courtesy_call"])
def test_every_reminder_shows_its_charges_when_the_event_has_them(stage_data, renderer, stage):
    data = stage_data(stage=stage, currency="EUR", amount="600.00")
    data["charges"] = CHARGES
    out = renderer.render(data)
    for part in (out.text, out.html):
        assert "Late fees" in part and "€40.00" in part
        assert f"€6.56 (10.15{NBSP}% a year, ACT/365F, to March 2, 2026)" in part
        assert "Total due" in part and "€646.56" in part


def test_a_fee_only_charge_shows_no_interest_line(stage_data, renderer):
    data = stage_data(stage="firm", currency="EUR", amount="600.00")
    data["charges"] = {"currency": "EUR", "late_fee": "40.00", "total_late_fees": "40.00", "total_due": "640.00"}
    out = renderer.render(data)
    assert "Late fees:          €40.00" in out.text and "Total due:          €640.00" in out.text
    assert "Interest" not in out.text and "Interest" not in out.html


def test_no_charges_no_charge_lines(stage_data, renderer):
    out = renderer.render(stage_data(stage="firm"))
    assert "Late fees" not in out.text + out.html and "Total due" not in out.text + out.html


@pytest.mark.parametrize(
    ("stage", "locale", "words"),
    [
        pytest.param("firm", "en-US", "Please settle this balance by December 8, 2026.", id="firm"),
        pytest.param("final", "en-US", "If payment is not received by December 8, 2026,", id="final"),
        pytest.param("final", "de-DE", "Geht die Zahlung nicht bis zum 8. Dezember 2026 bei uns ein,", id="final-de"),
    ],
)
def test_firm_and_final_ask_payment_by_the_next_stages_date(stage_data, renderer, stage, locale, words):
    data = stage_data(stage=stage, locale=locale, due_date="2026-11-02")
    data["context"] = {"kind": "stage", "next_stage": "collections", "next_stage_on": "2026-12-08"}
    out = renderer.render(data)
    for part in (out.text, out.html):
        assert words in part
        assert "7 days" not in part


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        pytest.param("firm", "Please settle this balance as soon as possible.", id="firm"),
        pytest.param("final", "If payment is not received promptly,", id="final"),
    ],
)
def test_without_a_next_stage_there_is_no_deadline_and_no_fixed_days(stage_data, renderer, stage, words):
    out = renderer.render(stage_data(stage=stage, due_date="2026-11-02"))
    for part in (out.text, out.html):
        assert words in part
        assert "within" not in part and "7 days" not in part


def test_a_garbled_next_stage_date_is_a_render_error(stage_data, renderer):
    data = stage_data(stage="final")
    data["context"] = {"kind": "stage", "next_stage": "collections", "next_stage_on": "next week"}
    with pytest.raises(RenderError):
        renderer.render(data)


def test_two_stages_of_one_invoice_in_a_notice_list_it_once_at_its_firmer_stage(renderer):
    data = mixed_notice()
    soft = data["items"][1]
    final = copy.deepcopy(soft)
    final.update(stage_id=soft["stage_id"][:-2] + "09", stage="final", sequence=soft["sequence"] + 2)
    data["items"].insert(2, final)  # both of its stages fell in the same window
    out = renderer.render(data)
    assert out.subject == f"3 overdue invoices: EUR{NBSP}1,126.56, JPY{NBSP}31,000"  # its balance counted once
    assert out.text.count(f"Invoice {soft['invoice']['number']} ") == 1
    assert f"2. Invoice {soft['invoice']['number']} (final)" in out.text
