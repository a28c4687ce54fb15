"""The money on an invoice, as read back: the `money` section of its detail (each allocation, credit
applied, reversal, unallocation and credit note, with the balance reconciliation left after each,
and the money still pending) and the entries money adds to its history (`money_history`), merged
by invoice_history.invoice_history_json. The rows: payments (one per allocation), credit_notes,
money_entries and pending_money. Not a hot path: the routes dump the models.

The words each code reads as in the history (`RULE_WORDS`, `reason_words`) are here too, for the
money events and for the scheduler's answers to them (a reopened invoice re-planned, a pause for
money pending and its end)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from dunning.clock import isoformat
from dunning.money import format_amount
from dunning_ingest.stop_output import history_entry

RULE_WORDS = {
    "metadata": "by the invoice named in the payment's metadata",
    "reference": "by reference",
    "creditor_reference": "by creditor reference (RF)",
    "payer_account_amount": "by the payer's known account and the exact amount",
    "customer_amount": "by the customer and the exact amount",
    "customer_sum": "by the customer and an exact sum of open invoices",
    "manual": "by hand",
    "late_match": "once the invoice arrived",
    "api": "through the API",
    "legacy": "before allocations were recorded",
}
REVERSAL_WORDS = {"refund": "refunded", "chargeback": "chargeback lost", "payment_failed": "debit failed"}
PENDING_WORDS = {
    "processing": "payment processing (not counted as paid until it succeeds)",
    "chargeback": "chargeback opened (the card payment is disputed)",
}
OUTCOME_WORDS = {
    ("processing", "succeeded"): "the processing payment succeeded",
    ("processing", "failed"): "the processing payment failed",
    ("chargeback", "won"): "the chargeback was won: the payment stands",
    ("chargeback", "lost"): "the chargeback was lost: the money is taken back",
}
# The scheduler's reasons and causes that money brings (StagesRescheduled.reason, DunningPaused.cause,
# DunningResumed.reason), as the history shows them.
_SCHEDULER_WORDS = {
    "reopened": "the invoice reopened (money taken back): the stages not yet sent are planned again",
    "payment_processing": "a payment is processing",
    "chargeback": "a chargeback is open",
    "payment_succeeded": "the processing payment succeeded",
    "payment_failed": "the processing payment failed",
    "chargeback_won": "the chargeback was won",
    "chargeback_lost": "the chargeback was lost",
}


MONEY_CAUSES = ("payment_processing", "chargeback")  # DunningPaused.cause of money pending


def reason_words(code: str | None) -> str | None:
    """A scheduler's reason code with its words (`reopened: the invoice reopened ...`); other codes as
    they are."""
    if code is None or code not in _SCHEDULER_WORDS:
        return code
    return f"{code}: {_SCHEDULER_WORDS[code]}"


def allocation_words(rule: str | None, reason: str | None) -> str | None:
    """`matched by reference: INV-1001 named in the remittance`."""
    if rule is None:
        return reason
    words = f"matched {RULE_WORDS.get(rule, rule)}"
    return f"{words}: {reason}" if reason else words


def reversal_words(kind: str, amount: str, currency: str, reference: str) -> str:
    return f"{REVERSAL_WORDS.get(kind, kind)}: {amount} {currency} ({reference})"


def _money(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


class MoneyEntryOut(BaseModel):
    """One change of the invoice's balance, as reconciliation reported it."""

    kind: Literal["allocation", "unallocation", "reversal", "credit_applied", "credit_note"]
    at: datetime
    amount: str = Field(description="What it moved (> 0 but for an empty allocation).")
    balance_change: str = Field(description="Its effect on the balance: negative lowers it, positive raises it.")
    balance_after: str = Field(description="The invoice's balance after it, as reconciliation left it.")
    balance_version: int | None = Field(
        description="Reconciliation's count of the invoice's balance changes (null: reported before it existed)."
    )
    reference: str = Field(
        description="allocation, unallocation: the allocation id (an allocation reported before allocations "
        "existed: the payment id); reversal: the reversal id; credit_applied: the application id; "
        "credit_note: the accounting system's reference."
    )
    payment_id: str | None = Field(description="The payment (credit_applied: the one whose excess it was).")
    source: str | None = Field(description="allocation, reversal: where the money came or went through.")
    source_reference: str | None = Field(description="The processor's or bank's reference.")
    rule: str | None = Field(description="allocation: the rule that matched it.")
    reason: str | None = Field(description="Why, in words: the match, the unallocation's, the credit note's.")
    reversal_kind: Literal["refund", "chargeback", "payment_failed"] | None
    by: str | None = Field(description="unallocation: who undid it (api, system).")
    credit_id: str | None = Field(description="credit_applied: the customer credit.")
    credit_remaining: str | None = Field(description="credit_applied: what is left of that credit.")


