"""Contact caps and the quiet period at firing: a customer's contacts are counted across its invoices
(one contact per fired (invoice, stage), its channels together); what the cap or the quiet period holds
back is deferred (StageDeferred) to when it allows a contact again, then fires."""

import copy
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.settings_store import put_document
from dunning_scheduler.tenant_settings import parse_settings
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration


@pytest.fixture
def h(h):
    """The helpers, applying through handlers with a policy and settings memory of this test's own."""

    class Fresh(h):
        apply = staticmethod(partial(apply_event, handlers=handlers_for(ActivePolicies())))

    return Fresh


ESCALATED, DEFERRED = "dunning.StageEscalated.v1", "dunning.StageDeferred.v1"
NOTICE, ASSESSED = "dunning.NoticeComposed.v1", "dunning.LateChargesAssessed.v1"
RESCHEDULED, WAIVED = "dunning.StagesRescheduled.v1", "dunning.LateChargesWaived.v1"
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"  # the helpers' customer


async def use_policy(pool, tenant: str, document: dict) -> None:
    async with pool.acquire() as conn:
        await save_policy(conn, tenant, parse_policy(document))


async def use_settings(pool, tenant: str, document: dict) -> None:
    async with pool.acquire() as conn:
        await put_document(conn, settings_sql.SETTINGS, tenant, parse_settings(document).document, "test")


async def fire(pool) -> int:
    """One firing step, as the loop takes it (a fresh loop: its settings memory is empty)."""
    schema = await pool.fetchval("SELECT current_schema()")
    return await FiringLoop(pool, schema, gated=False).fire_once()


async def issue(pool, h, *, customer_id: str | None = None, **kwargs) -> dict:
    """An InvoiceIssued applied; `customer_id` gives it another customer than the helpers'."""
    issued = h.invoice_issued(**kwargs)
    if customer_id is not None:
        issued = copy.deepcopy(issued)
        issued["data"]["customer"]["customer_id"] = customer_id
    await h.apply(pool, issued)
    return issued


async def make_due(pool, invoice_id: str, stage: str | None = None) -> None:
    """Time passes: the invoice's scheduled timers (or one stage's) fall due."""
    await pool.execute(
        "UPDATE timers SET scheduled_at = now() - interval '1 second'"
        " WHERE invoice_id = $1 AND state = 'scheduled' AND ($2::text IS NULL OR stage = $2)",
        invoice_id,
        stage,
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


NOW = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]}]}


async def test_the_cap_defers_a_stage_of_another_invoice_of_the_customer(pool, h):
    await use_policy(pool, h.TENANT, NOW)
    await use_settings(pool, h.TENANT, {"contact_caps": {"max_reminders": 1, "period": "P7D"}})
    first = await issue(pool, h)
    second = await issue(pool, h)  # the same customer, due now too

    assert await fire(pool) == 2  # one contact: the first invoice's stage on both channels
    fired = [r for r in await h.timers(pool, first["subject"])]
    assert {r["state"] for r in fired} == {"fired"}
    contact_at = fired[0]["fired_at"]
    held = await h.timers(pool, second["subject"])
    assert {r["state"] for r in held} == {"scheduled"}
    assert {r["scheduled_at"] for r in held} == {contact_at + timedelta(days=7)}
    assert await h.outbox_events(pool, ESCALATED, second["subject"]) == []
    [deferred] = await h.outbox_events(pool, DEFERRED, second["subject"])
    assert deferred["data"]["reason"] == "contact_cap"
    assert deferred["data"]["detail"].startswith("at most 1 reminder per P7D: 1 sent since ")
    assert at(deferred["data"]["stages"][0]["scheduled_at"]) == contact_at + timedelta(days=7)
    assert await pool.fetchval("SELECT count(*) FROM customer_contacts WHERE customer_id = $1", CUSTOMER) == 1

    # a week later (the contact moved back 7 days): the held stage fires
    await pool.execute("UPDATE customer_contacts SET contacted_at = contacted_at - interval '7 days'")
    await make_due(pool, second["subject"])
    assert await fire(pool) == 2
    assert {r["state"] for r in await h.timers(pool, second["subject"])} == {"fired"}


async def test_the_quiet_period_holds_the_next_contact(pool, h):
    await use_policy(pool, h.TENANT, NOW)
    await use_settings(pool, h.TENANT, {"contact_caps": {"quiet_period": "P2D"}})
    first = await issue(pool, h)
    assert await fire(pool) == 2
    contact_at = (await h.timers(pool, first["subject"]))[0]["fired_at"]

    second = await issue(pool, h)
    assert await fire(pool) == 0
    [deferred] = await h.outbox_events(pool, DEFERRED, second["subject"])
    assert deferred["data"]["reason"] == "quiet_period" and "P2D" in deferred["data"]["detail"]
    assert {r["scheduled_at"] for r in await h.timers(pool, second["subject"])} == {contact_at + timedelta(days=2)}
    # another customer is not held by this one's quiet period
    other = await issue(pool, h, customer_id="cus_01JB2F7H9K3M5N7P9Q1R3S5TZZ")
    assert await fire(pool) == 2
    assert len(await h.outbox_events(pool, ESCALATED, other["subject"])) == 2
