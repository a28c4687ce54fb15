"""Twins: the JSON writer (`invoice_out_json`, `invoice_detail_json`) and the response models it
mirrors (`InvoiceOut`, `InvoiceDetail`, built from the same rows) give the same JSON for any row,
property-based."""

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning.money import format_amount
from dunning_ingest.invoice_output import (
    InvoiceDetail,
    InvoiceOut,
    invoice_detail_json,
    invoice_out_json,
    new_invoice_row,
)
from dunning_ingest.money_output import MoneyRows

pytestmark = pytest.mark.unit
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
ids = st.from_regex(r"[0-9A-Za-z]{10,26}", fullmatch=True)
instants = st.datetimes(timezones=st.just(UTC))
CURRENCIES = {"EUR": 2, "JPY": 0, "KWD": 3, "USD": 2}


@st.composite
def money(draw, currency: str):
    from decimal import Decimal

    places = CURRENCIES[currency]
    return Decimal(draw(st.integers(-(10**14), 10**14))).scaleb(-places)


@st.composite
def invoice_rows(draw) -> dict:
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    issue = draw(st.dates())
    return {
        "id": "inv_" + draw(ids),
        "external_id": draw(text),
        "number": draw(text),
        "status": draw(st.sampled_from(["open", "paid", "void", "written_off"])),
        "currency": currency,
        "amount_due": draw(money(currency)),
        "balance": draw(money(currency)),
        "issue_date": issue,
        "due_date": draw(st.dates(min_value=issue)),
        "payment_url": draw(st.none() | st.just("https://pay.example/i")),
        "metadata": draw(st.dictionaries(text, text, max_size=3)),
        "customer_id": "cus_" + draw(ids),
        "customer_external_id": draw(text),
        "customer_name": draw(text),
        "customer_email": draw(text),
        "customer_locale": draw(st.sampled_from(["en-GB", "de-DE"])),
        "customer_timezone": draw(st.sampled_from(["Europe/Berlin", "UTC"])),
        "customer_country": draw(st.none() | st.sampled_from(["DE", "GB"])),
        "customer_subdivision": draw(st.none() | st.just("BY")),
        "customer_tags": draw(st.none() | st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=3)),
        "customer_attributes": draw(st.none() | st.dictionaries(st.just("industry"), text, max_size=1)),
        "created_at": draw(instants),
        "version": draw(st.integers(1, 50)),
        "updated_at": draw(st.none() | instants),
        "closed_reason": draw(st.none() | text),
        "voided_at": draw(st.none() | instants),
        "written_off_at": draw(st.none() | instants),
        "written_off_amount": draw(st.none() | money(currency)),
        **draw(charges(currency)),
    }


@st.composite
def charges(draw, currency: str) -> dict:
    """The charges_* columns of an invoice's detail row (repository.invoices._GET_INVOICE)."""
    if not draw(st.booleans()):
        return {"charged": draw(st.sampled_from([False, None]))}
    waived = draw(st.booleans())
    positive = money(currency).filter(lambda d: d >= 0)
    return {
        "charged": True,
        "charges_late_fees": draw(positive),
        "charges_interest": draw(positive),
        "charges_last_assessed_at": draw(st.none() | instants),
        "charges_waived_late_fees": draw(positive) if waived else None,
        "charges_waived_interest": draw(positive) if waived else None,
        "charges_waived_at": draw(instants) if waived else None,
        "charges_waived_by": draw(text) if waived else None,
        "charges_waived_reason": draw(text) if waived else None,
    }


@st.composite
def credit_note_rows(draw, currency: str) -> dict:
    return {
        "credit_note_id": "cn_" + draw(ids),
        "reference": draw(text),
        "reason": draw(text),
        "currency": currency,
        "amount": draw(money(currency)),
        "amount_applied": draw(money(currency)),
        "balance_remaining": draw(money(currency)),
        "settled": draw(st.booleans()),
        "acknowledged_at": draw(instants),
    }


@st.composite
def change_rows(draw, currency: str) -> list[dict]:
    """invoice_changes rows, versions 2.. in order."""
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "kind": st.sampled_from(["updated", "voided", "written_off"]),
                    "at": instants,
                    "reason": st.none() | text,
                    "amount": st.none() | money(currency),
                }
            ),
            max_size=3,
        )
    )
    change = [{"field": "due_date", "previous": "2026-11-16", "value": "2026-12-01"}]
    return [{**r, "version": n + 2, "changes": change if r["kind"] == "updated" else None} for n, r in enumerate(rows)]


@st.composite
def payment_rows(draw, currency: str) -> dict:
    allocated = draw(st.booleans())  # False: reported before allocations existed
    return {
        "payment_id": "pay_" + draw(ids),
        "allocation_id": "alc_" + draw(ids) if allocated else None,
        "match_rule": draw(st.sampled_from(["reference", "manual", "customer_sum"])) if allocated else None,
        "match_reason": draw(st.none() | text) if allocated else None,
        "balance_version": draw(st.integers(1, 9)) if allocated else None,
        "source": draw(st.sampled_from(["stripe", "api", "bank_statement", "gocardless", "standard_webhooks"])),
        "source_reference": draw(text),
        "currency": currency,
        "amount": draw(money(currency)),
        "amount_applied": draw(money(currency)),
        "balance_remaining": draw(money(currency)),
        "settled": draw(st.booleans()),
        "received_at": draw(instants),
        "acknowledged_at": draw(instants),
    }


