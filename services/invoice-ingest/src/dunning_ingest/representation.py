"""JSON representations of invoices (what GET returns and what POST answers)."""

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from dunning.clock import isoformat
from dunning.money import format_amount

INVOICE_ID = re.compile(r"^inv_[0-9A-Za-z]{10,40}$")


def _ts(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def invoice_json(r: Mapping[str, Any]) -> dict[str, Any]:
    currency = r["currency"]
    return {
        "id": r["id"],
        "external_id": r["external_id"],
        "number": r["number"],
        "status": r["status"],
        "currency": currency,
        "amount_due": format_amount(r["amount_due"], currency),
        "balance": format_amount(r["balance"], currency),
        "issue_date": r["issue_date"].isoformat(),
        "due_date": r["due_date"].isoformat(),
        "payment_url": r["payment_url"],
        "metadata": r["metadata"],
        "customer": {
            "id": r["customer_id"],
            "external_id": r["customer_external_id"],
            "name": r["customer_name"],
            "email": r["customer_email"],
            "locale": r["customer_locale"],
            "timezone": r["customer_timezone"],
        },
        "created_at": _ts(r["created_at"]),
    }


def new_invoice_row(invoice_id: str, customer_id: str, inv: Any, created_at: datetime) -> dict[str, Any]:
    """The row an invoice that was just created would read back as (saves a round trip)."""
    c = inv.customer
    return {
        "id": invoice_id, "external_id": inv.external_id, "number": inv.number, "status": "open",
        "currency": inv.currency, "amount_due": inv.amount_due, "balance": inv.amount_due,
        "issue_date": inv.issue_date, "due_date": inv.due_date, "payment_url": inv.payment_url,
        "metadata": inv.metadata, "customer_id": customer_id, "customer_external_id": c.external_id,
        "customer_name": c.name, "customer_email": c.email, "customer_locale": c.locale,
        "customer_timezone": c.timezone, "created_at": created_at,
    }


def payment_json(p: Mapping[str, Any]) -> dict[str, Any]:
    cur = p["currency"]
    return {
        "payment_id": p["payment_id"], "source": p["source"], "source_reference": p["source_reference"],
        "currency": cur, "amount": format_amount(p["amount"], cur),
        "amount_applied": format_amount(p["amount_applied"], cur),
        "balance_remaining": format_amount(p["balance_remaining"], cur), "settled": p["settled"],
        "received_at": _ts(p["received_at"]), "acknowledged_at": _ts(p["acknowledged_at"]),
    }


def timeline_json(stages: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in history:
        by_stage[h["stage_id"]].append({"state": h["state"], "at": _ts(h["at"]), "reason": h["reason"]})
    return [
        {
            "stage_id": s["stage_id"], "stage": s["stage"], "sequence": s["sequence"], "channel": s["channel"],
            "scheduled_at": _ts(s["scheduled_at"]), "state": s["state"], "changed_at": _ts(s["changed_at"]),
            "reason": s["reason"], "history": by_stage.get(s["stage_id"], []),
        }
        for s in stages
    ]


def detail_json(r: Mapping[str, Any], payments=(), stages=(), history=()) -> dict[str, Any]:
    body = invoice_json(r)
    body["payments"] = [payment_json(p) for p in payments]
    body["timeline"] = timeline_json(stages, history)
    return body

