"""The event contracts as typed records: one immutable record per event type and version.

The JSON Schemas in `schemas/events/` are the contract; each record has the fields of its schema's
`data`, money as `Decimal`, instants as aware UTC `datetime`, calendar days as `date`; one module
per topic of the catalogue (`schemas/topics/*.yaml`; dunning.stages.v1's firing-rule events in
`stage_rules`). `from_data` reads the envelope's `data`
(already validated against the schema by `dunning.events.decode`) and `to_data` writes it back in
its JSON form, field by field (both written once per record type from its field types by the
`Record` base): the consumers decode thousands of events a second, so there is no per-event model
validation. A record is a `NamedTuple` (its fields, `_InvoiceIssued`) under the `Contract` base
(`InvoiceIssued`: `TYPE`, the `SOURCE` its schema fixes, `subject`, `tenant`, `topic()` from the
catalogue): immutable like a frozen dataclass and built several times faster
(a frozen dataclass's `__init__` sets each field through `object.__setattr__`: 1.4 us against
0.2 us for nine fields). `dunning.events.envelope(record)` wraps a record in its envelope.
"""

from dunning.contracts.base import Contract, Customer, instant_text, topic_of
from dunning.contracts.collections import CallTaskCompleted, InvoiceHandedToAgency, TaskCancelled, TaskCreated
from dunning.contracts.contacts import ContactOptedOut, CustomerReplied
from dunning.contracts.customers import (
    CustomerUpdated,
    HoldPlaced,
    HoldReleased,
    Instalment,
    PaymentPlanAgreed,
    PaymentPlanCancelled,
    PlanInvoice,
)
from dunning.contracts.deliveries import (
    NoticeSent,
    ReminderCancelled,
    ReminderDeliveryUpdated,
    ReminderFailed,
    ReminderSent,
)
from dunning.contracts.invoices import (
    DisputeOpened,
    DisputeResolved,
    InvoiceIssued,
    InvoiceUpdated,
    InvoiceVoided,
    InvoiceWrittenOff,
    PromiseMade,
)
from dunning.contracts.payments import (
    CreditNoteIssued,
    CustomerCreditApplied,
    InvoiceClosedByProcessor,
    PaymentPending,
    PaymentPendingEnded,
    PaymentReceived,
    PaymentReversed,
    PaymentUnallocated,
)
from dunning.contracts.stage_rules import (
    InterestPeriod,
    LateChargesAssessed,
    LateChargesWaived,
    NoticeComposed,
    NoticeItem,
    StageDeferred,
)
from dunning.contracts.stages import (
    DunningPaused,
    DunningPlanned,
    DunningResumed,
    InstalmentMissed,
    PaymentPlanBroken,
    PaymentPlanCompleted,
    PlannedStage,
    PromiseBroken,
    PromiseKept,
    RescheduledStage,
    StageEscalated,
    StageInvoice,
    StageRef,
    StagesCancelled,
    StagesRescheduled,
)
from dunning.contracts.watermarks import PaymentsWatermark, StopsWatermark, WatermarkWanted

__all__ = [
    "ContactOptedOut",
    "CustomerReplied",
    "CallTaskCompleted",
    "InvoiceHandedToAgency",
    "TaskCancelled",
    "TaskCreated",
    "InterestPeriod",
    "LateChargesAssessed",
    "LateChargesWaived",
    "NoticeComposed",
    "NoticeItem",
    "NoticeSent",
    "StageDeferred",
    "DisputeOpened",
    "DisputeResolved",
    "DunningPaused",
    "DunningResumed",
    "HoldPlaced",
    "HoldReleased",
    "Instalment",
    "InstalmentMissed",
    "PaymentPlanAgreed",
    "PaymentPlanBroken",
    "PaymentPlanCancelled",
    "PaymentPlanCompleted",
    "PlanInvoice",
    "PromiseBroken",
    "PromiseKept",
    "PromiseMade",
    "ReminderCancelled",
    "StopsWatermark",
    "WatermarkWanted",
    "Contract",
    "CreditNoteIssued",
    "Customer",
    "CustomerUpdated",
    "DunningPlanned",
    "InvoiceIssued",
    "InvoiceUpdated",
    "InvoiceVoided",
    "InvoiceWrittenOff",
    "PaymentReceived",
    "PaymentReversed",
    "PaymentUnallocated",
    "PaymentPending",
    "PaymentPendingEnded",
    "CustomerCreditApplied",
    "InvoiceClosedByProcessor",
    "PaymentsWatermark",
    "PlannedStage",
    "ReminderDeliveryUpdated",
    "ReminderFailed",
    "ReminderSent",
    "RescheduledStage",
    "StageEscalated",
    "StageInvoice",
    "StageRef",
    "StagesCancelled",
    "StagesRescheduled",
    "BY_TYPE",
    "instant_text",
    "topic",
    "topic_of",
]

BY_TYPE: dict[str, type[Contract]] = {
    cls.TYPE: cls
    for cls in (
        InvoiceIssued,
        InvoiceUpdated,
        InvoiceVoided,
        InvoiceWrittenOff,
        CustomerUpdated,
        HoldPlaced,
        HoldReleased,
        PaymentPlanAgreed,
        PaymentPlanCancelled,
        DisputeOpened,
        DisputeResolved,
        PromiseMade,
        DunningPlanned,
        DunningPaused,
        DunningResumed,
        PromiseKept,
        PromiseBroken,
        InstalmentMissed,
        PaymentPlanBroken,
        PaymentPlanCompleted,
        StageEscalated,
        StagesCancelled,
        StagesRescheduled,
        StageDeferred,
        NoticeComposed,
        LateChargesAssessed,
        LateChargesWaived,
        PaymentReceived,
        CreditNoteIssued,
        PaymentUnallocated,
        PaymentReversed,
        CustomerCreditApplied,
        PaymentPending,
        PaymentPendingEnded,
        InvoiceClosedByProcessor,
        PaymentsWatermark,
        StopsWatermark,
        WatermarkWanted,
        ReminderSent,
        ReminderCancelled,
        ReminderFailed,
        ReminderDeliveryUpdated,
        NoticeSent,
        CustomerReplied,
        ContactOptedOut,
        TaskCreated,
        TaskCancelled,
        CallTaskCompleted,
        InvoiceHandedToAgency,
    )
}


def topic(record_type: type[Contract]) -> str:
    """The topic a record type travels on: `topic(InvoiceIssued)` -> `dunning.invoices.v1`."""
    return record_type.topic()
