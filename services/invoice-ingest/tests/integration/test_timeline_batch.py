"""The timeline batch handlers end in exactly the state the per-event handlers reach: the same
shuffled events go through the consumer runner's fast path once with batch handlers (one schema)
and once without (another schema), and the stages and their history must be identical."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from dunning import tenancy
from dunning.consumer import ConsumerRunner, without_batches
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import dumps, new_event
from dunning_ingest.handlers import HANDLERS
from dunning_tools.testing.fakes import FakeConsumer

pytestmark = pytest.mark.integration

TENANT, OTHER = "ten_batch0000000001", "ten_batch0000000002"
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
CUSTOMER = {
    "customer_id": "cus_batch00000001",
    "external_id": "C1",
    "name": "Brandt",
    "email": "ap@example.com",
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
}


def _events(rng: random.Random, invoices: list[str]) -> list[dict]:
    """Plans, replans, escalations, deliveries and cancellations, with colliding times and stages."""
    out = []
    at = lambda: T0 + timedelta(minutes=rng.choice([0, 1, 1, 2, 3]))  # noqa: E731 - ties on purpose
    for inv in invoices:
        stages = [f"stg_{inv[4:]}S{n}" for n in range(3)]
        for version in (1, 2, 2):
            planned_at = at()
            out.append(
                new_event(
                    "dunning.DunningPlanned.v1",
                    {
                        "invoice_id": inv,
                        "tenant_id": TENANT,
                        "policy_id": "pol_b",
                        "policy_version": version,
                        "planned_at": planned_at,
                        "stages": [
                            {
                                "stage_id": s,
                                "stage": f"st{n}v{version}",
                                "sequence": n + version,
                                "channel": rng.choice(["email", "letter"]),
                                "scheduled_at": planned_at + timedelta(days=n),
                                "state": rng.choice(["scheduled", "skipped"]),
                                "reason": rng.choice([None, "why"]),
                            }
                            for n, s in enumerate(stages)
                            if rng.random() < 0.8
                        ],
                    },
                    source="/scheduler",
                    subject=inv,
                    tenant_id=TENANT,
                )
            )
        for s in stages:
            for _ in range(rng.randint(0, 2)):
                out.append(
                    new_event(
                        "dunning.StageEscalated.v1",
                        {
                            "stage_id": s,
                            "invoice_id": inv,
                            "tenant_id": TENANT,
                            "stage": "soft",
                            "sequence": 1,
                            "channel": "email",
                            "template": "soft",
                            "scheduled_at": T0,
                            "fired_at": at(),
                            "invoice": {
                                "external_id": "X1",
                                "number": "N1",
                                "currency": "EUR",
                                "amount_due": "10.00",
                                "balance": "10.00",
                                "issue_date": "2026-11-02",
                                "due_date": "2026-11-16",
                                "payment_url": None,
                            },
                            "customer": CUSTOMER,
                        },
                        source="/scheduler",
                        subject=inv,
                        tenant_id=TENANT,
                    )
                )
            for _ in range(rng.randint(0, 2)):
                out.append(
                    new_event(
                        "dunning.ReminderSent.v1",
                        {
                            "delivery_id": f"dlv_{uuid.uuid4().hex}",
                            "stage_id": s,
                            "invoice_id": inv,
                            "tenant_id": TENANT,
                            "stage": "soft",
                            "channel": "email",
                            "recipient": rng.choice(["a@example.com", "b@example.com"]),
                            "provider_message_id": "m-1",
                            "sent_at": at(),
                        },
                        source="/notifier",
                        subject=inv,
                        tenant_id=TENANT,
                    )
                )
            if rng.random() < 0.5:
                out.append(
                    new_event(
                        "dunning.ReminderFailed.v1",
                        {
                            "delivery_id": f"dlv_{uuid.uuid4().hex}",
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
        new_event(
            "dunning.ReminderSent.v1",
            {
                "delivery_id": "dlv_stolen000000001",
                "stage_id": f"stg_{invoices[0][4:]}S0",
                "invoice_id": invoices[1],
                "tenant_id": TENANT,
                "stage": "soft",
                "channel": "email",
                "recipient": "x@example.com",
                "provider_message_id": "m-2",
                "sent_at": at(),
            },
            source="/notifier",
            subject=invoices[1],
            tenant_id=TENANT,
        )
    )
    out.append(
        new_event(
            "dunning.StageEscalated.v1",
            {
                "stage_id": "stg_unknown0000000001",
                "invoice_id": "inv_unknown0000000001",
                "tenant_id": TENANT,
                "stage": "soft",
                "sequence": 1,
                "channel": "email",
                "template": "soft",
                "scheduled_at": T0,
                "fired_at": at(),
                "invoice": {
                    "external_id": "X1",
                    "number": "N1",
                    "currency": "EUR",
                    "amount_due": "10.00",
                    "balance": "10.00",
                    "issue_date": "2026-11-02",
                    "due_date": "2026-11-16",
                    "payment_url": None,
                },
                "customer": CUSTOMER,
            },
            source="/scheduler",
            subject="inv_unknown0000000001",
            tenant_id=TENANT,
        )
    )
    out.append(
        new_event(
            "dunning.DunningPlanned.v1",
            {
                "invoice_id": invoices[2],
                "tenant_id": OTHER,
                "policy_id": "pol_b",
                "policy_version": 9,
                "planned_at": T0,
                "stages": [
                    {
                        "stage_id": f"stg_{invoices[2][4:]}S0",
                        "stage": "evil",
                        "sequence": 0,
                        "channel": "email",
                        "scheduled_at": T0,
                        "state": "scheduled",
                        "reason": None,
                    }
                ],
            },
            source="/scheduler",
            subject=invoices[2],
            tenant_id=OTHER,
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


async def _apply_all(
    dsn: str, schema: str, invoices: list[str], events: list[dict], *, batch: bool, batch_size: int
) -> tuple[list, list, int]:
    pool = await create_pool(dsn, schema, max_size=2)
    try:
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
        runner = ConsumerRunner(
            name="t",
            pool=pool,
            bootstrap_servers="unused",
            group_id="t",
            topics=[],
            handlers=HANDLERS if batch else without_batches(HANDLERS),
            handler_attempts=1,
        )
        tp = TopicPartition("dunning.stages.v1", 0)
        records = [
            SimpleNamespace(
                topic=tp.topic, partition=0, offset=n, key=e["subject"].encode(), value=dumps(e), headers=()
            )
            for n, e in enumerate(events)
        ]
        for i in range(0, len(records), batch_size):
            await runner.process_batch(FakeConsumer(), {tp: records[i : i + batch_size]})
        stages = await pool.fetch("SELECT * FROM stages ORDER BY stage_id")
        history = await pool.fetch("SELECT * FROM stage_history ORDER BY stage_id, event_id")
        return [dict(r) for r in stages], [dict(r) for r in history], runner.dead_lettered
    finally:
        await pool.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_batch_handlers_end_where_event_by_event_ends(infra, migrated, seed):
    rng = random.Random(seed)
    invoices = [f"inv_batch{seed}{n:010d}" for n in range(8)]
    events = _clumped(rng, _events(rng, invoices))
    one_by_one_schema = migrated(migrations_of("dunning_ingest"))
    batched_schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(infra.database_url, batched_schema, migrations_of("dunning_ingest"))
    batch_size = rng.choice([7, 50, 500])

    expected = await _apply_all(
        infra.database_url, one_by_one_schema, invoices, events, batch=False, batch_size=batch_size
    )
    got = await _apply_all(infra.database_url, batched_schema, invoices, events, batch=True, batch_size=batch_size)

    stages, history, dead = expected
    # the stolen stage (or, when it came first, its rightful invoice's events), the unknown invoice,
    # the other tenant's plan
    assert dead >= 3
    assert len(stages) >= 8 and len(history) > len(stages)
    assert any(s["state"] == "cancelled" for s in stages) and any(s["state"] == "sent" for s in stages)
    assert got[0] == stages
    assert got[1] == history
    assert got[2] == dead