@st.composite
def money_rows(draw, currency: str) -> MoneyRows:
    """money_entries and pending_money rows (repository.money)."""
    entries = [
        {
            "kind": kind,
            "entry_id": "rev_" + draw(ids),
            "payment_id": "pay_" + draw(ids),
            "amount": amount,
            "applied": amount if kind == "credit_applied" else -amount,
            "balance_remaining": draw(money(currency)),
            "balance_version": draw(st.integers(1, 9)),
            "at": draw(instants),
            "reason": draw(st.none() | text),
            "data": {"reversal_kind": "refund"} if kind == "reversed" else {"by": "api"},
        }
        for kind in draw(st.lists(st.sampled_from(["unallocated", "reversed", "credit_applied"]), max_size=3))
        for amount in [abs(draw(money(currency)))]
    ]
    pending = [
        {
            "payment_id": "pay_" + draw(ids),
            "kind": kind,
            "source": "stripe",
            "source_reference": "dp_" + draw(ids),
            "currency": currency,
            "amount": draw(money(currency)),
            "since": draw(instants),
            "acknowledged_at": draw(instants),
            "ended_at": draw(st.none() | instants),
            "outcome": None,
            "ended_reference": None,
        }
        for kind in draw(st.lists(st.sampled_from(["processing", "chargeback"]), max_size=2))
    ]
    for p in pending:
        if p["ended_at"] is not None:
            p["outcome"] = "failed" if p["kind"] == "processing" else "won"
    return MoneyRows(entries, pending)


@st.composite
def stage_rows(draw) -> tuple[list[dict], list[dict]]:
    stages = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "stage_id": ids.map(lambda i: "stg_" + i),
                    "stage": text,
                    "sequence": st.none() | st.integers(0, 20),
                    "channel": st.sampled_from(["email", "sms"]),
                    "scheduled_at": st.none() | instants,
                    "state": st.sampled_from(["scheduled", "escalated", "sent", "failed", "cancelled", "skipped"]),
                    "changed_at": instants,
                    "reason": st.none() | text,
                }
            ),
            max_size=4,
            unique_by=lambda s: s["stage_id"],
        )
    )
    history = [
        {
            "stage_id": s["stage_id"],
            "state": draw(st.sampled_from(["scheduled", "sent"])),
            "at": draw(instants),
            "reason": draw(st.none() | text),
            "previous_scheduled_at": draw(st.none() | instants),
            "scheduled_at": draw(st.none() | instants),
        }
        for s in stages
        for _ in range(draw(st.integers(0, 2)))
    ]
    return stages, history


@SETTINGS
@given(invoice_rows())
def test_the_writer_gives_the_json_the_invoice_model_gives(row):
    written = invoice_out_json(row)
    assert written == InvoiceOut.from_row(row).model_dump(mode="json")
    assert written["amount_due"] == format_amount(row["amount_due"], row["currency"])


@SETTINGS
@given(st.data())
def test_the_writer_gives_the_json_the_detail_model_gives(data):
    row = data.draw(invoice_rows())
    payments = data.draw(st.lists(payment_rows(row["currency"]), max_size=3))
    stages, history = data.draw(stage_rows())
    credit_notes = data.draw(st.lists(credit_note_rows(row["currency"]), max_size=3))
    changes = data.draw(change_rows(row["currency"]))
    money_in = data.draw(money_rows(row["currency"]))
    written = invoice_detail_json(
        row, payments, stages, history, credit_notes=credit_notes, changes=changes, money=money_in
    )
    model = InvoiceDetail.from_rows(
        row, payments, stages, history, credit_notes=credit_notes, changes=changes, money=money_in
    )
    assert written == model.model_dump(mode="json")
    assert sum(len(s["history"]) for s in written["timeline"]) == len(history)
    events = written["history"]
    ended = sum(p["ended_at"] is not None for p in money_in.pending)
    money_events = len(money_in.entries) + len(money_in.pending) + ended
    assert len(events) == 1 + len(changes) + len(payments) + len(credit_notes) + money_events
    assert len(written["money"]["entries"]) == len(payments) + len(credit_notes) + len(money_in.entries)
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)  # newest last


def test_a_new_invoice_reads_back_as_its_row_would():
    from datetime import date
    from decimal import Decimal

    from dunning_ingest.invoice_input import fast_validate_invoice_in
    from dunning_tools.testing.invoices import invoice_in

    inv = fast_validate_invoice_in(invoice_in(amount_due="1250.5"))
    row = new_invoice_row("inv_0123456789", "cus_0123456789", inv, datetime(2026, 11, 2, tzinfo=UTC))
    body = invoice_detail_json(row)
    assert body == InvoiceDetail.from_rows(row).model_dump(mode="json")
    assert body["amount_due"] == body["balance"] == "1250.50" and body["status"] == "open"
    assert row["issue_date"] == date(2026, 11, 2) and row["amount_due"] == Decimal("1250.50")
