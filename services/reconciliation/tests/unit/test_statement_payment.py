"""A statement line's payment, built by the import's shortcut (`statements_import._payment`: the
dataclass's fields set as its __dict__, the statements bench showed the need), is the payment
`IncomingPayment(...)` builds from the same line: equal, hashing alike, every field the same."""

from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.statements import StatementLine
from dunning_reconciliation.statements_import import _midnight, _payment

ACKNOWLEDGED = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
texts = st.one_of(st.none(), st.text(min_size=1, max_size=12))
days = st.one_of(st.none(), st.dates(date(2026, 10, 1), date(2026, 12, 31)))


@st.composite
def lines(draw) -> StatementLine:
    return StatementLine(
        "credit",
        Decimal(draw(st.integers(1, 10**7))).scaleb(-2),
        draw(st.sampled_from(("EUR", "CHF", "JPY"))),
        booking_date=draw(days),
        value_date=draw(days),
        remittance=draw(texts),
        creditor_reference=draw(texts),
        payer_name=draw(texts),
        payer_account=draw(texts),
        key=draw(st.text(min_size=1, max_size=20)),
    )


def _constructed(line: StatementLine, acknowledged_at: datetime) -> IncomingPayment:
    """What the shortcut stands for: the constructor, with every field a bank line gives."""
    day = line.booking_date or line.value_date
    received_at = datetime.combine(day, datetime.min.time(), UTC) if day else acknowledged_at
    return IncomingPayment(
        payment_id="pay_1",
        tenant_id="ten_a",
        source="bank_statement",
        source_reference=line.key,
        currency=line.currency,
        amount=line.amount,
        received_at=min(received_at, acknowledged_at),
        keys=MatchKeys(),
        payer_name=line.payer_name,
        payer_account=line.payer_account,
        remittance=line.remittance,
        creditor_reference=line.creditor_reference,
        statement_id="stm_1",
        acknowledged_at=acknowledged_at,
    )


@settings(max_examples=200, deadline=None)
@given(line=lines(), ahead=st.integers(-3, 90))
def test_a_lines_payment_is_the_one_the_constructor_builds(line: StatementLine, ahead: int) -> None:
    acknowledged_at = ACKNOWLEDGED + timedelta(days=ahead)
    fast = _payment("ten_a", "stm_1", line, acknowledged_at, "pay_1")
    general = _constructed(line, acknowledged_at)
    assert type(fast) is IncomingPayment
    assert fast == general and hash(fast) == hash(general)
    assert asdict(fast) == asdict(general)
    assert set(vars(fast)) == {f.name for f in fields(IncomingPayment)}


def test_a_payment_received_before_its_acknowledgement_keeps_its_booking_day() -> None:
    line = StatementLine("credit", Decimal("12.50"), "EUR", booking_date=date(2026, 11, 2), key="DE1:R1")
    payment = _payment("ten_a", "stm_1", line, ACKNOWLEDGED, "pay_1")
    assert payment.received_at == _midnight(date(2026, 11, 2)) == datetime(2026, 11, 2, tzinfo=UTC)
    assert payment.customer_id is None and payment.stripe_object_id is None and payment.fingerprint is None