class PendingMoneyOut(BaseModel):
    """Money whose fate is open: a debit processing (not counted as paid), a disputed card payment."""

    payment_id: str
    kind: Literal["processing", "chargeback"]
    status: Literal["open", "succeeded", "failed", "won", "lost"] = Field(description="open, or its outcome.")
    source: str
    source_reference: str
    currency: str
    amount: str
    since: datetime
    acknowledged_at: datetime
    ended_at: datetime | None


class MoneyOut(BaseModel):
    entries: list[MoneyEntryOut] = Field(description="Every change of the balance, in the order it was made.")
    pending: list[PendingMoneyOut] = Field(description="Money pending now or before, oldest first.")


class MoneyRows(NamedTuple):
    """The rows of an invoice's money besides payments and credit notes (repository.money)."""

    entries: Sequence[Mapping[str, Any]] = ()
    pending: Sequence[Mapping[str, Any]] = ()


def _entry(kind: str, at: datetime, amount: Decimal, change: Decimal, after: Decimal, cur: str, **f: Any) -> dict:
    base = dict.fromkeys(MoneyEntryOut.model_fields)
    money = {"amount": format_amount(amount, cur), "balance_change": format_amount(change, cur)}
    return base | {"kind": kind, "at": at, "balance_after": format_amount(after, cur)} | money | f


def _payment_entry(p: Mapping[str, Any], cur: str) -> dict:
    applied = p["amount_applied"]
    return _entry(
        "allocation",
        p["acknowledged_at"],
        applied,
        -applied,
        p["balance_remaining"],
        cur,
        balance_version=p.get("balance_version"),
        reference=p.get("allocation_id") or p["payment_id"],
        payment_id=p["payment_id"],
        source=p["source"],
        source_reference=p["source_reference"],
        rule=p.get("match_rule"),
        reason=p.get("match_reason"),
    )


def _money_entry(e: Mapping[str, Any], cur: str) -> dict:
    d = e["data"] or {}
    kind = {"unallocated": "unallocation", "reversed": "reversal", "credit_applied": "credit_applied"}[e["kind"]]
    return _entry(
        kind,
        e["at"],
        e["amount"],
        -e["applied"],
        e["balance_remaining"],
        cur,
        balance_version=e["balance_version"],
        reference=e["entry_id"],
        payment_id=e["payment_id"],
        source=d.get("source"),
        source_reference=d.get("source_reference"),
        reason=e["reason"],
        reversal_kind=d.get("reversal_kind"),
        by=d.get("by"),
        credit_id=d.get("credit_id"),
        credit_remaining=_money(None if d.get("credit_remaining") is None else Decimal(d["credit_remaining"]), cur),
    )


def _credit_note_entry(n: Mapping[str, Any], cur: str) -> dict:
    applied = n["amount_applied"]
    return _entry(
        "credit_note",
        n["acknowledged_at"],
        applied,
        -applied,
        n["balance_remaining"],
        cur,
        balance_version=n.get("balance_version"),
        reference=n["reference"],
        reason=n["reason"],
    )


def _order(e: Mapping[str, Any]) -> tuple:
    """Reconciliation's order: entries without a version (reported before it existed) first, by time."""
    v = e["balance_version"]
    return (v is not None, v or 0, e["at"])


