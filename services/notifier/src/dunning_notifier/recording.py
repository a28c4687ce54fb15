"""Recording what came of an attempt (dispatcher.py): the finished `Attempt`, and the batched
outcome writes (`sent` + ReminderSent, `failed` + ReminderFailed, `pending` again with backoff, or
`cancelled` + ReminderCancelled when a stop came first), each fenced by `attempts`."""

from dataclasses import dataclass

import asyncpg

from dunning import outbox
from dunning.contracts import ReminderFailed, ReminderSent
from dunning_notifier import repository as repo
from dunning_notifier.messages import reminder_cancelled
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent


@dataclass(frozen=True)
class Attempt:
    """One finished attempt, waiting to be recorded."""

    delivery: Delivery
    outcome: Outcome
    event: ReminderSent | ReminderFailed | None  # the event to publish (sent or finally failed)
    retry_in: float = 0.0

    @property
    def addressed(self) -> tuple[str | None, tuple[str, ...]]:
        """(To, Cc) this attempt used, recorded with its outcome."""
        return self.delivery.recipient, self.delivery.cc


async def write_outcomes(
    conn: asyncpg.Connection,
    batch: list[Attempt],
    sent: list[tuple[Attempt, Sent]],
    failed: list[tuple[Attempt, Failed]],
    retry: list[tuple[Attempt, Retry]],
) -> tuple[set[str], set[str], dict[str, asyncpg.Record]]:
    """Write a batch's outcomes and their events in one transaction: (the ids recorded sent or
    failed, the ids the retry write touched, the rows it cancelled instead, by id)."""
    async with conn.transaction():
        sent_ids = await repo.mark_sent(
            conn,
            [
                (a.delivery.delivery_id, a.delivery.attempts, o.provider_message_id, o.sent_at, *a.addressed)
                for a, o in sent
            ],
        )
        failed_ids = await repo.mark_failed(
            conn,
            [
                (a.delivery.delivery_id, a.delivery.attempts, o.error_code, o.error[:2000], *a.addressed)
                for a, o in failed
            ],
        )
        retried = await repo.mark_retry(
            conn,
            [
                (
                    a.delivery.delivery_id,
                    a.delivery.attempts,
                    o.error_code,
                    o.error[:2000],
                    a.retry_in,
                    o.in_doubt,
                    *a.addressed,
                )
                for a, o in retry
            ],
        )
        recorded = sent_ids | failed_ids
        cancelled = {r["delivery_id"]: r for r in retried if r["state"] == "cancelled"}
        await outbox.add_many(
            conn,
            [a.event for a in batch if a.event is not None and a.delivery.delivery_id in recorded]
            + [reminder_cancelled(r) for r in cancelled.values()],
        )
    retry_ids = {r["delivery_id"] for r in retried}
    return recorded, retry_ids, cancelled


async def publish_cancelled(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> int:
    """ReminderCancelled for the rows a release statement cancelled (inside its transaction)."""
    cancelled = [reminder_cancelled(r) for r in rows if r["state"] == "cancelled"]
    await outbox.add_many(conn, cancelled)
    return len(cancelled)
