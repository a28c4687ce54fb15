"""InvoiceIssued is built in one place (messages.invoice_issued); the bulk import's writer
(messages.issued_rows) is its declared twin. For any accepted invoice, the bulk path's outbox row
must be the envelope of the builder's record, byte for byte once parsed (id aside), with the same
lane, key and headers as dunning.outbox writes them."""

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dunning.contracts import instant_text
from dunning.events import envelope, validate
from dunning.outbox import headers_of, lane_of
from dunning_ingest.invoice_input import fast_validate_invoice_in
from dunning_ingest.messages import OutboxRow, invoice_issued, issued_rows

pytestmark = pytest.mark.unit

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda s: not s.isspace()
)
ids = st.from_regex(r"[0-9A-Za-z]{10,26}", fullmatch=True)
invoices = st.fixed_dictionaries(
    {
        "external_id": text,
        "number": text,
        "customer": st.fixed_dictionaries(
            {
                "external_id": text,
                "name": text,
                "email": st.just("ap@example.com") | st.just("x.y@acme.de"),
                "locale": st.sampled_from(["en-GB", "de-DE", "ja-JP", "fr"]),
                "timezone": st.sampled_from(["Europe/Berlin", "Asia/Tokyo", "UTC", "America/New_York"]),
            }
        ),
        "currency": st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
        "amount_due": st.from_regex(r"[1-9][0-9]{0,8}(\.[0-9]{1,2})?", fullmatch=True),
        "issue_date": st.dates(min_value=datetime(2020, 1, 1).date(), max_value=datetime(2030, 1, 1).date()).map(str),
        "due_date": st.just("2030-06-01"),
        "payment_url": st.none() | st.just("https://pay.example.com/i/1?x=1"),
        "metadata": st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(invoices, ids, ids), min_size=1, max_size=5),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)).map(lambda d: d.replace(tzinfo=UTC)),
    st.none() | st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
)
def test_the_bulk_rows_are_the_envelopes_of_the_one_builder(items, issued_at, traceparent):
    accepted = [(f"inv_{i}", f"cus_{c}", fast_validate_invoice_in(obj)) for obj, i, c in items]
    accepted = [(i, c, inv) for i, c, inv in accepted if inv is not None]
    assume(accepted)
    issued_text = instant_text(issued_at)
    lanes, keys, ids_, headers, payloads = issued_rows("ten_1", accepted, issued_text, traceparent)
    for (invoice_id, customer_id, inv), lane, key, event_id, hdrs, payload in zip(
        accepted, lanes, keys, ids_, headers, payloads, strict=True
    ):
        bulk = orjson.loads(payload)
        built = envelope(
            invoice_issued("ten_1", invoice_id, customer_id, inv, issued_at),
            time=issued_text,
            event_id=event_id,
            traceparent=traceparent,
        )
        validate(bulk)
        assert bulk == built
        assert (lane, key, orjson.loads(hdrs)) == (lane_of(invoice_id), invoice_id, headers_of(built))
        single = OutboxRow("ten_1", invoice_id, inv, issued_text, traceparent)
        assert orjson.loads(single.payload(customer_id)) == {**built, "id": single.event_id}
        assert single.headers == {**headers_of(built), "ce_id": single.event_id}
