"""The money as it really arrives (issue 11), on the invoice view: a payment split across invoices, a
refund or lost chargeback that reopens a paid invoice, an allocation undone, customer credit
applied, a debit still processing, an invoice Stripe voided; each replayed changes nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest

from dunning.clock import utcnow
from dunning.events import new_event
from dunning.handler_table import Rejected
from dunning.ids import new_id

pytestmark = pytest.mark.integration

T0 = utcnow() + timedelta(hours=1)  # after the invoices the tests create (their history is by time)
RECONCILIATION = "/reconciliation"


def _event(name: str, invoice: dict, tenant_id: str, **data) -> dict:
    """A reconciliation event `name` about `invoice` (validated against its schema when applied)."""
    payload = {"invoice_id": invoice["id"], "tenant_id": tenant_id, **data}
    if name != "PaymentPendingEnded":
        payload["invoice_external_id"] = invoice["external_id"]
    return new_event(f"dunning.{name}.v1", payload, source=RECONCILIATION, subject=invoice["id"], tenant_id=tenant_id)


def republished(envelope: dict) -> dict:
    """The same event published again (a new event id: the inbox does not know it)."""
    return new_event(
        envelope["type"],
        envelope["data"],
        source=RECONCILIATION,
        subject=envelope["subject"],
        tenant_id=envelope["tenantid"],
    )


class Money:
    """Builders of reconciliation's money events for the tenant's invoices, times after T0."""

    def __init__(self, kit):
        self.t = kit.TENANT

    def allocation(self, invoice, payment_id, applied, after, *, version, amount=None, rule="reference", **kw):
        settled = Decimal(after) <= 0
        return _event(
            "PaymentReceived",
            invoice,
            self.t,
            payment_id=payment_id,
            source=kw.pop("source", "bank_statement"),
            source_reference=kw.pop("source_reference", "stmt-2026-11-20:7"),
            currency="EUR",
            amount=amount or applied,
            amount_applied=applied,
            balance_remaining=after,
            settled=settled,
            received_at=T0,
            acknowledged_at=T0 + timedelta(minutes=kw.pop("minute", version)),
            allocation_id=kw.pop("allocation_id", new_id("alc")),
            match_rule=rule,
            match_reason=kw.pop("reason", f"{invoice['number']} named in the remittance"),
            balance_version=version,
            **kw,
        )

    def reversal(self, invoice, payment_id, amount, after, *, version, kind="refund", reversal_id=None):
        return _event(
            "PaymentReversed",
            invoice,
            self.t,
            reversal_id=reversal_id or new_id("rev"),
            payment_id=payment_id,
            kind=kind,
            source="stripe",
            source_reference="re_3QxRefund0001",
            currency="EUR",
            amount=amount,
            balance_remaining=after,
            settled=Decimal(after) <= 0,
            reversed_at=T0 + timedelta(minutes=version),
            acknowledged_at=T0 + timedelta(minutes=version),
            balance_version=version,
        )

    def unallocation(self, invoice, payment_id, allocation_id, amount, after, *, version):
        return _event(
            "PaymentUnallocated",
            invoice,
            self.t,
            allocation_id=allocation_id,
            payment_id=payment_id,
            currency="EUR",
            amount=amount,
            balance_remaining=after,
            settled=Decimal(after) <= 0,
            reason="matched to the wrong invoice",
            unallocated_by="api",
            unallocated_at=T0 + timedelta(minutes=version),
            balance_version=version,
        )

    def credit(self, invoice, applied, after, *, version, credit_remaining="0.00"):
        return _event(
            "CustomerCreditApplied",
            invoice,
            self.t,
            application_id=new_id("cca"),
            credit_id=new_id("ccr"),
            customer_id=invoice["customer"]["id"],
            source_payment_id=new_id("pay"),
            currency="EUR",
            amount_applied=applied,
            credit_remaining=credit_remaining,
            balance_remaining=after,
            settled=Decimal(after) <= 0,
            applied_at=T0 + timedelta(minutes=version),
            acknowledged_at=T0 + timedelta(minutes=version),
            balance_version=version,
        )

    def pending(self, invoice, payment_id, amount, *, kind="processing", minute=1):
        return _event(
            "PaymentPending",
            invoice,
            self.t,
            payment_id=payment_id,
            kind=kind,
            source="stripe",
            source_reference="pi_3QxProcessing01",
            currency="EUR",
            amount=amount,
            since=T0 + timedelta(minutes=minute),
            acknowledged_at=T0 + timedelta(minutes=minute),
        )

    def pending_ended(self, invoice, payment_id, outcome, *, kind="processing", minute=2):
        return _event(
            "PaymentPendingEnded",
            invoice,
            self.t,
            payment_id=payment_id,
            kind=kind,
            outcome=outcome,
            source_reference="evt_3QxEnded00001",
            ended_at=T0 + timedelta(minutes=minute),
        )

    def closed(self, invoice, action, source_reference="evt_1QxVoided000001"):
        return _event(
            "InvoiceClosedByProcessor",
            invoice,
            self.t,
            action=action,
            source="stripe",
            source_reference=source_reference,
            reason=f"invoice.{'voided' if action == 'void' else 'marked_uncollectible'}",
            closed_at=T0,
        )


@pytest.fixture
def money(kit) -> Money:
    return Money(kit)


async def created(client, kit, number: str = "INV-1001", **fields) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(number=number, **fields))
    assert r.status_code == 201, r.text
    return r.json()


async def read(client, invoice: dict) -> dict:
    r = await client.get(f"/v1/invoices/{invoice['id']}")
    assert r.status_code == 200, r.text
    return r.json()


def kinds(body: dict) -> list[str]:
    return [e["kind"] for e in body["history"]]


def entry(body: dict, kind: str) -> dict:
    [found] = [e for e in body["history"] if e["kind"] == kind]
    return found


async def test_a_payment_split_across_two_invoices_pays_both(client, pool, kit, money):
    first = await created(client, kit, "INV-1001")
    second = await created(client, kit, "INV-1004", amount_due="300.00")
    pay = new_id("pay")
    reason = "INV-1001 and INV-1004 named in the remittance"
    a1 = money.allocation(first, pay, "1250.00", "0.00", version=1, amount="1550.00", reason=reason)
    a2 = money.allocation(second, pay, "300.00", "0.00", version=1, amount="1550.00", reason=reason)
    assert await kit.apply(pool, a1) and await kit.apply(pool, a2)

    for invoice, applied, allocation in ((first, "1250.00", a1), (second, "300.00", a2)):
        body = await read(client, invoice)
        assert (body["status"], body["balance"]) == ("paid", "0.00")
        [p] = body["payments"]
        assert (p["payment_id"], p["allocation_id"], p["amount"], p["amount_applied"]) == (
            pay,
            allocation["data"]["allocation_id"],
            "1550.00",
            applied,
        )
        [m] = body["money"]["entries"]
        assert (m["kind"], m["reference"], m["rule"], m["amount"], m["balance_change"], m["balance_after"]) == (
            "allocation",
            allocation["data"]["allocation_id"],
            "reference",
            applied,
            f"-{applied}",
            "0.00",
        )
        allocated = entry(body, "payment_allocated")
        assert allocated["reason"] == f"matched by reference: {reason}"
        assert allocated["reference"] == pay and allocated["data"]["balance_after"] == "0.00"


async def test_two_allocations_of_one_payment_to_one_invoice_both_count(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    await kit.apply(pool, money.allocation(invoice, pay, "1000.00", "250.00", version=1, rule="customer_amount"))
    await kit.apply(pool, money.allocation(invoice, pay, "250.00", "0.00", version=2, rule="manual", reason="by AP"))
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("paid", "0.00")
    assert [(m["rule"], m["balance_after"]) for m in body["money"]["entries"]] == [
        ("customer_amount", "250.00"),
        ("manual", "0.00"),
    ]


async def test_a_refund_reopens_a_paid_invoice_and_the_history_says_why(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    await kit.apply(pool, money.allocation(invoice, pay, "1250.00", "0.00", version=1, source="stripe"))
    assert (await read(client, invoice))["status"] == "paid"

    refund = money.reversal(invoice, pay, "250.00", "250.00", version=2)
    assert await kit.apply(pool, refund)
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("open", "250.00")
    assert kinds(body) == ["created", "payment_allocated", "payment_reversed", "reopened"]
    reopened = entry(body, "reopened")
    assert reopened["reason"] == f"refunded: 250.00 EUR (re_3QxRefund0001) of payment {pay}"
    assert (reopened["amount"], reopened["reference"]) == ("250.00", refund["data"]["reversal_id"])
    assert reopened["data"]["cause"] == "reversed" and reopened["data"]["reversal_kind"] == "refund"
    reversal = body["money"]["entries"][-1]
    assert (reversal["kind"], reversal["reversal_kind"], reversal["balance_change"], reversal["balance_after"]) == (
        "reversal",
        "refund",
        "250.00",
        "250.00",
    )
    assert reversal["source_reference"] == "re_3QxRefund0001" and reversal["balance_version"] == 2

    # redelivered (the inbox), then published again with a new event id: the reversal counts once
    assert not await kit.apply(pool, refund)
    assert await kit.apply(pool, republished(refund))
    assert await read(client, invoice) == body


async def test_a_lost_chargeback_of_part_of_a_payment_reopens_with_the_part(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    await kit.apply(pool, money.allocation(invoice, pay, "1250.00", "0.00", version=1, source="stripe"))
    await kit.apply(pool, money.pending(invoice, pay, "1250.00", kind="chargeback", minute=2))
    await kit.apply(pool, money.pending_ended(invoice, pay, "lost", kind="chargeback", minute=3))
    await kit.apply(pool, money.reversal(invoice, pay, "1250.00", "1250.00", version=3, kind="chargeback"))
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("open", "1250.00")
    assert entry(body, "reopened")["reason"].startswith("chargeback lost: 1250.00 EUR")
    [p] = body["money"]["pending"]
    assert (p["kind"], p["status"], p["amount"]) == ("chargeback", "lost", "1250.00")
    ended = entry(body, "payment_pending_ended")
    assert ended["reason"] == "the chargeback was lost: the money is taken back"


async def test_money_reversed_on_a_void_invoice_moves_the_balance_not_the_status(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    await kit.apply(pool, money.allocation(invoice, pay, "250.00", "1000.00", version=1))
    assert (await client.post(f"/v1/invoices/{invoice['id']}/void", json={"reason": "reissued"})).status_code == 200
    await kit.apply(pool, money.reversal(invoice, pay, "250.00", "1250.00", version=2))
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("void", "1250.00")
    assert "reopened" not in kinds(body)


async def test_an_allocation_undone_puts_the_money_back_on_the_balance(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    allocation = money.allocation(invoice, pay, "1250.00", "0.00", version=1, rule="manual", reason="by AP")
    await kit.apply(pool, allocation)
    alc = allocation["data"]["allocation_id"]
    undone = money.unallocation(invoice, pay, alc, "1250.00", "1250.00", version=2)
    assert await kit.apply(pool, undone)
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("open", "1250.00")
    assert kinds(body) == ["created", "payment_allocated", "payment_unallocated", "reopened"]
    un = entry(body, "payment_unallocated")
    assert (un["amount"], un["by"], un["reason"]) == ("1250.00", "api", "matched to the wrong invoice")
    assert entry(body, "reopened")["reason"] == (
        f"allocation {alc} of payment {pay} undone (1250.00 EUR): matched to the wrong invoice"
    )
    assert [(m["kind"], m["reference"], m["balance_after"]) for m in body["money"]["entries"]] == [
        ("allocation", alc, "0.00"),
        ("unallocation", alc, "1250.00"),
    ]
    # the same undo published again: counted once
    await kit.apply(pool, republished(undone))
    assert (await read(client, invoice))["balance"] == "1250.00"


async def test_customer_credit_applied_lowers_the_balance_and_can_settle(client, pool, kit, money):
    invoice = await created(client, kit, amount_due="300.00")
    credit = money.credit(invoice, "300.00", "0.00", version=1, credit_remaining="45.50")
    assert await kit.apply(pool, credit)
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("paid", "0.00")
    [m] = body["money"]["entries"]
    assert (m["kind"], m["amount"], m["credit_id"], m["credit_remaining"], m["payment_id"]) == (
        "credit_applied",
        "300.00",
        credit["data"]["credit_id"],
        "45.50",
        credit["data"]["source_payment_id"],
    )
    applied = entry(body, "customer_credit_applied")
    assert applied["amount"] == "300.00" and applied["data"]["credit_remaining"] == "45.50"
    await kit.apply(pool, republished(credit))
    assert (await read(client, invoice))["money"]["entries"] == body["money"]["entries"]


async def test_a_processing_payment_is_shown_pending_and_not_counted_as_paid(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    pending = money.pending(invoice, pay, "1250.00", minute=1)
    assert await kit.apply(pool, pending)
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("open", "1250.00")
    [p] = body["money"]["pending"]
    assert (p["payment_id"], p["kind"], p["status"], p["ended_at"]) == (pay, "processing", "open", None)
    assert entry(body, "payment_pending")["reason"] == "payment processing (not counted as paid until it succeeds)"
    await kit.apply(pool, republished(pending))  # again: once
    assert len((await read(client, invoice))["money"]["pending"]) == 1

    await kit.apply(pool, money.pending_ended(invoice, pay, "succeeded", minute=5))
    paid = money.allocation(invoice, pay, "1250.00", "0.00", version=1, minute=6, source="stripe", rule="metadata")
    await kit.apply(pool, paid)
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("paid", "0.00")
    assert body["money"]["pending"][0]["status"] == "succeeded"
    assert kinds(body) == ["created", "payment_pending", "payment_pending_ended", "payment_allocated"]


async def test_a_failed_debit_ends_the_pending_and_leaves_the_balance(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    await kit.apply(pool, money.pending(invoice, pay, "1250.00"))
    await kit.apply(pool, money.pending_ended(invoice, pay, "failed"))
    body = await read(client, invoice)
    assert (body["status"], body["balance"]) == ("open", "1250.00")
    assert body["money"]["pending"][0]["status"] == "failed"
    assert entry(body, "payment_pending_ended")["reason"] == "the processing payment failed"


@pytest.mark.parametrize(
    ("action", "status", "words"), [("void", "void", "voided"), ("write_off", "written_off", "written off")]
)
async def test_an_invoice_stripe_closed_is_closed_here_once(client, pool, kit, money, action, status, words):
    invoice = await created(client, kit)
    closed = money.closed(invoice, action)
    assert await kit.apply(pool, closed)
    body = await read(client, invoice)
    assert body["status"] == status and body["version"] == 2
    assert body["closed_reason"] == f"{words} in Stripe (evt_1QxVoided000001)"
    kind = "dunning.InvoiceVoided.v1" if action == "void" else "dunning.InvoiceWrittenOff.v1"
    [event] = await kit.outbox_events(pool, kind, invoice["id"])
    assert event["data"]["reason"] == body["closed_reason"] and event["data"]["version"] == 2
    if action == "write_off":
        assert body["written_off_amount"] == "1250.00" and event["data"]["amount_written_off"] == "1250.00"

    # Stripe's event again (a new id), or the other action: the closed invoice stays as it is
    await kit.apply(pool, money.closed(invoice, action, "evt_1QxVoidedAgain01"))
    await kit.apply(pool, money.closed(invoice, "write_off" if action == "void" else "void", "evt_1QxOther00001"))
    assert await read(client, invoice) == body
    assert len(await kit.outbox_events(pool, invoice_id=invoice["id"])) == 2  # InvoiceIssued + the close


async def test_a_paid_invoice_stripe_voids_stays_paid(client, pool, kit, money):
    invoice = await created(client, kit)
    await kit.apply(pool, money.allocation(invoice, new_id("pay"), "1250.00", "0.00", version=1))
    await kit.apply(pool, money.closed(invoice, "void"))
    assert (await read(client, invoice))["status"] == "paid"


async def test_money_in_another_currency_or_for_another_tenant_is_refused(client, pool, kit, money):
    invoice = await created(client, kit)
    pay = new_id("pay")
    usd = money.reversal(invoice, pay, "10.00", "10.00", version=1)
    usd["data"]["currency"] = "USD"
    with pytest.raises(Rejected, match="in USD for an invoice in EUR"):
        await kit.apply(pool, usd)
    other = money.credit(invoice, "10.00", "1240.00", version=1)
    data = {k: v for k, v in other["data"].items() if k not in ("invoice_id", "tenant_id", "invoice_external_id")}
    foreign = _event("CustomerCreditApplied", invoice, kit.OTHER_TENANT, **data)
    with pytest.raises(Rejected, match="unknown invoice"):
        await kit.apply(pool, foreign)
    body = await read(client, invoice)
    assert body["balance"] == "1250.00" and body["money"]["entries"] == []


async def test_the_scheduler_s_answers_to_money_read_in_words(client, pool, kit, money):
    """A pause for a processing debit, its end, and the resume of a reopened invoice (cause settled,
    reason reopened), as the scheduler reports them."""
    invoice = await created(client, kit)
    pay, rev = new_id("pay"), new_id("rev")
    stage = {"stage_id": new_id("stg"), "stage": "firm", "sequence": 1, "channel": "email"}
    paused = kit.event_like(
        "DunningPaused",
        "eur-customer-hold.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        cause="payment_processing",
        cause_id=pay,
        paused_at=T0,
        stages=[{**stage, "scheduled_at": T0 + timedelta(days=3)}],
    )
    again = T0 + timedelta(days=5)
    rescheduled = {
        **stage,
        "previous_scheduled_at": T0 + timedelta(days=3),
        "scheduled_at": again,
        "state": "scheduled",
    }
    resumed = kit.event_like(
        "DunningResumed",
        "eur-hold-released-spaced.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        cause="settled",
        cause_id=rev,
        reason="reopened",
        resumed_at=T0 + timedelta(days=1),
        stages=[rescheduled],
    )
    assert await kit.apply(pool, paused) and await kit.apply(pool, resumed)
    body = await read(client, invoice)
    assert entry(body, "paused")["reason"] == "payment_processing: a payment is processing"
    words = "reopened: the invoice reopened (money taken back): the stages not yet sent are planned again"
    assert (entry(body, "resumed")["reason"], entry(body, "resumed")["reference"]) == (words, rev)
    [timeline] = body["timeline"]
    assert timeline["history"][-1]["reason"] == f"resumed: {words} (spaced)"
