"""HTTP routes: a tenant's deliveries, for support ("did the customer get the reminder?")."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Query

from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page, service_app
from dunning.metrics import instrument_app
from dunning.settings import CommonSettings
from dunning_notifier import brand_api, letters_api, metrics, optouts_api, templates_api
from dunning_notifier import notice_repository as notice_repo
from dunning_notifier import repository as repo
from dunning_notifier.agency_api import TAG as AGENCY_TAG
from dunning_notifier.agency_api import agency_router
from dunning_notifier.letters_api import TAG as LETTERS_TAG
from dunning_notifier.optouts_api import TAG as OPTOUTS_TAG
from dunning_notifier.schemas import (
    DELIVERY_ID,
    INVOICE_ID,
    NOTICE_ID,
    DeliveryOut,
    DeliveryState,
    NoticeItemOut,
    NoticeOut,
)
from dunning_notifier.sms_api import TAG as SMS_TAG
from dunning_notifier.sms_api import sms_router
from dunning_notifier.tasks_api import TAG as TASKS_TAG
from dunning_notifier.tasks_api import tasks_router
from dunning_notifier.webhooks_api import webhook_routes

TAGS = [
    {
        "name": "deliveries",
        "description": "Reminder deliveries: what was sent to whom, when, what failed, what a stop cancelled.",
    },
    {
        "name": "notices",
        "description": "Consolidated notices: one message per customer listing its overdue invoices.",
    },
    LETTERS_TAG,
    SMS_TAG,
    templates_api.TAG_DOC,
    brand_api.TAG_DOC,
    OPTOUTS_TAG,
    TASKS_TAG,
    AGENCY_TAG,
]
_DELIVERY_ID = re.compile(DELIVERY_ID)


@dataclass
class ApiDeps:
    pool: asyncpg.Pool
    settings: CommonSettings
    counters: Callable[[], dict[str, int]] | None = None  # the dispatcher's, when this process runs one


def _out(row: asyncpg.Record) -> DeliveryOut:
    data = dict(row)
    if data["state"] in ("sent", "failed", "cancelled"):
        data["next_attempt_at"] = None
    if data["state"] != "cancelled":  # a stop that found it mid-attempt marks it, but it was not cancelled
        data["cancel_reason"] = data["cancelled_at"] = None
    return DeliveryOut(**data)


def create_app(deps: ApiDeps) -> FastAPI:
    app = service_app(
        distribution="dunning-notifier",
        settings=deps.settings,
        pool=deps.pool,
        tags=TAGS,
        description=(
            "Reminder deliveries: what was sent to whom, when, what failed, and what a stop of the invoice"
            " (paid, credited, void, written off, or paused by a hold, dispute, promise or payment plan)"
            " cancelled before its next attempt."
        ),
    )
    # The /metrics every service has, with the notifier's delivery gauges and dispatcher counters.
    metrics.instrument(instrument_app(app, deps.settings.service_name), deps.pool, deps.counters)

    @app.get(
        "/v1/deliveries",
        response_model=Page[DeliveryOut],
        tags=["deliveries"],
        operation_id="listDeliveries",
        summary="List the tenant's deliveries, newest first",
    )
    async def list_deliveries(
        tenant_id: TenantId,
        invoice_id: Annotated[str | None, Query(pattern=INVOICE_ID, description="only this invoice's")] = None,
        state: Annotated[DeliveryState | None, Query(description="only deliveries in this state")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        before = decode_cursor(cursor, _DELIVERY_ID)
        rows = await repo.list_deliveries(
            deps.pool, tenant_id, invoice_id=invoice_id, state=state, before=before, limit=limit + 1
        )
        return page(rows, limit, key=lambda r: r["delivery_id"], view=_out)

    @app.get(
        "/v1/deliveries/{delivery_id}",
        response_model=DeliveryOut,
        tags=["deliveries"],
        operation_id="getDelivery",
        summary="One delivery",
        responses={404: {"description": "No such delivery for this tenant"}},
    )
    async def get_delivery(delivery_id: Annotated[str, Path(pattern=DELIVERY_ID)], tenant_id: TenantId) -> DeliveryOut:
        row = await repo.get_delivery(deps.pool, tenant_id, delivery_id)
        if row is None:
            raise Problem.not_found("delivery_id", f"No delivery {delivery_id!r} for this tenant.")
        return _out(row)

    @app.get(
        "/v1/notices/{notice_id}",
        response_model=NoticeOut,
        tags=["notices"],
        operation_id="getNotice",
        summary="One consolidated notice, with what became of each of its invoices",
        description=(
            "A notice the scheduler composed (NoticeComposed) for one customer and channel: whether it went,"
            " to whom, the invoices it listed and the ones left out because a stop of the invoice (paid,"
            " credited, void, written off, or paused) reached the notifier before it went; per stage item, the"
            " Reminder* event published (sent, failed, or cancelled). A notice whose every stage was stopped"
            " is `cancelled` and was never sent."
        ),
        responses={404: {"description": "No such notice for this tenant"}},
    )
    async def get_notice(notice_id: Annotated[str, Path(pattern=NOTICE_ID)], tenant_id: TenantId) -> NoticeOut:
        found = await notice_repo.get_notice(deps.pool, tenant_id, notice_id)
        if found is None:
            raise Problem.not_found("notice_id", f"No notice {notice_id!r} for this tenant.")
        row, items = found
        data = dict(row)
        if data["state"] in ("sent", "failed", "cancelled"):
            data["next_attempt_at"] = None
        data["items"] = [NoticeItemOut(**dict(i), left_out=i["stop_reason"] is not None) for i in items]
        return NoticeOut(**data)

    letters_api.add_routes(app, deps)  # letters_api.py: letter PDFs, tracking, the provider webhook
    app.include_router(sms_router(deps))  # sms_api.py: Twilio's signed status callbacks and inbound STOP
    webhook_routes(app, deps)  # webhooks_api.py: endpoints, messages, attempts
    optouts_api.add_routes(app, deps)  # optouts_api.py: unsubscribe, contact and channel preferences, replies
    app.include_router(tasks_router(deps))  # tasks_api.py: call tasks (assign, complete)
    app.include_router(agency_router(deps))  # agency_api.py: the agency, its cases, their acknowledgement
    templates_api.add_routes(app, deps.pool, deps.settings)  # templates_api.py: a tenant's own templates, preview
    brand_api.add_routes(app, deps.pool, deps.settings)  # brand_api.py: sender, logo, colours, bank details
    return app
