"""Fixtures for the scheduler's integration tests: a migrated schema with a tenant, event builders,
and helpers to apply events through the handlers and read the outbox; `firing_h` adds what the
firing-rule tests share (a policy and settings memory of the test's own, one firing step)."""

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial

import orjson
import pytest

from dunning import tenancy
from dunning.clock import utcnow
from dunning.db import create_pool, migrations_of
from dunning.events import new_event, validate
from dunning.ids import new_id
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.settings import Settings
from dunning_scheduler.settings_store import put_document
from dunning_scheduler.tenant_settings import parse_settings
from dunning_tools.testing import events, kafka
from dunning_tools.testing.handlers import apply_event
from dunning_tools.testing.outbox import outbox_events

MIGRATIONS = migrations_of("dunning_scheduler")
TENANT = "ten_test01SCHEDULER"
API_KEY = "dk_testkey_scheduler_0123456789"
HANDLERS = handlers_for(ActivePolicies())  # one policy cache, as in a service process


@pytest.fixture
def schema(migrated) -> str:
    return migrated(MIGRATIONS)


@pytest.fixture
def settings(infra, schema) -> Settings:
    # the scheduler alone; the gate has its own tests
    return infra.settings(Settings, schema, relay_poll_seconds=0.05, payments_gate=False)


@pytest.fixture
async def pool(infra, schema):
    pool = await create_pool(infra.database_url, schema, max_size=12)
    async with pool.acquire() as conn:
        await tenancy.provision(conn, TENANT, "Acme", API_KEY)
    yield pool
    await pool.close()


invoice_issued = partial(events.invoice_issued, tenant_id=TENANT)


payment_received = partial(events.payment_received, tenant_id=TENANT)


apply = partial(apply_event, handlers=HANDLERS)


def _change(event_type: str, source: str, data: dict, subject: str | None = None) -> dict:
    envelope = new_event(
        event_type, data, source=source, subject=subject or data["invoice_id"], tenant_id=data["tenant_id"]
    )
    validate(envelope)
    return envelope


def invoice_updated(
    issued: dict,
    *,
    version: int,
    due_date: date | None = None,
    amount_due: str | None = None,
    previous: dict | None = None,
    customer: dict | None = None,
) -> dict:
    """An InvoiceUpdated of the invoice `issued` (its InvoiceIssued envelope): its state with the given
    changes, as version `version`; `previous` is the state it changes (default: the issued one)."""
    before = previous or issued["data"]
    data = {k: v for k, v in issued["data"].items() if k != "issued_at"}
    data.update(customer=customer or before["customer"], version=version)
    data["due_date"] = due_date.isoformat() if due_date else before["due_date"]
    data["amount_due"] = amount_due or before["amount_due"]
    changed = [f for f in ("due_date", "amount_due", "customer") if data[f] != before[f]] or ["metadata"]
    data.update(
        changed=changed,
        previous_amount_due=before["amount_due"],
        previous_due_date=before["due_date"],
        updated_at=utcnow(),
    )
    return _change("dunning.InvoiceUpdated.v1", "/invoice-ingest", data)


def invoice_voided(issued: dict, *, version: int) -> dict:
    d = issued["data"]
    data = {
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "external_id": d["external_id"],
        "version": version,
        "reason": "issued in error",
        "voided_at": utcnow(),
    }
    return _change("dunning.InvoiceVoided.v1", "/invoice-ingest", data)


def invoice_written_off(issued: dict, *, version: int) -> dict:
    d = issued["data"]
    data = {
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "external_id": d["external_id"],
        "version": version,
        "reason": "customer insolvent",
        "currency": d["currency"],
        "amount_written_off": d["amount_due"],
        "written_off_at": utcnow(),
    }
    return _change("dunning.InvoiceWrittenOff.v1", "/invoice-ingest", data)


def credit_note_issued(
    issued: dict,
    *,
    amount: str,
    balance: str,
    settled: bool,
    acknowledged_at: datetime | None = None,
    reference: str | None = None,
) -> dict:
    d = issued["data"]
    data = {
        "credit_note_id": new_id("cn"),
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "invoice_external_id": d["external_id"],
        "reference": reference or f"CN-{new_id('x')[-8:]}",
        "reason": "goods returned",
        "currency": d["currency"],
        "amount": amount,
        "amount_applied": amount,
        "balance_remaining": str(Decimal(balance)),
        "settled": settled,
        "acknowledged_at": acknowledged_at or utcnow(),
    }
    return _change("dunning.CreditNoteIssued.v1", "/reconciliation", data)


