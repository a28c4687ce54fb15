"""The planner with segment rules, calendars and windows on a real PostgreSQL: a rule choosing a
policy by the customer's payment history (reason stored, and in DunningPlanned.segment), a stage
moved off a public holiday in the customer's country (and again when the due date changes), a named
policy applied to the open invoices it planned."""

from datetime import date, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, put_policy
from dunning_scheduler.replan_loop import ReplanLoop
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.segments import parse_rules
from dunning_scheduler.settings_store import put_document
from dunning_scheduler.tenant_settings import parse_settings
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration
PLANNED = "dunning.DunningPlanned.v1"
BERLIN = ZoneInfo("Europe/Berlin")


def fresh_apply():
    """Apply through a handler table of its own: a fresh settings cache, as a process started now."""
    return partial(apply_event, handlers=handlers_for(ActivePolicies()))


def issued(h, customer_id: str, *, country: str | None = None, **kwargs) -> dict:
    envelope = h.invoice_issued(**kwargs)
    envelope["data"]["customer"]["customer_id"] = customer_id
    if country is not None:
        envelope["data"]["customer"]["country"] = country
    return envelope


async def store(pool, h, *, policies: dict[str, dict] | None = None, rules=None, settings=None, default=None):
    async with pool.acquire() as conn:
        for policy_id, document in (policies or {}).items():
            await put_policy(conn, h.TENANT, parse_policy({**document, "id": policy_id}), policy_key=policy_id)
        if default is not None:
            await put_policy(conn, h.TENANT, parse_policy(default))
        if rules is not None:
            await put_document(conn, settings_sql.RULES, h.TENANT, parse_rules(rules).document, "test")
        if settings is not None:
            await put_document(conn, settings_sql.SETTINGS, h.TENANT, parse_settings(settings).document, "test")


async def test_a_segment_rule_chooses_a_policy_by_payment_history(pool, h):
    late, prompt = new_id("cus"), new_id("cus")
    apply = fresh_apply()
    today = utcnow().date()
    for n in range(3):  # `late` settles 20 days after the due date, `prompt` before it
        for customer, due in ((late, today - timedelta(days=20 + n)), (prompt, today + timedelta(days=10))):
            event = issued(h, customer, issued_at=utcnow() - timedelta(days=60), due_date=due)
            await apply(pool, event)
            await apply(pool, h.payment_received(event["subject"], balance="0.00", settled=True))
    await store(
        pool,
        h,
        policies={
            "pol_firm": {"stages": [{"name": "firm", "offset": "P1D"}]},
            "pol_gentle": {"stages": [{"name": "gentle", "offset": "P10D"}]},
        },
        rules={
            "rules": [
                {
                    "name": "late_payers",
                    "policy_id": "pol_firm",
                    "when": {"average_days_late_min": 15, "history_invoices": 5, "history_min_invoices": 2},
                }
            ],
            "default_policy_id": "pol_gentle",
        },
    )

    apply = fresh_apply()  # the rules are read on first use (a running process: within 2 s)
    due = today + timedelta(days=30)
    new_late, new_prompt = issued(h, late, due_date=due), issued(h, prompt, due_date=due)
    await apply(pool, new_late)
    await apply(pool, new_prompt)

    rows = {
        r["invoice_id"]: r
        for r in await pool.fetch(
            "SELECT invoice_id, policy_id, policy_key, segment_rule, segment_reason FROM invoices"
            " WHERE invoice_id = ANY($1::text[])",
            [new_late["subject"], new_prompt["subject"]],
        )
    }
    chosen = rows[new_late["subject"]]
    assert (chosen["policy_id"], chosen["policy_key"]) == ("pol_firm", "pol_firm")
    assert chosen["segment_rule"] == "late_payers"
    assert "21" in chosen["segment_reason"] and "3" in chosen["segment_reason"], chosen["segment_reason"]
    other = rows[new_prompt["subject"]]
    assert (other["policy_id"], other["segment_rule"]) == ("pol_gentle", "default")
    assert [t["stage"] for t in await h.timers(pool, new_late["subject"])] == ["firm"]
    assert [t["stage"] for t in await h.timers(pool, new_prompt["subject"])] == ["gentle"]

    [planned] = await h.outbox_events(pool, PLANNED, new_late["subject"])
    assert planned["data"]["policy_id"] == "pol_firm"
    assert planned["data"]["segment"] == {"rule": "late_payers", "reason": chosen["segment_reason"]}
    [planned] = await h.outbox_events(pool, PLANNED, new_prompt["subject"])
    assert planned["data"]["segment"]["rule"] == "default"


async def test_without_rules_dunning_planned_has_no_segment_and_the_default_policy(pool, h):
    event = issued(h, new_id("cus"), due_date=date(2031, 3, 20))
    await fresh_apply()(pool, event)
    [planned] = await h.outbox_events(pool, PLANNED, event["subject"])
    assert "segment" not in planned["data"] and planned["data"]["policy_id"] == "pol_default"


