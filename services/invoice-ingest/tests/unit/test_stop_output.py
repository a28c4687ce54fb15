"""An invoice's stops read back the same through the JSON writer and the response models, and its
history merges them with its creation in time order."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from dunning.clock import isoformat
from dunning_ingest.invoice_history import Stops
from dunning_ingest.invoice_input import fast_validate_invoice_in
from dunning_ingest.invoice_output import InvoiceDetail, invoice_detail_json, new_invoice_row
from dunning_tools.testing.invoices import invoice_in

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def stops() -> Stops:
    hold = {
        "hold_id": "hld_0123456789",
        "customer_id": "cus_0123456789",
        "invoice_id": None,
        "reason": "KAM",
        "placed_by": "maria",
        "ends_at": at(10),
        "status": "expired",
        "acknowledged_at": at(1),
        "released_at": None,
        "released_by": None,
    }
    dispute = {
        "dispute_id": "dsp_0123456789",
        "invoice_id": "inv_0123456789",
        "status": "upheld",
        "reason": "never delivered",
        "currency": "EUR",
        "disputed_amount": Decimal("500"),
        "opened_by": "ar",
        "acknowledged_at": at(2),
        "resolved_at": at(12),
        "credit_amount": Decimal("500"),
        "note": None,
        "resolved_by": "ar",
    }
    promise = {
        "promise_id": "prm_0123456789",
        "invoice_id": "inv_0123456789",
        "status": "broken",
        "amount": Decimal("100.5"),
        "currency": "EUR",
        "promised_date": date(2026, 11, 5),
        "made_by": "ar",
        "note": "phone",
        "acknowledged_at": at(3),
        "deadline": at(80),
        "paid_amount": Decimal("0"),
        "settled_at": at(81),
        "due_by": at(40),  # a promise by an instant
    }
    paused = {
        "kind": "paused",
        "at": at(2),
        "reference": "dsp_0123456789",
        "reason": None,
        "amount": None,
        "data": {"cause": "dispute", "stages": []},
    }
    plan = {
        "id": "pln_0123456789",
        "status": "cancelled",
        "total": Decimal("649.5"),
        "agreed_by": "ar",
        "acknowledged_at": at(90),
        "missed_at": None,
        "missed_instalment": None,
        "ended_at": at(91),
        "ended_by": "ar",
        "end_reason": "asked",
        "instalments": [{}, {}],
        "invoices": [{"invoice_id": "inv_0123456789"}],
    }
    return Stops(holds=[hold], disputes=[dispute], promises=[promise], events=[paused], plans=[plan])


def test_the_writer_and_the_models_agree_on_the_stops_and_the_history_is_in_time_order():
    row = new_invoice_row("inv_0123456789", "cus_0123456789", fast_validate_invoice_in(invoice_in()), T0)
    written = invoice_detail_json(row, stops=stops())
    assert written == InvoiceDetail.from_rows(row, stops=stops()).model_dump(mode="json")
    assert [e["kind"] for e in written["history"]] == [
        "created",
        "hold_placed",
        "dispute_opened",
        "paused",
        "promise_made",
        "hold_expired",
        "dispute_resolved",
        "promise_broken",
        "payment_plan_agreed",
        "payment_plan_cancelled",
    ]
    assert written["holds"][0]["scope"] == "customer" and written["holds"][0]["status"] == "expired"
    assert (written["disputes"][0]["outcome"], written["disputes"][0]["credit_amount"]) == ("upheld", "500.00")
    assert (written["promises"][0]["amount"], written["promises"][0]["paid_amount"]) == ("100.50", "0.00")
    assert written["promises"][0]["due_by"] == isoformat(at(40))
    [made] = [e for e in written["history"] if e["kind"] == "promise_made"]
    assert made["data"] == {"promised_date": "2026-11-05", "due_by": isoformat(at(40))}
    assert written["history"][-2]["data"] == {"instalments": 2, "invoice_ids": ["inv_0123456789"]}
