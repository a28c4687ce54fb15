"""Customer credit: the excess of a matched payment, held for its customer and applied to the
customer's open invoices in the same currency, oldest first (due date, then issue time), now or when
its next invoice arrives. Each application is a balance change: the invoice's row locked, its
balance_version bumped, one CustomerCreditApplied with that version (covered by the watermark, like a
payment: the transaction joins the acknowledgement fence)."""

from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_reconciliation import messages
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import invoice_status

log = get_logger(__name__)


def credit_lock_name(tenant_id: str, customer_id: str) -> str:
    return f"reconciliation-credit\x1f{tenant_id}\x1f{customer_id}"


async def hold_credit(conn: asyncpg.Connection, payment, *, customer_id: str, amount: Decimal) -> asyncpg.Record:
    """Keep `amount` of the payment (an IncomingPayment) as credit of `customer_id`."""
    credit = await repo.insert_credit(
        conn,
        credit_id=new_id("ccr"),
        tenant_id=payment.tenant_id,
        customer_id=customer_id,
        currency=payment.currency,
        amount=amount,
        source_payment_id=payment.payment_id,
        created_at=utcnow(),
    )
    log.info(
        "reconciliation.credit.held",
        credit_id=credit["credit_id"],
        customer_id=customer_id,
        payment_id=payment.payment_id,
        amount=format_amount(amount, payment.currency),
    )
    return credit


async def apply_customer_credit(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, *, invoice_id: str | None = None
) -> int:
    """Apply the customer's held credit to its open invoices (or to `invoice_id` only), oldest invoice
    and oldest credit first. Returns the number of applications (one event each)."""
    await repo.lock_names(conn, [credit_lock_name(tenant_id, customer_id)])
    credits = [dict(c) for c in await repo.lock_open_credits(conn, tenant_id, customer_id)]
    if not credits:
        return 0
    invoices = await repo.lock_open_invoices_of_customer(
        conn, tenant_id, customer_id, {c["currency"] for c in credits}, invoice_id
    )
    if not invoices:
        return 0
    acknowledged_at = await repo.acknowledge_time(conn)  # shared: joins the fence, never waits
    count = 0
    for invoice in invoices:
        currency = invoice["currency"]
        balance = quantize(invoice["balance"], currency)
        for credit in credits:
            if balance <= 0:
                break
            if credit["currency"] != currency or credit["remaining"] <= 0:
                continue
            amount = min(balance, credit["remaining"])
            balance -= amount
            credit["remaining"] -= amount
            application_id, now = new_id("cca"), utcnow()
            await repo.insert_application(
                conn,
                application_id=application_id,
                credit_id=credit["credit_id"],
                invoice_id=invoice["invoice_id"],
                amount=amount,
                at=now,
            )
            await repo.take_from_credit(conn, credit["credit_id"], amount=Decimal(0), remaining=amount)
            version = await repo.set_invoice_balance(conn, invoice["invoice_id"], balance, invoice_status(balance))
            await outbox.add(
                conn,
                messages.customer_credit_applied(
                    credit,
                    invoice,
                    application_id=application_id,
                    amount=amount,
                    credit_remaining=credit["remaining"],
                    balance=balance,
                    version=version,
                    applied_at=now,
                    acknowledged_at=acknowledged_at,
                ),
            )
            count += 1
            log.info(
                "reconciliation.credit.applied",
                credit_id=credit["credit_id"],
                application_id=application_id,
                invoice_id=invoice["invoice_id"],
                amount=format_amount(amount, currency),
                balance_remaining=format_amount(balance, currency),
                balance_version=version,
            )
    return count