async def test_a_stage_moves_off_a_public_holiday_in_the_customers_country(pool, h):
    await store(
        pool,
        h,
        default={"stages": [{"name": "soft", "offset": "P1D"}]},
        settings={"calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer"}},
    )
    apply = fresh_apply()
    due = date(2031, 12, 24)  # a Wednesday: P1D is Thursday 25 December
    german = issued(h, new_id("cus"), country="DE", due_date=due)
    american = issued(h, new_id("cus"), country="US", due_date=due)
    await apply(pool, german)
    await apply(pool, american)

    [de] = await h.timers(pool, german["subject"])
    [us] = await h.timers(pool, american["subject"])
    # DE: the 25th and 26th are public holidays, then a weekend: Monday the 29th. US: Friday the 26th.
    assert de["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 29)
    assert us["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 26)
    assert de["scheduled_at"].astimezone(BERLIN).hour == 9 and de["state"] == "scheduled"
    [planned] = await h.outbox_events(pool, PLANNED, german["subject"])
    moved = planned["data"]["stages"][0]["moved"]
    assert "Christmas" in moved, moved


async def test_a_customer_moving_country_is_replanned_with_its_new_calendar(pool, h):
    await store(
        pool,
        h,
        default={"stages": [{"name": "soft", "offset": "P1D"}]},
        settings={"calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer"}},
    )
    apply = fresh_apply()
    event = issued(h, new_id("cus"), country="US", due_date=date(2031, 12, 25))  # P1D: Friday 26 December
    await apply(pool, event)
    [before] = await h.timers(pool, event["subject"])
    assert before["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 26)

    customer = event["data"]["customer"]
    moved = h.customer_updated(customer, version=2, country="DE", tags=["strategic"])
    await apply(pool, moved)
    [after] = await h.timers(pool, event["subject"])
    assert after["stage_id"] == before["stage_id"]
    assert after["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 29)  # 26 Dec is a holiday in DE
    [rescheduled] = await h.outbox_events(pool, "dunning.StagesRescheduled.v1", event["subject"])
    assert rescheduled["data"]["reason"] == "calendar_changed"
    snapshot = await pool.fetchval("SELECT customer FROM invoices WHERE invoice_id = $1", event["subject"])
    assert snapshot["country"] == "DE" and snapshot["tags"] == ["strategic"]


async def test_a_due_date_change_is_replanned_with_the_customers_calendar(pool, h):
    await store(
        pool,
        h,
        default={"stages": [{"name": "soft", "offset": "P1D"}]},
        settings={"calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer"}},
    )
    apply = fresh_apply()
    event = issued(h, new_id("cus"), country="DE", due_date=date(2031, 12, 9))
    await apply(pool, event)
    [before] = await h.timers(pool, event["subject"])
    assert before["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 10)
    await apply(pool, h.invoice_updated(event, version=2, due_date=date(2031, 12, 24)))
    [after] = await h.timers(pool, event["subject"])
    assert after["stage_id"] == before["stage_id"]
    assert after["scheduled_at"].astimezone(BERLIN).date() == date(2031, 12, 29)  # off 25/26 Dec and the weekend


async def test_a_named_policy_applied_to_open_invoices_replans_only_those_it_planned(pool, h):
    everyone = {"rules": [{"name": "tagged", "policy_id": "pol_firm", "when": {"tags_any": ["firm"]}}]}
    await store(pool, h, policies={"pol_firm": {"stages": [{"name": "firm", "offset": "P1D"}]}}, rules=everyone)
    apply = fresh_apply()
    due = utcnow().date() + timedelta(days=20)
    firm = issued(h, new_id("cus"), due_date=due)
    firm["data"]["customer"]["tags"] = ["firm"]
    plain = issued(h, new_id("cus"), due_date=due)
    await apply(pool, firm)
    await apply(pool, plain)
    plain_before = await h.timers(pool, plain["subject"])

    async with pool.acquire() as conn:
        _, created, job = await put_policy(
            conn,
            h.TENANT,
            parse_policy({"id": "pol_firm", "stages": [{"name": "firm", "offset": "P3D"}]}),
            policy_key="pol_firm",
            apply_to="open_invoices",
        )
    assert created and job["invoices_total"] == 1 and job["policy_key"] == "pol_firm"
    schema = await pool.fetchval("SELECT current_schema()")
    assert await ReplanLoop(pool, schema, ActivePolicies(), batch_size=10).work_once()

    [moved] = await h.timers(pool, firm["subject"])
    assert moved["scheduled_at"].astimezone(BERLIN).date() == due + timedelta(days=3)
    assert moved["policy_version"] == 2
    assert await h.timers(pool, plain["subject"]) == plain_before  # planned with the default policy: left alone


async def test_a_customers_phone_and_postal_address_follow_customer_updated_into_the_snapshot(pool, h):
    await store(pool, h, default={"stages": [{"name": "soft", "offset": "P1D"}]})
    apply = fresh_apply()
    event = issued(h, new_id("cus"), due_date=date(2031, 3, 3))
    await apply(pool, event)
    customer = event["data"]["customer"]
    address = {"lines": ["Hauptstraße 1"], "city": "München", "country": "DE"}
    await apply(pool, h.customer_updated(customer, version=2, phone="+4930123456", postal_address=address))
    snapshot = await pool.fetchval("SELECT customer FROM invoices WHERE invoice_id = $1", event["subject"])
    assert (snapshot["phone"], snapshot["postal_address"]) == ("+4930123456", address)
    await apply(pool, h.customer_updated(customer, version=3, name="Cleared GmbH"))  # both cleared
    snapshot = await pool.fetchval("SELECT customer FROM invoices WHERE invoice_id = $1", event["subject"])
    assert "phone" not in snapshot and "postal_address" not in snapshot and snapshot["name"] == "Cleared GmbH"