def customer_updated(customer: dict, *, tenant_id: str = TENANT, version: int, **changes) -> dict:
    """A CustomerUpdated of `customer` (an invoice's customer snapshot) with `changes` applied."""
    new = {**customer, **changes}
    data = {
        "customer_id": customer["customer_id"],
        "tenant_id": tenant_id,
        "external_id": new["external_id"],
        "version": version,
        "name": new["name"],
        "email": new["email"],
        "cc": changes.get("cc", []),
        "locale": new["locale"],
        "timezone": new["timezone"],
        "changed": sorted(
            k
            for k in changes
            if k
            in (
                *("name", "email", "cc", "locale", "timezone", "country", "subdivision", "tags", "attributes"),
                *("phone", "postal_address"),
            )
        )
        or ["name"],
        "previous_timezone": customer["timezone"],
        "updated_at": utcnow(),
    }
    optional = ("country", "subdivision", "tags", "attributes", "phone", "postal_address")
    data |= {k: new[k] for k in optional if new.get(k) is not None}
    return _change("dunning.CustomerUpdated.v1", "/invoice-ingest", data, subject=customer["customer_id"])


def _customer_event(event_type: str, data: dict) -> dict:
    return _change(event_type, "/invoice-ingest", data, subject=data["customer_id"])


def hold_placed(
    issued: dict, *, whole_customer: bool = False, ends_at: datetime | None = None, hold_id: str | None = None
) -> dict:
    """A HoldPlaced on the invoice `issued` (its InvoiceIssued envelope), or on its whole customer."""
    d = issued["data"]
    data = {
        "hold_id": hold_id or new_id("hld"),
        "tenant_id": d["tenant_id"],
        "customer_id": d["customer"]["customer_id"],
        "invoice_id": None if whole_customer else d["invoice_id"],
        "reason": "key account: talk to Anna first",
        "placed_by": "anna@acme.example",
        "ends_at": ends_at,
        "acknowledged_at": utcnow(),
    }
    return _customer_event("dunning.HoldPlaced.v1", data)


def hold_released(placed: dict) -> dict:
    d = placed["data"]
    data = {k: d[k] for k in ("hold_id", "tenant_id", "customer_id", "invoice_id")}
    data.update(released_by="anna@acme.example", released_at=utcnow())
    return _customer_event("dunning.HoldReleased.v1", data)


def dispute_opened(issued: dict, *, amount: str | None = None) -> dict:
    d = issued["data"]
    data = {
        "dispute_id": new_id("dsp"),
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "reason": "goods arrived damaged",
        "currency": d["currency"],
        "disputed_amount": amount,
        "opened_by": "support@acme.example",
        "acknowledged_at": utcnow(),
    }
    return _change("dunning.DisputeOpened.v1", "/invoice-ingest", data)


def dispute_resolved(opened: dict, *, outcome: str, credit_amount: str | None = None) -> dict:
    d = opened["data"]
    data = {k: d[k] for k in ("dispute_id", "invoice_id", "tenant_id", "currency")}
    data.update(outcome=outcome, credit_amount=credit_amount, resolved_by="support@acme.example", note=None,
                resolved_at=utcnow())  # fmt: skip
    return _change("dunning.DisputeResolved.v1", "/invoice-ingest", data)


def promise_made(
    issued: dict,
    *,
    amount: str,
    promised_date: date,
    acknowledged_at: datetime | None = None,
    due_by: datetime | None = None,
) -> dict:
    """A PromiseMade: by the end of `promised_date`, or by the instant `due_by` (then on its day)."""
    d = issued["data"]
    data = {
        "promise_id": new_id("prm"),
        "invoice_id": d["invoice_id"],
        "tenant_id": d["tenant_id"],
        "currency": d["currency"],
        "amount": amount,
        "promised_date": promised_date,
        "made_by": "ar@acme.example",
        "note": None,
        "acknowledged_at": acknowledged_at or utcnow(),
    } | ({"due_by": due_by} if due_by is not None else {})
    return _change("dunning.PromiseMade.v1", "/invoice-ingest", data)


def plan_agreed(issued: list[dict], instalments: list[tuple[date, str]]) -> dict:
    """A PaymentPlanAgreed over the invoices `issued` (their balances: their amounts due)."""
    d = issued[0]["data"]
    data = {
        "plan_id": new_id("pln"),
        "tenant_id": d["tenant_id"],
        "customer_id": d["customer"]["customer_id"],
        "currency": d["currency"],
        "total": str(sum(Decimal(i["data"]["amount_due"]) for i in issued)),
        "invoices": [{"invoice_id": i["data"]["invoice_id"], "balance": i["data"]["amount_due"]} for i in issued],
        "instalments": [
            {"number": n, "due_date": due, "amount": amount} for n, (due, amount) in enumerate(instalments, start=1)
        ],
        "agreed_by": "ar@acme.example",
        "acknowledged_at": utcnow(),
    }
    return _customer_event("dunning.PaymentPlanAgreed.v1", data)


