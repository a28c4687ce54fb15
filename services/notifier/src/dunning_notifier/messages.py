"""The events the notifier publishes, each built here and only here, from a delivery and what its
attempt came to (the dispatcher's recorder writes them to the outbox with the outcome):
ReminderSent when the provider accepted it, ReminderFailed once, when the notifier stops trying
(see outcomes.py for what `permanent` means)."""

from datetime import datetime

from dunning.contracts import ReminderFailed, ReminderSent
from dunning_notifier.outcomes import Delivery, Failed, Sent


def reminder_sent(d: Delivery, outcome: Sent) -> ReminderSent:
    return ReminderSent(
        d.delivery_id,
        d.stage_id,
        d.invoice_id,
        d.tenant_id,
        d.stage,
        d.channel,
        d.recipient or "",
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
