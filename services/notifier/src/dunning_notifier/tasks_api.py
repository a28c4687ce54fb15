"""HTTP routes of call tasks (tasks.py): a collector's work list, assigning and completing a call.

GET  /v1/tasks                      filter by state, assignee, customer_id, invoice_id; cursor paging
GET  /v1/tasks/{task_id}            one task
POST /v1/tasks/{task_id}/assign     {"assignee"} (Idempotency-Key honoured)
POST /v1/tasks/{task_id}/complete   the call's outcome (Idempotency-Key honoured); 409 once completed/cancelled
"""

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page
from dunning_notifier import tasks
from dunning_notifier import tasks_repository as repo

TAG = {"name": "tasks", "description": "Call tasks: a `call` stage asks a collector to phone the customer."}
TASK_ID = r"^tsk_[0-9A-Za-z]{10,40}$"
_TASK_ID = re.compile(TASK_ID)
TaskState = Literal["open", "assigned", "completed", "cancelled"]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeat the request with the same key: the first answer comes back, nothing is done twice.",
    ),
]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The task is completed or cancelled (`errors[0].code` task_completed/task_cancelled)"}
}


class TaskOut(BaseModel):
    task_id: str
    tenant_id: str
    invoice_id: str
    customer_id: str | None
    stage: str
    stage_id: str | None
    delivery_id: str | None = Field(description="The call stage's delivery (its provider_message_id is this task)")
    follow_up_of: str | None = Field(description="The task whose callback_requested outcome made this one")
    due_at: datetime
    state: TaskState
    assignee: str | None
    phone: str | None = Field(description="The customer's phone number, if the stage's payload had one")
    currency: str | None
    balance: Decimal | None = Field(description="The invoice's balance when the stage fired")
    outcome: str | None
    promised_amount: Decimal | None
    promised_date: date | None
    dispute_reason: str | None
    callback_at: datetime | None
    note: str | None
    completed_by: str | None
    completed_at: datetime | None
    cancel_reason: str | None = Field(description="The stop of the invoice that cancelled it")
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


def task_out(row: Any) -> dict[str, Any]:
    return TaskOut(**{k: row[k] for k in TaskOut.model_fields}).model_dump(mode="json")


def _task_id(task_id: str) -> str:
    if not _TASK_ID.fullmatch(task_id):
        raise Problem.not_found("task_id", f"No task {task_id!r}.")
    return task_id


TaskIdPath = Annotated[str, Path(max_length=64, description="The task's id (`tsk_...`)")]

_COMPLETE_EXAMPLES = {
    "promise": {
        "summary": "The customer promises half the balance by the 10th",
        "value": {"outcome": "promised_to_pay", "promised_amount": "625.00", "promised_date": "2026-12-10"},
    },
    "dispute": {"summary": "The customer disputes", "value": {"outcome": "disputed", "dispute_reason": "Damaged"}},
    "callback": {
        "summary": "Call back tomorrow at 14:00",
        "value": {"outcome": "callback_requested", "callback_at": "2026-12-03T14:00:00+01:00"},
    },
}


def tasks_router(deps: Any) -> APIRouter:
    """The routes above; `deps`: api.ApiDeps (pool, settings)."""
    router = APIRouter(tags=["tasks"])

    @router.get(
        "/v1/tasks",
        response_model=Page[TaskOut],
        operation_id="listTasks",
        summary="List the tenant's call tasks, newest first",
        description="Filters combine (AND). `next_cursor` pages on.",
    )
    async def list_tasks(
        tenant_id: TenantId,
        state: Annotated[TaskState | None, Query(description="only tasks in this state")] = None,
        assignee: Annotated[str | None, Query(max_length=200, description="only this collector's")] = None,
        customer_id: Annotated[str | None, Query(max_length=64, description="only this customer's")] = None,
        invoice_id: Annotated[str | None, Query(max_length=64, description="only this invoice's")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        before = decode_cursor(cursor, _TASK_ID)
        rows = await repo.list_tasks(
            deps.pool,
            tenant_id,
            state=state,
            assignee=assignee,
            customer_id=customer_id,
            invoice_id=invoice_id,
            before=before,
            limit=limit + 1,
        )
        return page(rows, limit, key=lambda r: r["task_id"], view=task_out)

    @router.get(
        "/v1/tasks/{task_id}",
        response_model=TaskOut,
        operation_id="getTask",
        summary="One call task",
        responses={404: {"description": "No such task for this tenant"}},
    )
    async def get_task(task_id: TaskIdPath, tenant_id: TenantId) -> dict[str, Any]:
        row = await repo.get_task(deps.pool, tenant_id, _task_id(task_id))
        if row is None:
            raise Problem.not_found("task_id", f"No task {task_id!r} for this tenant.")
        return task_out(row)

    async def _run(request: Request, tenant_id: str, key: str | None, body: BaseModel, work: Any) -> JSONResponse:
        async def run(conn: Any) -> tuple[int, Any]:
            return 200, task_out(await work(conn))

        status, answer = await tasks.once(
            deps.pool, tenant_id, key, tasks.fingerprint("POST", request.url.path, body), run
        )
        return JSONResponse(answer, status_code=status)

    @router.post(
        "/v1/tasks/{task_id}/assign",
        response_model=TaskOut,
        operation_id="assignTask",
        summary="Assign a call task to a collector",
        description="An open or assigned task gets `assignee` (state `assigned`; assigning again re-assigns).",
        responses={404: {"description": "No such task for this tenant"}, **_CONFLICT},
    )
    async def assign_task(
        task_id: TaskIdPath,
        request: Request,
        tenant_id: TenantId,
        body: tasks.AssignIn,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        task_id = _task_id(task_id)
        return await _run(
            request, tenant_id, idempotency_key, body, lambda c: tasks.assign_task(c, tenant_id, task_id, body)
        )

    @router.post(
        "/v1/tasks/{task_id}/complete",
        response_model=TaskOut,
        operation_id="completeTask",
        summary="Record what came of the call",
        description=(
            "`outcome` one of promised_to_pay, disputed, paid_already, no_answer, wrong_number, callback_requested,"
            " other. promised_to_pay needs `promised_amount` (a decimal string in the invoice's currency, > 0, at most"
            " the balance) and `promised_date` (today or later in the customer's time zone, within a year): invoice-"
            "ingest records the promise (PromiseMade) as POST /v1/invoices/{id}/promises does. disputed needs"
            " `dispute_reason`: invoice-ingest opens the dispute. callback_requested needs `callback_at` (future):"
            " a follow-up task is made, due then. A field of another outcome is refused (422 naming it). Publishes"
            " CallTaskCompleted. 409 for a completed or cancelled task."
        ),
        responses={404: {"description": "No such task for this tenant"}, **_CONFLICT},
    )
    async def complete_task(
        task_id: TaskIdPath,
        request: Request,
        tenant_id: TenantId,
        body: Annotated[tasks.CompleteIn, Body(openapi_examples=_COMPLETE_EXAMPLES)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        task_id = _task_id(task_id)
        return await _run(
            request, tenant_id, idempotency_key, body, lambda c: tasks.complete_task(c, tenant_id, task_id, body)
        )

    return router
