"""API models (responses; the policy document is `policy.PolicyDocument`, which validates and documents it)."""

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from dunning_scheduler.policy import PolicyDocument


class ReplanOut(BaseModel):
    """A policy version being applied to the tenant's open invoices, batch by batch."""

    replan_id: str
    status: Literal["running", "done", "superseded"] = Field(
        description="superseded: a later PUT with apply_to=open_invoices took over before it finished."
    )
    policy_version: int
    invoices_total: int = Field(description="Open, unsettled invoices of the tenant when the job was created.")
    invoices_done: int = Field(description="Invoices re-planned so far.")
    invoices_rescheduled: int = Field(description="Of those, invoices whose pending stages moved.")
    batches: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class PolicyOut(BaseModel):
    tenant_id: str
    policy_id: str
    version: int = Field(description="Version of the tenant's policy; the built-in default reports 1.")
    source: Literal["tenant", "default"]
    named: bool = Field(
        False, description="True: a named policy (/v1/policies/{policy_id}); false: the tenant's default (/v1/policy)."
    )
    created_at: datetime | None = Field(description="When this version was stored; null for the default.")
    changed_by: str | None = Field(
        None, description='Who stored this version (the `Dunning-Actor` header, else "api"); null for the default.'
    )
    created: bool | None = Field(None, description="PUT only: false when the document equals the active one.")
    policy: PolicyDocument = Field(description="The normalised document (defaults written out).")
    replan: ReplanOut | None = Field(
        None, description="PUT with apply_to=open_invoices only: the job re-planning the open invoices."
    )


class TimerOut(BaseModel):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    state: Literal["scheduled", "paused", "fired", "cancelled", "skipped"] = Field(
        description="paused: the invoice is on hold, disputed, promised or in a payment plan; it goes again "
        "(by the policy's pauses.resume) when the last pause ends."
    )
    fired_at: datetime | None
    cancelled_at: datetime | None
    reason: str | None
    policy_version: int
    kind: Literal["policy", "promise_broken", "instalment"] = Field(
        "policy", description="policy: a stage of the policy; promise_broken, instalment: added by a stop."
    )
    context: dict[str, str] | None = Field(
        None, description="What the reminder quotes besides the invoice (a broken promise, an instalment)."
    )


class InvoiceTimersOut(BaseModel):
    invoice_id: str
    planned: bool = Field(description="False while only a payment is known (InvoiceIssued not seen yet).")
    number: str | None
    currency: str | None
    amount_due: str | None
    balance: str | None
    due_date: date | None
    settled: bool
    settled_at: datetime | None
    policy_id: str | None
    policy_version: int | None
    segment: dict[str, str] | None = Field(
        None, description="The segment rule that chose the policy and why ({rule, reason}); null: no rules."
    )
    version: int = Field(description="The invoice's version the scheduler holds (1 at creation, +1 per change).")
    status: Literal["open", "void", "written_off"]
    timers: list[TimerOut]
