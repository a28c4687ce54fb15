"""The scheduler's /metrics on a real PostgreSQL: timer backlog, payments watermark age, cancel latency,
the firing loop's counters — the figures an operator watches when reminders wait."""

from datetime import date, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dunning.clock import utcnow
from dunning.metrics import metrics_of, register_service
from dunning_scheduler import metrics as scheduler_metrics
from dunning_scheduler.api import create_app
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy_store import ActivePolicies
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration


async def _scrape(client) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        s.name + "".join(f"/{v}" for v in s.labels.values()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_backlog_watermark_age_and_cancel_latency_show_on_the_scrape(pool, settings, h):
    latency = scheduler_metrics.cancel_latency()
    handlers = handlers_for(ActivePolicies(), latency)  # the conftest's table, with this test's histogram

    async def apply(envelope: dict) -> None:
        assert await apply_event(pool, envelope, handlers=handlers)

    firing = FiringLoop(pool, settings.db_schema)  # not running: the gate would hold the stages anyway
    app = create_app(pool, settings)
    register_service(metrics_of(app), pool=pool, workers=[firing])  # as runtime.instrument_service does
    scheduler_metrics.instrument(metrics_of(app), pool, latency=latency)

    # Two invoices issued long ago: their past stages are due now, and no watermark lets them fire.
    issued = utcnow() - timedelta(days=60)
    held = h.invoice_issued(issued_at=issued, due_date=date.today() - timedelta(days=40))
    paid = h.invoice_issued(issued_at=issued, due_date=date.today() + timedelta(days=30))
    await apply(held)
    await apply(paid)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        before = await _scrape(client)
        acknowledged = utcnow() - timedelta(seconds=2)
        await apply(
            h.payment_received(
                paid["subject"], balance="0.00", settled=True, amount="1250.00", acknowledged_at=acknowledged
            )
        )
        after = await _scrape(client)

    assert before["dunning_scheduler_timers_due"] >= 1
    assert before["dunning_scheduler_timers_oldest_due_age_seconds"] > 0
    assert (
        before["dunning_scheduler_payments_watermark_age_seconds"]
        != before["dunning_scheduler_payments_watermark_age_seconds"]
    )  # NaN: no watermark received yet
    assert before["dunning_scheduler_cancel_latency_seconds_count"] == 0
    assert after["dunning_scheduler_cancel_latency_seconds_count"] == 1
    assert 2 <= after["dunning_scheduler_cancel_latency_seconds_sum"] < 60
    assert after["scheduler_stages_fired_total/firing"] == 0
