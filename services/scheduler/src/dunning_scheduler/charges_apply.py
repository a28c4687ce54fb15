"""Charges with I/O: a fired stage's late fee and interest assessed in the firing transaction (once
per (invoice, stage), never once waived), and the projection the charges API shows. The arithmetic
is `charges`'; this reads the money ledger and reference rates and records `invoice_charges`."""

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from dunning.contracts import LateChargesAssessed
from dunning.logging import get_logger
from dunning_scheduler.charges import (
    Accrual,
    UnknownReference,
    accrue,
    annual_rate_on,
    assess,
    charges_field,
    late_fee,
    plain,
)
from dunning_scheduler.policy import Policy
from dunning_scheduler.repository import charges as charges_sql

log = get_logger(__name__)
_UNKNOWN_LOGGED: set[tuple[str, str]] = set()  # (tenant, reference): an unknown reference is logged once


def has_charges(policy: Policy) -> bool:
    """True when firing under `policy` must assess or check something: fees, interest, a minimum."""
    return bool(policy.minimum_balance) or policy.interest is not None or any(s.late_fee for s in policy.stages)


async def ledger_of(conn: asyncpg.Connection, invoice_id: str, zone: ZoneInfo) -> list[tuple[date, Decimal]]:
    """The money applied to the invoice: (local day acknowledged, amount)."""
    return [
        (r["acknowledged_at"].astimezone(zone).date(), r["amount"])
        for r in await charges_sql.money_applied(conn, invoice_id)
    ]


async def rates_of(conn: asyncpg.Connection, tenant_id: str, name: str | None) -> list[tuple[date, Decimal]]:
    if name is None:
        return []
    return [(r["valid_from"], plain(r["rate"])) for r in await charges_sql.rates(conn, tenant_id, name)]


async def accrual_of(
    conn: asyncpg.Connection, policy: Policy, invoice: Any, zone: ZoneInfo, through: date
) -> tuple[Accrual | None, Decimal | None]:
    """Interest on the invoice through `through` under the policy's terms, and the rate in force that
    day (None, None: the policy charges no interest, or its reference is unknown then: logged once)."""
    terms = policy.interest
    if terms is None:
        return None, None
    rates = await rates_of(conn, invoice["tenant_id"], terms.reference)
    try:
        accrual = accrue(
            amount_due=invoice["amount_due"], currency=invoice["currency"], due_date=invoice["due_date"],
            through=through, terms=terms, ledger=await ledger_of(conn, invoice["invoice_id"], zone), rates=rates,
        )  # fmt: skip
        rate = annual_rate_on(terms, max(through, invoice["due_date"]), rates)
    except UnknownReference as exc:
        key = (invoice["tenant_id"], terms.reference or "")
        if key not in _UNKNOWN_LOGGED:
            _UNKNOWN_LOGGED.add(key)
            log.error("scheduler.charges.unknown_reference", tenant_id=key[0], reference=key[1], detail=str(exc))
        return None, None
    return accrual, rate


def _totals(history: Sequence[asyncpg.Record]) -> tuple[Decimal, Decimal]:
    if not history:
        return Decimal(0), Decimal(0)
    return history[-1]["total_late_fees"], history[-1]["total_interest"]


async def assess_fired(
    conn: asyncpg.Connection, rules: Any, rows: Sequence[asyncpg.Record], zone: ZoneInfo, now: datetime
) -> tuple[dict[str, dict[str, str]], list[LateChargesAssessed]]:
    """Assess the fired policy stages' charges: ({stage_id: StageEscalated.charges}, the events).
    `rules` gives the rows' policies (FiringRules._policy)."""
    quotes: dict[str, dict[str, str]] = {}
    events: list[LateChargesAssessed] = []
    groups: dict[tuple[str, str], list[asyncpg.Record]] = {}
    for row in rows:
        if row["kind"] == "policy":
            groups.setdefault((row["invoice_id"], row["stage"]), []).append(row)
    if not groups:
        return quotes, events
    waived = await charges_sql.waived(conn, sorted({k[0] for k in groups}))
    for (invoice_id, stage_name), group in groups.items():
        row = group[0]
        policy: Policy = await rules._policy(conn, row)
        stage = next((s for s in policy.stages if s.name == stage_name), None)
        if stage is None or invoice_id in waived:
            continue
        currency = row["currency"]
        wants_interest = stage.charge_interest and policy.interest is not None
        fees = stage.late_fee or {}
        if not wants_interest and currency not in fees:
            continue
        history = await charges_sql.charged(conn, invoice_id)
        done = next((h for h in history if h["stage"] == stage_name), None)
        previous_fees, previous_interest = _totals(history)
        accrual, rate = (None, None)
        if wants_interest:
            accrual, rate = await accrual_of(conn, policy, row, zone, now.astimezone(zone).date())
        if done is not None:  # assessed already (a redelivery cannot happen; a re-fire of a stage may)
            continue
        fee = late_fee(fees, currency, already_charged=False, waived=False)
        assessment = assess(
            currency=currency,
            fee=fee,
            accrual=accrual,
            previous_fees=previous_fees,
            previous_interest=previous_interest,
        )
        await charges_sql.add_charge(
            conn, invoice_id=invoice_id, stage=stage_name, stage_id=row["stage_id"], tenant_id=row["tenant_id"],
            currency=currency, late_fee=assessment.late_fee, interest=assessment.interest,
            interest_to=None if accrual is None else accrual.end, total_late_fees=assessment.total_late_fees,
            total_interest=assessment.total_interest, assessed_at=now,
        )  # fmt: skip
        events.append(LateChargesAssessed(
            invoice_id, row["tenant_id"], row["stage_id"], stage_name, currency, assessment.late_fee,
            assessment.interest, None if accrual is None else accrual.start, None if accrual is None else accrual.end,
            policy.interest.day_count if accrual is not None and policy.interest is not None else None,
            () if accrual is None else accrual.periods, assessment.total_late_fees, assessment.total_interest, now,
        ))  # fmt: skip
        quote = charges_field(assessment, currency, row["balance"], policy.interest if accrual else None, rate)
        for r in group:
            quotes[r["stage_id"]] = quote
    return quotes, events
