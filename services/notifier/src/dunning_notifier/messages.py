"""The events the notifier publishes, each built here and only here, from a delivery and what its
attempt came to (the dispatcher's recorder writes them to the outbox with the outcome):
ReminderSent when the provider accepted it, ReminderFailed once, when the notifier stops trying
(see outcomes.py for what `permanent` means), ReminderCancelled when a stop of its invoice dropped
it before its next attempt (from a row a cancelling statement returned: the consumer's stop, an
arrival after the stop, or the recorder's retry write; see handlers.py)."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dunning.contracts import ReminderCancelled, ReminderFailed, ReminderSent
from dunning_notifier.outcomes import Delivery, Failed, Sent


def reminder_sent(d: Delivery, outcome: Sent) -> ReminderSent:
    return ReminderSent(
        d.delivery_id,
        d.stage_id,
        d.invoice_id,
        d.tenant_id,
        d.stage,
        d.channel,
        d.recipient or str((d.payload.get("customer") or {}).get("phone") or d.channel),  # a call or case: no address
        outcome.provider_message_id[:500],
        outcome.sent_at,
    )


def reminder_failed(d: Delivery, outcome: Failed, failed_at: datetime) -> ReminderFailed:
    return ReminderFailed(
        d.delivery_id,
        d.stage_id,
        d.invoice_id,
        d.tenant_id,
        d.stage,
        d.channel,
        d.recipient[:320] if d.recipient else None,
        outcome.error_code,
        (outcome.error or outcome.error_code)[:2000],
        outcome.permanent,
        max(d.attempts, 1),
        failed_at,
    )


def reminder_cancelled(row: Mapping[str, Any]) -> ReminderCancelled:
    """From a `cancelled` row as repository._CANCELLED_COLUMNS returns it, or a notice's stage item
    left out (notice_repository._ITEM_EVENT_COLUMNS: with its notice_id)."""
    return ReminderCancelled(
        row["delivery_id"],
        row["stage_id"],
        row["invoice_id"],
        row["tenant_id"],
        row["stage"],
        row["channel"],
        row["cancel_reason"],
        str(row["cancel_cause_event_id"]),
        row["attempts"],
        row["cancelled_at"],
        notice_id=row.get("notice_id"),
    )
