"""Planning many InvoiceIssued in one statement, and the in-memory active policy (a new version is
used from the very next planning on)."""

import random
from datetime import date, timedelta

import orjson
import pytest

from dunning import inbox, tenancy
from dunning.clock import utcnow
from dunning.contracts import InvoiceIssued, PaymentsWatermark
from dunning.db import migrations_of
from dunning.events import decode, dumps, new_event
from dunning.handler_table import Rejected
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.testing.runner import both_ways, feed, records, runner_on

pytestmark = pytest.mark.integration
PLANNED = "dunning.DunningPlanned.v1"
OTHER = "ten_test02SCHEDULER"
MIGRATIONS = migrations_of("dunning_scheduler")
HANDLERS = handlers_for(ActivePolicies())


async def apply_batch(pool, envelopes: list[dict]) -> None:
    """As a runner with batch handlers would: claim every id, then one call for the run."""
    events = [decode(dumps(e)) for e in envelopes]
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            assert await inbox.claim(conn, event.id, event.type, "test")
        await HANDLERS[InvoiceIssued].batch(conn, events)


async def test_a_batch_plans_each_invoice_once_as_one_by_one_would(pool, h):
    old = h.invoice_issued(issued_at=utcnow() - timedelta(days=30), due_date=utcnow().date() - timedelta(days=16))
    paid_first = h.invoice_issued(due_date=date(2031, 3, 20))
    fresh = h.invoice_issued(due_date=date(2031, 3, 20), timezone="America/New_York")
    again = h.invoice_issued(invoice_id=fresh["subject"], due_date=date(2031, 5, 1))  # same invoice, new event
    await h.apply(pool, h.payment_received(paid_first["subject"], balance="0.00", settled=True))

    await apply_batch(pool, [old, paid_first, fresh, again])

    states = {
        e["subject"]: [(r["stage"], r["state"]) for r in await h.timers(pool, e["subject"])]
        for e in (old, paid_first, fresh)
    }
    assert states[old["subject"]] == [
        ("pre_due", "skipped"),
        ("soft", "skipped"),
        ("firm", "skipped"),
        ("final", "scheduled"),
        ("collections", "scheduled"),
    ]
    assert {s for _, s in states[paid_first["subject"]]} == {"cancelled"}
    assert {s for _, s in states[fresh["subject"]]} == {"scheduled"}
    fresh_rows = await h.timers(pool, fresh["subject"])
    assert fresh_rows[1]["scheduled_at"].date() == date(2031, 3, 21)  # the first event's due date won
    for envelope in (old, paid_first, fresh):
        [planned] = await h.outbox_events(pool, PLANNED, envelope["subject"])  # checked against its contract
        rows = await h.timers(pool, envelope["subject"])
        assert [(s["stage_id"], s["state"], s["scheduled_at"]) for s in planned["data"]["stages"]] == [
            (r["stage_id"], r["state"], r["scheduled_at"].isoformat().replace("+00:00", "Z")) for r in rows
        ]
    outbox = await pool.fetch("SELECT key, event_id::text, headers FROM outbox WHERE event_type = $1", PLANNED)
    for row in outbox:
        assert row["headers"]["ce_id"] == row["event_id"] and row["headers"]["ce_type"] == PLANNED


async def test_another_tenants_invoice_in_a_batch_is_rejected(pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, event)
    intruder = h.invoice_issued(invoice_id=event["subject"], tenant_id="ten_other")
    with pytest.raises(Rejected):
        await apply_batch(pool, [h.invoice_issued(due_date=date(2031, 3, 20)), intruder])


async def test_a_new_policy_version_is_used_from_the_next_invoice_on(pool, h):
    first = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, first)  # the built-in default, now remembered
    async with pool.acquire() as conn:
        await save_policy(
            conn, h.TENANT, parse_policy({"id": "pol_two", "stages": [{"name": "only", "offset": "P2D"}]})
        )
    second = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, second)
    async with pool.acquire() as conn:
        await save_policy(
            conn,
            h.TENANT,
            parse_policy(
                {"id": "pol_three", "stages": [{"name": "one", "offset": "P1D"}, {"name": "two", "offset": "P3D"}]}
            ),
        )
    third = h.invoice_issued(due_date=date(2031, 3, 20))
    await apply_batch(pool, [third])

    assert len(await h.timers(pool, first["subject"])) == 5
    assert [r["stage"] for r in await h.timers(pool, second["subject"])] == ["only"]
    assert [r["stage"] for r in await h.timers(pool, third["subject"])] == ["one", "two"]
    [planned] = await h.outbox_events(pool, PLANNED, third["subject"])
    assert (planned["data"]["policy_id"], planned["data"]["policy_version"]) == ("pol_three", 2)


