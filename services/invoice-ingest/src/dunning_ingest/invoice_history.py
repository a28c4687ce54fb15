"""An invoice's history, as read back: the response model of one entry (`InvoiceEventOut`, with
`FieldChangeOut` and `HistoryKind`), the rows it is merged from (`Stops`) and the JSON writer that
merges them (`invoice_history_json`), used by invoice_output's `InvoiceDetail` and
`invoice_detail_json`.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from dunning.clock import isoformat
from dunning.money import format_amount
from dunning_ingest.money_output import MoneyRows, money_history
from dunning_ingest.stop_output import history_entry, stop_history


class FieldChangeOut(BaseModel):
    field: Literal["number", "customer", "amount_due", "due_date", "payment_url", "metadata"]
    previous: Any = Field(description="The value before (the customer's external id for `customer`).")
    value: Any = Field(description="The value after.")


HistoryKind = Literal[
    "created",
    "updated",
    "voided",
    "written_off",
    "payment",
    "credit_note",
    # the money (issue 11): allocations, unallocations, reversals, customer credit, money pending, and
    # a paid invoice reopened by money taken back
    "payment_allocated",
    "payment_unallocated",
    "payment_reversed",
    "customer_credit_applied",
    "payment_pending",
    "payment_pending_ended",
    "reopened",
    # the stops (issue 9): what was acknowledged here, what the scheduler and notifier did about it
    "hold_placed",
    "hold_released",
    "hold_expired",
    "dispute_opened",
    "dispute_resolved",
    "promise_made",
    "promise_kept",
    "promise_broken",
    "payment_plan_agreed",
    "payment_plan_cancelled",
    "payment_plan_completed",
    "payment_plan_broken",
    "instalment_missed",
    "paused",
    "resumed",
    "reminder_cancelled",
    "customer_replied",  # reply_handlers.py: a reply to a reminder
    # collections (collections_handlers.py): call tasks and the hand-off to a collection agency
    "call_task_created",
    "call_task_completed",
    "call_task_cancelled",
    "handed_to_agency",
    # the policies at work (issue 10): the rule that chose the policy, deferrals, consolidated notices,
    # the minimum balance, late charges
    "segment_chosen",
    "below_minimum_balance",
    "deferred",
    "notice_composed",
    "notice_sent",
    "notice_left_out",
    "charges_assessed",
    "charges_waived",
]


class InvoiceEventOut(BaseModel):
    """One entry of an invoice's history: its creation, every change, payment and credit note, and every
    stop: holds covering it (its own and its customer's), disputes, promises, payment plans, the pauses
    and resumes of its dunning (which stages moved, and why) and the deliveries a stop dropped."""

    kind: HistoryKind
    at: datetime
    version: int | None = Field(description="The invoice's version after it (payments and credit notes: null).")
    changes: list[FieldChangeOut] | None = Field(description="updated: each field, old -> new.")
    reason: str | None
    amount: str | None = Field(
        description="written_off: the balance written off; payment, payment_allocated, credit_note, "
        "customer_credit_applied: applied; payment_unallocated, payment_reversed: taken back; payment_pending*: "
        "the money pending; reopened: the balance it reopened with; charges_assessed: the "
        "stage's late fee plus the interest it added; charges_waived: the fees and interest waived."
    )
    reference: str | None = Field(
        description="payment and the money's entries: the payment id; reopened: the reversal or allocation id; "
        "credit_note: the accounting system's reference; a stop: the hold, dispute, "
        "promise or plan id (paused, resumed: the cause's); reminder_cancelled: the stage id; segment_chosen: "
        "the rule's name (or default); deferred: why (send_window, contact_cap, quiet_period); notice_*: the "
        "notice id; charges_assessed: the stage id."
    )
    by: str | None = Field(None, description="Who placed, released, opened, resolved or made it (a stop).")
    data: dict[str, Any] | None = Field(
        None,
        description="What else a stop's entry says: hold_placed {scope, ends_at}; dispute_resolved {outcome}; "
        "promise_made {promised_date}; promise_broken {deadline}; paused {cause, stages}; resumed {cause, "
        "resume_mode, stages: [{stage_id, stage, channel, previous_scheduled_at, scheduled_at, state}]}; "
        "reminder_cancelled {delivery_id, stage, channel, attempts, cause_event_id, notice_id?}; "
        "segment_chosen {rule, reason, policy_id, policy_version}; below_minimum_balance {policy_id, "
        "policy_version, stages}; payment_allocated {allocation_id, source, source_reference, rule, "
        "payment_amount, balance_after, balance_version} (reason: the match in words); payment_unallocated "
        "{allocation_id, by, entry_id, balance_after, balance_version}; payment_reversed {reversal_kind, source, "
        "source_reference, entry_id (the reversal id), balance_after, balance_version}; customer_credit_applied "
        "{credit_id, customer_id, credit_remaining, entry_id, balance_after, balance_version}; payment_pending "
        "{kind: processing | chargeback, source, source_reference, since}; payment_pending_ended {kind, source, "
        "source_reference, outcome, ended_reference}; reopened {cause: reversed | unallocated, payment_id, "
        "reversal_kind?, source?, by?} (reason: why in words); deferred {stages: [{stage_id, stage, channel, "
        "from, to}]} (reference: "
        "send_window | contact_cap | quiet_period, reason: the words why); notice_composed {notice_id, "
        "channel, stage_id, stage, listed_as: stage | overdue, invoices (how many), invoice_ids (the first 50), "
        "charges?}; customer_replied {reply_id, delivery_id, stage, channel, from, subject, excerpt, auto_reply, "
        "pause_days} (reference: the reply id); "
        "notice_sent, notice_left_out {notice_id, channel, invoices, invoice_ids (sent; the first 50), "
        "left_out (how many)}; charges_assessed {stage_id, stage, late_fee, "
        "interest, interest_from, interest_to, day_count, total_late_fees, total_interest, periods: [{start, "
        "end, days, principal, annual_rate, amount}]}; charges_waived {late_fees, interest, by}.",
    )


class Stops(NamedTuple):
    """The rows of an invoice's stops: holds covering it, disputes, promises, stop_events, payment plans
    (repository.plans.plans_of_invoice)."""

    holds: Sequence[Mapping[str, Any]] = ()
    disputes: Sequence[Mapping[str, Any]] = ()
    promises: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    plans: Sequence[Mapping[str, Any]] = ()


def _ts(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def invoice_history_json(
    r: Mapping[str, Any],
    payments: Sequence[Mapping[str, Any]] = (),
    credit_notes: Sequence[Mapping[str, Any]] = (),
    changes: Sequence[Mapping[str, Any]] = (),
    *,
    stops: Stops | None = None,
    money: MoneyRows | None = None,
) -> list[dict[str, Any]]:
    """The JSON of the list of `InvoiceEventOut`: the invoice's creation, its changes (invoice_changes
    rows), its money (money_output.money_history: payments, `money`'s rows), credit notes and stops
    (stop_output.stop_history), by time (newest last; at equal times in that order)."""
    cur = r["currency"]
    events = [history_entry("created", r["created_at"], version=1)]
    for c in changes:
        amount = None if c["amount"] is None else format_amount(c["amount"], cur)
        events.append(
            history_entry(
                c["kind"], c["at"], version=c["version"], changes=c["changes"], reason=c["reason"], amount=amount
            )
        )
    events += money_history(cur, payments, money)
    for n in credit_notes:
        events.append(
            history_entry(
                "credit_note",
                n["acknowledged_at"],
                amount=format_amount(n["amount_applied"], cur),
                reference=n["reference"],
                reason=n["reason"],
            )
        )
    if stops is not None:
        events += stop_history(cur, stops.holds, stops.disputes, stops.promises, stops.events, stops.plans)
    events.sort(key=lambda e: e["at"])  # stable: equal times keep the order above
    for e in events:
        e["at"] = _ts(e["at"])
    return events
