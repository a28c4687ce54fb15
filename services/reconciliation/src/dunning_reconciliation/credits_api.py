"""`GET /v1/customers/{customer_id}/credit`: a customer's credit (over-payments' excess), what is
left of it per currency, and where each credit was applied."""

from typing import Annotated, Any

from fastapi import FastAPI, Path

from dunning.http import TenantId
from dunning_reconciliation import repository as repo
from dunning_reconciliation.schemas import CustomerCreditOut, customer_credit_view


def register(app: FastAPI, deps) -> None:
    @app.get(
        "/v1/customers/{customer_id}/credit",
        response_model=CustomerCreditOut,
        tags=["payments"],
        operation_id="getCustomerCredit",
        summary="A customer's credit from over-payments: left per currency, and each credit's applications",
    )
    async def get_customer_credit(
        customer_id: Annotated[str, Path(min_length=1, max_length=100)], tenant_id: TenantId
    ) -> dict[str, Any]:
        credits = await repo.credits_of_customer(deps.pool, tenant_id, customer_id)
        return customer_credit_view(customer_id, credits)
