"""Batch handlers for the timeline events: a run of consecutive events of one type in a few statements.

`timeline_batch(rows_of)` is the twin of `handlers.observe(rows_of)`: the same result as applying
the events one by one with it (which stays the reference; the consumer runner falls back to it
whenever a batch handler raises; tests/integration/test_timeline_batch.py holds the two equal):
- one query checks every event's invoice (known, same tenant); any bad one raises, so the careful
  per-event pass dead-letters it alone;
- the stage upserts use the per-event merge rule (repository.timeline._STAGE_MERGE) unchanged. A stage seen
  k times in the batch gets its k observations in k successive statements ("waves", in event
  order), because one INSERT .. ON CONFLICT cannot touch a row twice, and a stage's state depends
  only on its own observations in order; stages of different invoices are independent;
- a stage that belongs to another invoice is not applied by the upsert: the count falls short and
  the batch raises (the per-event pass rejects exactly that event);
- the history of every observation is appended in one statement.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from dunning.events import Event
from dunning.handler_table import Rejected
from dunning.logging import get_logger
from dunning_ingest import repository

log = get_logger(__name__)

RowsOf = Callable[[Any], list[repository.StageObservation]]  # an event's record -> its observations (handlers)


def unique_rows(rows: list[repository.StageObservation]) -> list[repository.StageObservation]:
    """A stage listed twice in one event counts once (last wins)."""
    return list({r.stage_id: r for r in rows}.values())


def timeline_batch(rows_of: RowsOf) -> Callable[[asyncpg.Connection, list[Event]], Awaitable[None]]:
    async def handle(conn: asyncpg.Connection, events: list[Event]) -> None:
        await apply_timeline_batch(conn, events, rows_of)

    handle.__name__ = f"timeline_batch_{rows_of.__name__.removesuffix('_rows')}"
    return handle


async def apply_timeline_batch(conn: asyncpg.Connection, events: list[Event], rows_of: RowsOf) -> None:
    invoices = await repository.invoice_refs(conn, list({e.data.invoice_id for e in events}))
    waves: list[list[dict]] = []
    seen: dict[str, int] = {}
    history: list[dict] = []
    for event in events:
        invoice = invoices.get(event.data.invoice_id)
        if invoice is None:
            raise Rejected(f"unknown invoice {event.data.invoice_id}")
        if invoice["tenant_id"] != event.tenant_id or event.data.tenant_id != event.tenant_id:
            raise Rejected(f"invoice {invoice['id']} does not belong to tenant {event.tenant_id}")
        for o in unique_rows(rows_of(event.data)):
            wave = seen.get(o.stage_id, 0)
            seen[o.stage_id] = wave + 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append({**o._asdict(), "invoice_id": invoice["id"], "tenant_id": invoice["tenant_id"]})
            history.append(
                {
                    "stage_id": o.stage_id,
                    "event_id": event.id,
                    "state": o.state,
                    "rank": o.rank,
                    "at": o.at,
                    "reason": o.reason,
                    "moved_from": o.moved_from,
                    "moved_to": o.moved_to,
                }
            )
    for stages in waves:
        applied = await repository.observe_stages_many(conn, stages)
        if applied != len(stages):
            raise Rejected(f"{len(stages) - applied} stage(s) belong to another invoice")
    await repository.append_history_many(conn, history)
    log.info(
        "ingest.timeline.observed_batch",
        event_type=events[0].type,
        events=len(events),
        stages=len(history),
        waves=len(waves),
    )
