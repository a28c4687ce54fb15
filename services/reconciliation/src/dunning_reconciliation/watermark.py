"""The payments watermark: how far what reconciliation knows about payments has been published.

A few times a second one replica states "every payment acknowledged at or before W is on the payments
topic below these offsets, and every late match made while applying the invoices topic up to these
positions is published there" (`PaymentsWatermark` on `dunning.watermarks.v1`). The machinery (fence,
election, snapshot, publisher) is the library's `dunning.watermark`, shared with invoice-ingest's
stops watermark; this module only says what reconciliation's statement covers. A credit note is
acknowledged the same way and travels on the payments topic (CreditNoteIssued), so every statement
covers credit notes exactly as it covers payments. The steps and why each statement is true forever:
docs/cancel-guarantee.md#the-payments-watermark.
"""

import asyncpg
from aiokafka import AIOKafkaProducer

from dunning import watermark
from dunning.contracts import PaymentsWatermark
from dunning_reconciliation import messages
from dunning_reconciliation.repository.fence import KEYS


class WatermarkPublisher(watermark.WatermarkPublisher):
    """Reconciliation's publisher: covers the payments topic, certifies its invoices positions (the
    late matches), keyed `_payments`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        payments_topic: str,
        invoices_topic: str,
        watermarks_topic: str,
        interval_seconds: float = 0.25,
    ):
        def build(s: watermark.Statement) -> PaymentsWatermark:
            return messages.payments_watermark(
                watermark=s.watermark,
                payments_topic=payments_topic,
                payments_offsets=s.offsets[payments_topic],
                invoices_topic=invoices_topic,
                invoice_positions=s.positions,
                computed_at=s.computed_at,
            )

        super().__init__(
            pool,
            producer,
            log_prefix="reconciliation",
            keys=KEYS,
            topics=[payments_topic],
            positions_topic=invoices_topic,
            watermarks_topic=watermarks_topic,
            build=build,
            interval_seconds=interval_seconds,
        )
