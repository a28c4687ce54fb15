"""The preview's charges: a policy's fees and interest projected stage by stage with the functions
firing assesses them with (`charges.late_fee`, `accrue`, `assess`, `charges_field`)."""

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from dunning_scheduler import charges
from dunning_scheduler.policy import Policy, Stage
from dunning_scheduler.repository import charges as charges_sql

if TYPE_CHECKING:
    from dunning_scheduler.preview import Sample


class ProjectedCharges:
    """Projects a policy's fees and interest stage by stage, in plan order (each stage's fee once)."""

    def __init__(self, policy: Policy, sample: "Sample", rates: list[tuple[date, Decimal]]):
        self.policy, self.sample, self.rates = policy, sample, rates
        self.fees = Decimal(0)
        self.interest = Decimal(0)
        self.charged: set[str] = set()
        self.any = policy.interest is not None or any(s.late_fee for s in policy.stages)

    @classmethod
    async def for_policy(
        cls, conn: asyncpg.Connection, tenant_id: str, policy: Policy, sample: "Sample"
    ) -> "ProjectedCharges":
        terms = policy.interest
        rates: list[tuple[date, Decimal]] = []
        if terms is not None and terms.reference is not None:
            rates = [(r["valid_from"], r["rate"]) for r in await charges_sql.rates(conn, tenant_id, terms.reference)]
        return cls(policy, sample, rates)

    def at(self, stage: Stage, day: date) -> dict[str, str]:
        """The stage's charges if it fires on local `day` (nothing when the policy charges nothing)."""
        if not self.any:
            return {}
        currency = self.sample.currency
        fee = charges.late_fee(stage.late_fee, currency, already_charged=stage.name in self.charged, waived=False)
        self.charged.add(stage.name)
        accrual = None
        terms = self.policy.interest
        if terms is not None and stage.charge_interest:
            try:
                accrual = charges.accrue(
                    amount_due=self.sample.amount_due,
                    currency=currency,
                    due_date=self.sample.due_date,
                    through=day,
                    terms=terms,
                    ledger=self.sample.invoice_ledger,
                    rates=self.rates,
                )
            except charges.UnknownReference:
                accrual = None
        assessed = charges.assess(
            currency=currency, fee=fee, accrual=accrual, previous_fees=self.fees, previous_interest=self.interest
        )
        self.fees, self.interest = assessed.total_late_fees, assessed.total_interest
        return charges.charges_field(assessed, currency, self.sample.balance, terms, None)
