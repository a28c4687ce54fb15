"""How the money reads on an invoice: the entries in reconciliation's order with the balance after
each, the history entries in words, and the scheduler's answers to money (a reopened invoice
re-planned, a pause for money pending) in words."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dunning.contracts import RescheduledStage, StagesRescheduled
from dunning_ingest.handlers import rescheduled_rows
from dunning_ingest.money_output import MoneyRows, allocation_words, money_history, money_out, reason_words

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)


def payment(minute: int, applied: str, after: str, version: int | None, **extra) -> dict:
    return {
        "payment_id": "pay_0123456789AB",
        "allocation_id": None if version is None else f"alc_{version:012d}",
        "source": "bank_statement",
        "source_reference": "stmt:7",
        "currency": "EUR",
        "amount": Decimal(applied),
        "amount_applied": Decimal(applied),
        "balance_remaining": Decimal(after),
        "settled": Decimal(after) <= 0,
        "received_at": T0,
        "acknowledged_at": T0 + timedelta(minutes=minute),
        "match_rule": None if version is None else "reference",
        "match_reason": None if version is None else "INV-1001 named in the remittance",
        "balance_version": version,
        **extra,
    }


def money_entry(kind: str, minute: int, amount: str, after: str, version: int, **data) -> dict:
    signed = Decimal(amount) if kind == "credit_applied" else -Decimal(amount)
    return {
        "invoice_id": "inv_0123456789AB",
        "kind": kind,
        "entry_id": f"rev_{version:012d}",
        "payment_id": "pay_0123456789AB",
        "currency": "EUR",
        "amount": Decimal(amount),
        "applied": signed,
        "balance_remaining": Decimal(after),
        "settled": Decimal(after) <= 0,
        "balance_version": version,
        "at": T0 + timedelta(minutes=minute),
        "reason": "refunded: 100.00 EUR (re_1)",
        "data": data,
    }


def test_entries_follow_reconciliation_s_version_with_the_balance_after_each():
    payments = [payment(1, "1000.00", "250.00", 2), payment(0, "50.00", "1200.00", None)]
    rows = MoneyRows(
        entries=[
            money_entry("reversed", 1, "100.00", "350.00", 3, reversal_kind="refund", source="stripe"),
            money_entry("credit_applied", 5, "350.00", "0.00", 4, credit_id="ccr_0123456789AB", credit_remaining="5"),
        ]
    )
    out = money_out("EUR", payments, (), rows)
    got = [(e.kind, e.balance_change, e.balance_after, e.balance_version) for e in out.entries]
    assert got == [
        ("allocation", "-50.00", "1200.00", None),  # reported before versions: first
        ("allocation", "-1000.00", "250.00", 2),
        ("reversal", "100.00", "350.00", 3),  # same minute as the allocation, a later version
        ("credit_applied", "-350.00", "0.00", 4),
    ]
    assert out.entries[2].reversal_kind == "refund" and out.entries[3].credit_remaining == "5.00"
    assert out.entries[0].reference == "pay_0123456789AB" and out.entries[1].reference == "alc_000000000002"


@pytest.mark.parametrize(
    ("rule", "reason", "words"),
    [
        pytest.param("reference", "INV-1001 in the remittance", "matched by reference: INV-1001 in the remittance"),
        pytest.param("manual", None, "matched by hand", id="no-reason"),
        pytest.param("some_new_rule", "x", "matched some_new_rule: x", id="unknown-rule-as-is"),
        pytest.param(None, "given", "given", id="no-rule"),
    ],
)
def test_an_allocation_says_how_it_matched(rule, reason, words):
    assert allocation_words(rule, reason) == words


def test_a_payment_reported_before_allocations_stays_a_payment_entry():
    entries = money_history("EUR", [payment(0, "50.00", "1200.00", None), payment(1, "1200.00", "0.00", 1)])
    assert [(e["kind"], e["amount"]) for e in entries] == [("payment", "50.00"), ("payment_allocated", "1200.00")]
    assert entries[1]["data"]["balance_after"] == "0.00" and entries[1]["data"]["rule"] == "reference"


def test_a_pending_episode_opens_and_ends_in_the_history():
    pending = {
        "payment_id": "pay_0123456789AB",
        "kind": "chargeback",
        "source": "stripe",
        "source_reference": "dp_1",
        "currency": "EUR",
        "amount": Decimal("80"),
        "since": T0,
        "acknowledged_at": T0,
        "ended_at": T0 + timedelta(days=20),
        "outcome": "won",
        "ended_reference": "evt_2",
    }
    entries = money_history("EUR", (), MoneyRows(pending=[pending]))
    assert [(e["kind"], e["reason"]) for e in entries] == [
        ("payment_pending", "chargeback opened (the card payment is disputed)"),
        ("payment_pending_ended", "the chargeback was won: the payment stands"),
    ]
    [out] = money_out("EUR", (), (), MoneyRows(pending=[pending])).pending
    assert (out.status, out.amount) == ("won", "80.00")


def test_the_scheduler_s_reopened_reason_reads_in_words():
    stage = RescheduledStage("stg_0123456789AB", "firm", 1, "email", T0, T0 + timedelta(days=2), "scheduled")
    r = StagesRescheduled("inv_0123456789AB", "ten_1", "reopened", None, "pol_1", 1, T0, (stage,))
    [row] = rescheduled_rows(r)
    assert row.reason == reason_words("reopened")
    assert row.reason.startswith("reopened: the invoice reopened")
    assert reason_words("due_date_changed") == "due_date_changed"  # the codes before money: as they were
    assert reason_words("payment_processing") == "payment_processing: a payment is processing"