def money_out(
    currency: str,
    payments: Sequence[Mapping[str, Any]] = (),
    credit_notes: Sequence[Mapping[str, Any]] = (),
    rows: MoneyRows | None = None,
) -> MoneyOut:
    rows = rows or MoneyRows()
    entries = [_payment_entry(p, currency) for p in payments]
    entries += [_credit_note_entry(n, currency) for n in credit_notes]
    entries += [_money_entry(e, currency) for e in rows.entries]
    entries.sort(key=_order)
    pending = [
        PendingMoneyOut.model_validate(
            {k: p[k] for k in PendingMoneyOut.model_fields if k not in ("status", "amount")}
            | {"status": p["outcome"] or "open", "amount": format_amount(p["amount"], currency)}
        )
        for p in rows.pending
    ]
    return MoneyOut(entries=[MoneyEntryOut.model_validate(e) for e in entries], pending=pending)


def money_json(
    currency: str,
    payments: Sequence[Mapping[str, Any]] = (),
    credit_notes: Sequence[Mapping[str, Any]] = (),
    rows: MoneyRows | None = None,
) -> dict[str, Any]:
    """The JSON of `money_out` (a new invoice's, empty, without building the models: the create path)."""
    if not payments and not credit_notes and (rows is None or (not rows.entries and not rows.pending)):
        return {"entries": [], "pending": []}
    return money_out(currency, payments, credit_notes, rows).model_dump(mode="json")


# --- the history entries of money -------------------------------------------------------------------


def money_history(
    currency: str, payments: Sequence[Mapping[str, Any]] = (), rows: MoneyRows | None = None
) -> list[dict[str, Any]]:
    """The history entries of the money (unsorted): each allocation (`payment_allocated`; `payment` for
    one reported before allocations existed), unallocation, reversal, customer credit applied, and each
    pending episode opened and ended. `data` holds the balance after it (balance_after, balance_version)."""
    rows = rows or MoneyRows()
    out: list[dict[str, Any]] = []
    for p in payments:
        amount = format_amount(p["amount_applied"], currency)
        if p.get("allocation_id") is None:
            out.append(history_entry("payment", p["acknowledged_at"], amount=amount, reference=p["payment_id"]))
            continue
        data = {
            "allocation_id": p["allocation_id"],
            "source": p["source"],
            "source_reference": p["source_reference"],
            "rule": p["match_rule"],
            "payment_amount": format_amount(p["amount"], currency),
            "balance_after": format_amount(p["balance_remaining"], currency),
            "balance_version": p["balance_version"],
        }
        reason = allocation_words(p["match_rule"], p["match_reason"])
        out.append(
            history_entry(
                "payment_allocated",
                p["acknowledged_at"],
                amount=amount,
                reference=p["payment_id"],
                reason=reason,
                data=data,
            )
        )
    for e in rows.entries:
        out.append(_entry_history(e, currency))
    for p in rows.pending:
        out += _pending_history(p, currency)
    return out


_HISTORY_KIND = {
    "unallocated": "payment_unallocated",
    "reversed": "payment_reversed",
    "credit_applied": "customer_credit_applied",
}


def _entry_history(e: Mapping[str, Any], cur: str) -> dict[str, Any]:
    d = dict(e["data"] or {})
    data = {
        **d,
        "entry_id": e["entry_id"],
        "balance_after": format_amount(e["balance_remaining"], cur),
        "balance_version": e["balance_version"],
    }
    return history_entry(
        _HISTORY_KIND[e["kind"]],
        e["at"],
        amount=format_amount(e["amount"], cur),
        reference=e["payment_id"],
        reason=e["reason"],
        by=d.get("by"),
        data=data,
    )


def _pending_history(p: Mapping[str, Any], cur: str) -> list[dict[str, Any]]:
    data = {"kind": p["kind"], "source": p["source"], "source_reference": p["source_reference"]}
    amount = format_amount(p["amount"], cur)
    out = [
        history_entry(
            "payment_pending",
            p["acknowledged_at"],
            amount=amount,
            reference=p["payment_id"],
            reason=PENDING_WORDS[p["kind"]],
            data=data | {"since": _ts(p["since"])},
        )
    ]
    if p["ended_at"] is not None:
        out.append(
            history_entry(
                "payment_pending_ended",
                p["ended_at"],
                amount=amount,
                reference=p["payment_id"],
                reason=OUTCOME_WORDS.get((p["kind"], p["outcome"]), p["outcome"]),
                data=data | {"outcome": p["outcome"], "ended_reference": p["ended_reference"]},
            )
        )
    return out
