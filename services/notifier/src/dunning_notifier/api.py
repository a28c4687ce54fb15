"""HTTP routes: a tenant's deliveries, for support ("did the customer get the reminder?")."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Header, Path, Query
from fastapi.responses import PlainTextResponse

from dunning.http import (NO_FASTAPI_TELEMETRY, Problem, install_health, install_problem_handlers, install_tracing,
                          tenant_for_key)
from dunning_notifier import metrics
from dunning_notifier import repository as repo
from dunning_notifier.schemas import DELIVERY_ID, INVOICE_ID, DeliveryList, DeliveryOut, DeliveryState

Authorization = Annotated[str | None, Header(description="Bearer <api key>")]


@dataclass
class ApiDeps:
    pool: asyncpg.Pool
    service_name: str = "notifier"
    counters: Callable[[], dict[str, int]] | None = None  # the dispatcher's, when this process runs one


def _out(row: asyncpg.Record) -> DeliveryOut:
    data = dict(row)
    if data["state"] in ("sent", "failed"):
        data["next_attempt_at"] = None
    return DeliveryOut(**data)


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(title="Dunning notifier", version="1", docs_url="/docs", telemetry=NO_FASTAPI_TELEMETRY,
                  description="Reminder deliveries: what was sent to whom, when, and what failed.")
    install_problem_handlers(app)
    install_tracing(app, deps.service_name)
    install_health(app, lambda: deps.pool)

    @app.get("/v1/deliveries", response_model=DeliveryList, summary="List the tenant's deliveries, newest first")
    async def list_deliveries(
        authorization: Authorization = None,
        invoice_id: Annotated[str | None, Query(pattern=INVOICE_ID, description="only this invoice's")] = None,
        state: Annotated[DeliveryState | None, Query(description="only deliveries in this state")] = None,
        before: Annotated[str | None, Query(pattern=DELIVERY_ID,
                                            description="cursor: next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> DeliveryList:
        tenant_id = await tenant_for_key(deps.pool, authorization)
        rows = await repo.list_deliveries(deps.pool, tenant_id, invoice_id=invoice_id, state=state,
                                          before=before, limit=limit + 1)
        page = [_out(r) for r in rows[:limit]]
        return DeliveryList(deliveries=page, next_cursor=page[-1].delivery_id if len(rows) > limit else None)

    @app.get("/v1/deliveries/{delivery_id}", response_model=DeliveryOut, summary="One delivery")
    async def get_delivery(delivery_id: Annotated[str, Path(pattern=DELIVERY_ID)],
                           authorization: Authorization = None) -> DeliveryOut:
        tenant_id = await tenant_for_key(deps.pool, authorization)
        row = await repo.get_delivery(deps.pool, tenant_id, delivery_id)
        if row is None:
            raise Problem(404, f"No delivery {delivery_id!r} for this tenant.",
                          errors=[{"field": "delivery_id", "message": "not found", "code": "not_found"}])
        return _out(row)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def prometheus_metrics() -> PlainTextResponse:
        families = await metrics.collect(deps.pool, deps.counters() if deps.counters else {})
        return PlainTextResponse(metrics.render(families), media_type=metrics.CONTENT_TYPE)

    return app