def plan_cancelled(agreed: dict) -> dict:
    d = agreed["data"]
    data = {k: d[k] for k in ("plan_id", "tenant_id", "customer_id")}
    data.update(invoice_ids=[i["invoice_id"] for i in d["invoices"]], cancelled_by="ar@acme.example",
                reason="customer asked", cancelled_at=utcnow())  # fmt: skip
    return _customer_event("dunning.PaymentPlanCancelled.v1", data)


async def timers(pool, invoice_id: str) -> list:
    return await pool.fetch("SELECT * FROM timers WHERE invoice_id = $1 ORDER BY sequence, channel", invoice_id)


async def state(pool, source: str, watermark, invoice_positions: str = "{}") -> None:
    """A watermark statement of `source` as the scheduler stores one it read (no offsets named:
    usable at once), certifying `invoice_positions` (JSON text, partition -> offset)."""
    await pool.execute(
        "INSERT INTO watermark_statements (statement_id, source, watermark, payments_offsets, invoice_positions,"
        " offsets, computed_at) VALUES (gen_random_uuid(), $1, $2, '{}', $3::text::jsonb, '{}', $2)",
        source,
        watermark,
        invoice_positions,
    )


async def read_topic(bootstrap: str, topic: str, want, timeout: float = 20.0) -> list[dict]:
    """The envelopes on `topic`, read from the start until `want(envelopes)` holds."""
    return await kafka.read_topic(bootstrap, topic, want, timeout, decode=lambda r: orjson.loads(r.value))


class Helpers:
    invoice_issued = staticmethod(invoice_issued)
    payment_received = staticmethod(payment_received)
    invoice_updated = staticmethod(invoice_updated)
    invoice_voided = staticmethod(invoice_voided)
    invoice_written_off = staticmethod(invoice_written_off)
    credit_note_issued = staticmethod(credit_note_issued)
    customer_updated = staticmethod(customer_updated)
    hold_placed = staticmethod(hold_placed)
    hold_released = staticmethod(hold_released)
    dispute_opened = staticmethod(dispute_opened)
    dispute_resolved = staticmethod(dispute_resolved)
    promise_made = staticmethod(promise_made)
    plan_agreed = staticmethod(plan_agreed)
    plan_cancelled = staticmethod(plan_cancelled)
    apply = staticmethod(apply)
    outbox_events = staticmethod(outbox_events)
    timers = staticmethod(timers)
    state = staticmethod(state)
    read_topic = staticmethod(read_topic)
    TENANT = TENANT
    API_KEY = API_KEY


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


class FiringHelpers(Helpers):
    """The helpers of the firing-rule tests (window, caps, consolidation, charges)."""

    @staticmethod
    async def use_policy(pool, tenant: str, document: dict) -> None:
        async with pool.acquire() as conn:
            await save_policy(conn, tenant, parse_policy(document))

    @staticmethod
    async def use_settings(pool, tenant: str, document: dict) -> None:
        async with pool.acquire() as conn:
            await put_document(conn, settings_sql.SETTINGS, tenant, parse_settings(document).document, "test")

    @staticmethod
    async def fire(pool) -> int:
        """One firing step, as the loop takes it (a fresh loop: its settings memory is empty)."""
        schema = await pool.fetchval("SELECT current_schema()")
        return await FiringLoop(pool, schema, gated=False).fire_once()

    @classmethod
    async def issue(cls, pool, *, customer_id: str | None = None, **kwargs) -> dict:
        """An InvoiceIssued applied; `customer_id` gives it another customer than the helpers'."""
        issued = cls.invoice_issued(**kwargs)
        if customer_id is not None:
            issued = copy.deepcopy(issued)
            issued["data"]["customer"]["customer_id"] = customer_id
        await cls.apply(pool, issued)
        return issued

    @staticmethod
    async def make_due(pool, invoice_id: str, stage: str | None = None) -> None:
        """Time passes: the invoice's scheduled timers (or one stage's) fall due."""
        await pool.execute(
            "UPDATE timers SET scheduled_at = now() - interval '1 second'"
            " WHERE invoice_id = $1 AND state = 'scheduled' AND ($2::text IS NULL OR stage = $2)",
            invoice_id,
            stage,
        )

    @staticmethod
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture
def firing_h() -> type[FiringHelpers]:
    """FiringHelpers applying through handlers with a policy and settings memory of the test's own."""

    class Fresh(FiringHelpers):
        apply = staticmethod(partial(apply_event, handlers=handlers_for(ActivePolicies())))

    return Fresh