async def _through_runner(pool, tenant: str, envelopes: list[dict], *, batch: bool, batch_size: int) -> dict:
    """The envelopes through the consumer runner's fast path, with the table's batch handlers or
    without them (each event by its per-event handler); the end state, with what differs by nature
    between two runs (generated stage ids, planning times, event ids of what was published) left out."""
    async with pool.acquire() as conn:
        await tenancy.provision(conn, tenant, "Acme", None)
        await tenancy.provision(conn, OTHER, "Globex", None)
    runner = runner_on(pool, handlers_for(ActivePolicies()), batch=batch)
    await feed(runner, records(envelopes), batch_size)
    volatile = {
        "stage_id",
        "planned_at",
        "created_at",
        "updated_at",
        "fired_at",
        "cancelled_at",
        "received_at",
        "settled_at",
    }

    def rows(fetched) -> list[dict]:
        return [{k: v for k, v in dict(r).items() if k not in volatile} for r in fetched]

    def published(payload: bytes) -> dict:
        data = orjson.loads(payload)["data"]
        data.pop("planned_at", None)
        data.pop("cancelled_at", None)
        for stage in data.get("stages", []):
            stage.pop("stage_id")
        return data

    return {
        "invoices": rows(await pool.fetch("SELECT * FROM invoices ORDER BY invoice_id")),
        "timers": rows(await pool.fetch("SELECT * FROM timers ORDER BY invoice_id, sequence, channel")),
        "watermarks": rows(await pool.fetch("SELECT * FROM watermark_statements ORDER BY statement_id")),
        "outbox": sorted(
            (r["key"], r["topic"], r["event_type"], orjson.dumps(published(bytes(r["payload"]))))
            for r in await pool.fetch("SELECT * FROM outbox")
        ),
        "dead_lettered": runner.dead_lettered,
    }


def _stream(rng: random.Random, h) -> list[dict]:
    """InvoiceIssued (fresh, old ones imported late, repeats of one invoice, another tenant's claim on
    an invoice), payments settling some of them (before or after their invoice) and watermark
    statements, in runs of one type that form and break."""
    now = utcnow()
    issued = [
        h.invoice_issued(
            issued_at=now - timedelta(days=rng.choice([0, 1, 30])),
            due_date=(now + timedelta(days=rng.choice([-16, 5, 14]))).date(),
        )
        for _ in range(12)
    ]
    events = list(issued)
    events += [h.invoice_issued(invoice_id=rng.choice(issued)["subject"], due_date=date(2031, 5, 1)) for _ in range(3)]
    events.append(h.invoice_issued(invoice_id=rng.choice(issued)["subject"], tenant_id=OTHER))
    events += [h.payment_received(e["subject"], balance="0.00", settled=True) for e in rng.sample(issued, 4)]
    events += [
        new_event(
            PaymentsWatermark.TYPE,
            {
                "watermark": now,
                "payments_topic": "dunning.payments.v1",
                "payments_offsets": {"0": n},
                "invoices_topic": "dunning.invoices.v1",
                "invoice_positions": {"0": n},
                "computed_at": now,
            },
            source=PaymentsWatermark.SOURCE,
            subject=PaymentsWatermark.SUBJECT,
            tenant_id=PaymentsWatermark.TENANT,
        )
        for n in range(3)
    ]
    rng.shuffle(events)
    out, i = [], 0
    while i < len(events):  # sorted by type within random windows: runs of one type
        n = rng.randint(1, 8)
        out.extend(sorted(events[i : i + n], key=lambda e: e["type"]))
        i += n
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batch_handlers_end_where_event_by_event_ends(infra, h, seed):
    """The table's batch handlers (on_invoices_issued, on_payments_watermarks) mirror the per-event
    ones: the same stream ends in the same invoices, timers, watermark statements and outbox rows,
    and dead-letters the same events."""
    rng = random.Random(seed)
    envelopes = _stream(rng, h)
    batch_size = rng.choice([5, 50])
    one_by_one, batched = await both_ways(
        infra.database_url,
        MIGRATIONS,
        lambda pool, batch: _through_runner(pool, h.TENANT, envelopes, batch=batch, batch_size=batch_size),
    )
    assert one_by_one["dead_lettered"] >= 1  # another tenant's InvoiceIssued for a known invoice
    assert len(one_by_one["timers"]) > 12 and any(t["state"] == "cancelled" for t in one_by_one["timers"])
    assert batched == one_by_one
