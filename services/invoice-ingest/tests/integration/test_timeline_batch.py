"""The timeline batch handlers end in exactly the state the per-event handlers reach: the same
shuffled events go through the consumer runner's fast path once with batch handlers (one schema)
and once without (another schema), and the stages and their history must be identical."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from dunning import tenancy
from dunning.db import migrations_of
from dunning.events import new_event
from dunning.ids import new_id
from dunning_ingest.handlers import HANDLERS
from dunning_tools.testing.events import dunning_planned, planned_stage, reminder_sent, stage_escalated
from dunning_tools.testing.runner import both_ways, feed, records, runner_on

pytestmark = pytest.mark.integration

TENANT, OTHER = "ten_batch0000000001", "ten_batch0000000002"
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)


def _events(rng: random.Random, invoices: list[str]) -> list[dict]:
    """Plans, replans (DunningPlanned and StagesRescheduled), escalations, deliveries and
    cancellations, with colliding times and stages."""
    out = []
    at = lambda: T0 + timedelta(minutes=rng.choice([0, 1, 1, 2, 3]))  # noqa: E731 - ties on purpose
    for inv in invoices:
        stages = [f"stg_{inv[4:]}S{n}" for n in range(3)]
        for version in (1, 2, 2):
            planned_at = at()
            plan = [
                planned_stage(
                    s,
                    f"st{n}v{version}",
                    n + version,
                    planned_at + timedelta(days=n),
                    channel=rng.choice(["email", "letter"]),
                    state=rng.choice(["scheduled", "skipped"]),
                    reason=rng.choice([None, "why"]),
                )
                for n, s in enumerate(stages)
                if rng.random() < 0.8
            ]
            for stage in plan:  # issue 10: a stage the calendar moved says why
                if rng.random() < 0.3:
                    stage["moved"] = "2026-12-25 is Christmas Day (DE): moved to the next working day"
            planned = dunning_planned(
                tenant_id=TENANT,
                invoice_id=inv,
                stages=plan,
                planned_at=planned_at,
                policy_id="pol_b",
                policy_version=version,
            )
            if rng.random() < 0.5:  # issue 10: the segment rule that chose the policy (a history entry)
                planned["data"]["segment"] = {"rule": rng.choice(["small", "default"]), "reason": "amount <= 100.00"}
            out.append(planned)
        for s in stages:
            for _ in range(rng.randint(0, 2)):
                out.append(
                    stage_escalated(tenant_id=TENANT, invoice_id=inv, stage_id=s, scheduled_at=T0, fired_at=at())
                )
            for _ in range(rng.randint(0, 2)):
                recipient = rng.choice(["a@example.com", "b@example.com"])
                out.append(
                    reminder_sent(tenant_id=TENANT, invoice_id=inv, stage_id=s, recipient=recipient, sent_at=at())
                )
            if rng.random() < 0.5:
                out.append(
                    new_event(
                        "dunning.ReminderFailed.v1",
                        {
                            "delivery_id": new_id("dlv"),
                            "stage_id": s,
                            "invoice_id": inv,
                            "tenant_id": TENANT,
                            "stage": "soft",
                            "channel": "email",
                            "recipient": "a@example.com",
                            "error_code": "smtp_550",
                            "error": "550 unknown user",
                            "permanent": rng.random() < 0.5,
                            "attempts": rng.randint(1, 3),
                            "failed_at": at(),
                        },
                        source="/notifier",
                        subject=inv,
                        tenant_id=TENANT,
                    )
                )
        for _ in range(rng.randint(0, 2)):  # re-plans: moved, added (no previous time) and dropped stages
            moved = []
            for n, s in enumerate(stages):
                previous = rng.choice([None, T0 + timedelta(days=n)])
                new = None if previous is not None and rng.random() < 0.3 else T0 + timedelta(days=n + 7)
                state = "cancelled" if new is None else rng.choice(["scheduled", "skipped"])
                moved.append(
                    {
                        "stage_id": s,
                        "stage": f"st{n}",
                        "sequence": n,
                        "channel": "email",
                        "previous_scheduled_at": previous,
                        "scheduled_at": new,
                        "state": state,
                    }
                )
            out.append(
                new_event(
                    "dunning.StagesRescheduled.v1",
                    {
                        "invoice_id": inv,
                        "tenant_id": TENANT,
                        "reason": rng.choice(["due_date_changed", "timezone_changed", "policy_applied"]),
                        "cause_event_id": None,
                        "policy_id": "pol_b",
                        "policy_version": 3,
                        "rescheduled_at": at(),
                        "stages": moved,
                    },
                    source="/scheduler",
                    subject=inv,
                    tenant_id=TENANT,
                )
            )
        if rng.random() < 0.7:
            out.append(
                new_event(
                    "dunning.StagesCancelled.v1",
                    {
                        "invoice_id": inv,
                        "tenant_id": TENANT,
                        "reason": "invoice_voided",
                        "cause_event_id": None,
                        "cancelled_at": at(),
                        "stages": [
                            {"stage_id": s, "stage": "firm", "sequence": 2, "channel": "email", "scheduled_at": T0}
                            for s in stages
                            if rng.random() < 0.6
                        ],
                    },
                    source="/scheduler",
                    subject=inv,
                    tenant_id=TENANT,
                )
            )
    # Rejected ones: a stage of another invoice, an unknown invoice, another tenant's invoice.
    out.append(
        reminder_sent(
            tenant_id=TENANT,
            invoice_id=invoices[1],
            stage_id=f"stg_{invoices[0][4:]}S0",
            delivery_id="dlv_stolen000000001",
            recipient="x@example.com",
            provider_message_id="m-2",
            sent_at=at(),
        )
    )
    out.append(
        stage_escalated(
            tenant_id=TENANT,
            invoice_id="inv_unknown0000000001",
            stage_id="stg_unknown0000000001",
            scheduled_at=T0,
            fired_at=at(),
        )
    )
    out.append(
        dunning_planned(
            tenant_id=OTHER,
            invoice_id=invoices[2],
            stages=[planned_stage(f"stg_{invoices[2][4:]}S0", "evil", 0, T0)],
            planned_at=T0,
            policy_id="pol_b",
            policy_version=9,
        )
    )
    return out


def _clumped(rng: random.Random, events: list[dict]) -> list[dict]:
    """Shuffled, then sorted by type within random windows, so runs of one type form (and break)."""
    rng.shuffle(events)
    out, i = [], 0
    while i < len(events):
        n = rng.randint(1, 25)
        out.extend(sorted(events[i : i + n], key=lambda e: e["type"]))
        i += n
    return out


async def _apply_all(pool, invoices: list[str], events: list[dict], *, batch: bool, batch_size: int) -> tuple:
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", None)
        await tenancy.provision(conn, OTHER, "Globex", None)
        await conn.execute(
            "INSERT INTO invoices (id, tenant_id, external_id, number, customer_id, currency, amount_due, balance,"
            " issue_date, due_date, content_hash, created_at)"
            " SELECT i, $2, i, i, 'cus_x', 'EUR', 10, 10, '2026-11-02', '2026-11-16', '\\x00', now()"
            " FROM unnest($1::text[]) AS i",
            invoices,
            TENANT,
        )
    runner = runner_on(pool, HANDLERS, batch=batch)
    await feed(runner, records(events, topic="dunning.stages.v1"), batch_size)
    stages = await pool.fetch("SELECT * FROM stages ORDER BY stage_id")
    history = await pool.fetch("SELECT * FROM stage_history ORDER BY stage_id, event_id")
    entries = await pool.fetch("SELECT * FROM stop_events ORDER BY invoice_id, event_id")
    return [dict(r) for r in stages], [dict(r) for r in history], runner.dead_lettered, [dict(r) for r in entries]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_batch_handlers_end_where_event_by_event_ends(infra, seed):
    rng = random.Random(seed)
    invoices = [f"inv_batch{seed}{n:010d}" for n in range(8)]
    events = _clumped(rng, _events(rng, invoices))
    batch_size = rng.choice([7, 50, 500])

    expected, got = await both_ways(
        infra.database_url,
        migrations_of("dunning_ingest"),
        lambda pool, batch: _apply_all(pool, invoices, events, batch=batch, batch_size=batch_size),
    )

    stages, history, dead, entries = expected
    # the stolen stage (or, when it came first, its rightful invoice's events), the unknown invoice,
    # the other tenant's plan
    assert dead >= 3
    assert len(stages) >= 8 and len(history) > len(stages)
    assert any(s["state"] == "cancelled" for s in stages) and any(s["state"] == "sent" for s in stages)
    assert got[0] == stages
    assert got[1] == history
    assert got[2] == dead
    assert any(e["kind"] == "segment_chosen" for e in entries)
    assert got[3] == entries
