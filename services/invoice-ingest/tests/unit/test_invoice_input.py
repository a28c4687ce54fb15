"""Twins: `fast_validate_invoice_in` (the hand-tuned mirror) and `InvoiceIn` (the model) give the same
answers for any invoice, property-based. The mirror may refuse what the model accepts (the model
then decides), never the other way round; what it accepts it reads exactly as the model does; the
common shapes always take it; and every refusal names the fields the model names."""

import json

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dunning_ingest.invoice_input import amount_text, fast_validate_invoice_in, invoice_adapter
from dunning_ingest.validation import decode_invoice
from dunning_tools.testing.invoices import customer_in, invoice_in

pytestmark = pytest.mark.unit
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values a field may take: plausible ones and the hostile or near-miss ones the checks exist for.
hostile_text = st.sampled_from(["", " ", "\t", "a\x00b", "\ud800", "x" * 201, "x" * 301, 7, None, ["x"], {"x": 1}])
plain_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=60).filter(
    lambda s: not s.isspace()
)
text = st.one_of(plain_text, hostile_text)
CURRENCIES = ["EUR", "JPY", "KWD", "USD", "CLF", "GBP"]
currency = st.one_of(st.sampled_from(CURRENCIES), st.sampled_from(["eur", "XXX", "EU", "", 978, None, "E\x00R"]))
plain_amount = st.builds(
    lambda whole, frac: f"{whole}.{frac}" if frac else str(whole),
    st.integers(0, 10**15),
    st.sampled_from(["", "0", "5", "50", "00", "125", "1234"]),
)
amount = st.one_of(
    plain_amount,
    st.sampled_from(
        [
            "0",
            "0.00",
            "-5",
            "1e3",
            " 12.00",
            "12.",
            ".5",
            "１２",
            "NaN",
            "1000000000000000",
            "0100.00",
            12.5,
            10,
            None,
            "",
        ]
    ),
)
date_text = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        ["2026-02-30", "0000-01-01", "2026-11-02T00:00:00Z", "2026-1-2", 20261102, None, "", "2026-11-02\x00"]
    ),
)
email = st.one_of(
    st.emails().filter(lambda e: len(e) <= 254),
    st.sampled_from(["nope", "a@b.c.", "a b@c.de", "ap@acme.de\x00", "x" * 250 + "@a.de", 1]),
)
locale = st.sampled_from(["en-GB", "de-DE", "fr", "pt-BR", "zh-Hant-TW", "en_GB", "", "xx-XX", "EN-gb", 5, "en\x00"])
timezone = st.sampled_from(
    [
        "Europe/London",
        "America/Argentina/Buenos_Aires",
        "UTC",
        "Etc/GMT+5",
        "Mars/Olympus",
        "",
        "../etc/passwd",
        "Europe/Berlin\x00",
        0,
    ]
)
url = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "https://pay.example.com/i/1?x=1",
            "http://[::1]:8080/p",
            "ftp://x.example",
            "https://" + "a" * 2050,
            "https://ex ample.com",
            "javascript:alert(1)",
            "https://pay.example.com/\x00",
            42,
        ]
    ),
)
metadata = st.one_of(
    st.dictionaries(st.text(max_size=45), st.text(max_size=510), max_size=5),
    st.sampled_from([{}, {"k": 1}, {"": "v"}, {"k": "a\x00b"}, ["x"], None, "x", {f"k{i}": "v" for i in range(51)}]),
)
MISSING = object()
FIELDS = {  # where a mutation may land, and what it may put there (MISSING: the key goes)
    "external_id": text,
    "number": text,
    "currency": currency,
    "amount_due": amount,
    "issue_date": date_text,
    "due_date": date_text,
    "payment_url": url,
    "metadata": metadata,
    "colour": st.just("blue"),
    "customer": st.sampled_from(
        [
            "c1",
            None,
            [],
            {"external_id": "c", "name": "n", "email": "a@b.de", "locale": "en-GB", "timezone": "UTC", "extra": 1},
        ]
    ),
    "customer.external_id": text,
    "customer.name": text,
    "customer.email": email,
    "customer.locale": locale,
    "customer.timezone": timezone,
}


@st.composite
def common_invoices(draw) -> dict:
    """The shapes accounting systems send: valid and plain."""
    body = {
        "external_id": draw(plain_text.filter(lambda s: len(s) <= 200)),
        "number": draw(plain_text),
        "currency": draw(st.sampled_from(["EUR", "USD", "GBP", "JPY", "KWD"])),
        "amount_due": draw(st.integers(1, 10**12).map(lambda c: f"{c // 100}.{c % 100:02d}")),
        "issue_date": "2026-11-02",
        "due_date": draw(st.sampled_from(["2026-11-02", "2026-12-02"])),
        "customer": {
            "external_id": draw(plain_text),
            "name": draw(plain_text),
            "email": draw(st.sampled_from(["ap@acme.de", "billing@example.co.uk"])),
            "locale": draw(st.sampled_from(["en-GB", "de-DE", "fr-FR"])),
            "timezone": draw(st.sampled_from(["Europe/London", "Europe/Berlin", "America/New_York"])),
        },
    }
    if body["currency"] in ("JPY", "KWD"):  # other exponents: a whole amount is valid for all
        body["amount_due"] = body["amount_due"].split(".")[0] or "1"
        if body["amount_due"] == "0":
            body["amount_due"] = "1"
    if draw(st.booleans()):
        body["metadata"] = draw(
            st.dictionaries(
                st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
                st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=100),
                max_size=5,
            )
        )
    if draw(st.booleans()):
        body["payment_url"] = "https://pay.example.com/i/1"
    return body


@st.composite
def invoices(draw) -> dict:
    """A common invoice with up to three fields changed (to plausible or hostile values) or removed."""
    body = draw(common_invoices())
    for path in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        value = draw(st.one_of(FIELDS[path], st.just(MISSING)))
        *parents, key = path.split(".")
        target = body
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
    if draw(st.integers(0, 9)) == 0:  # a NUL in one string: PostgreSQL text cannot hold it
        strings = [
            (t, k)
            for t in (body, body.get("customer"))
            if isinstance(t, dict)
            for k, v in t.items()
            if isinstance(v, str)
        ]
        if strings:
            t, k = draw(st.sampled_from(strings))
            t[k] = t[k] + "\x00"
    return body


def read(inv) -> dict:
    c = inv.customer
    return {
        "external_id": inv.external_id,
        "number": inv.number,
        "currency": inv.currency,
        "amount_due": (inv.amount_due, str(inv.amount_due)),
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "payment_url": inv.payment_url,
        "metadata": inv.metadata,
        "customer": (c.external_id, c.name, c.email, c.locale, c.timezone),
        "amount_text": amount_text(inv),
        "content_hash": inv.content_hash(),
    }


# Known near misses, each applied to one invoice (a customer name outside ASCII), with and without
# the customer cache.
NEAR_MISS_BASE = invoice_in(customer=customer_in(name="Brandt & Söhne"))
C = NEAR_MISS_BASE["customer"]
NEAR_MISSES = [
    {},
    {"currency": "JPY", "amount_due": "158000"},
    {"currency": "KWD", "amount_due": "10.125"},
    {"amount_due": "1250"},
    {"amount_due": "1250.5"},
    {"amount_due": "0.5"},
    {"amount_due": "0100.00"},
    {"amount_due": "999999999999999.99"},
    {"amount_due": "1000000000000000"},
    {"amount_due": " 12.00"},
    {"amount_due": "12."},
    {"amount_due": ".5"},
    {"amount_due": "0"},
    {"amount_due": "0.00"},
    {"amount_due": "1e3"},
    {"amount_due": "-5"},
    {"amount_due": "１２"},
    {"amount_due": 12.5},
    {"amount_due": None},
    {"currency": "JPY", "amount_due": "1000.5"},
    {"currency": "eur"},
    {"currency": "XXX"},
    {"currency": 978},
    {"payment_url": None},
    {"payment_url": "https://pay.example.com/i/1?x=1"},
    {"payment_url": "ftp://x.example"},
    {"payment_url": "https://" + "a" * 2050},
    {"metadata": {}},
    {"metadata": {"po": "1", "é": "ü"}},
    {"metadata": {"k": 1}},
    {"metadata": {"": "v"}},
    {"metadata": {"x" * 41: "v"}},
    {"metadata": {"k": "v" * 501}},
    {"metadata": {f"k{i}": "v" for i in range(51)}},
    {"metadata": ["x"]},
    {"metadata": None},
    {"metadata": {"k": "a\u0000b"}},
    {"number": ""},
    {"number": "   "},
    {"number": "x" * 101},
    {"number": 7},
    {"number": "INV\u00001"},
    {"external_id": "x" * 200},
    {"external_id": "x" * 201},
    {"external_id": "\ud800"},
    {"issue_date": "2026-02-30"},
    {"issue_date": "0000-01-01"},
    {"issue_date": "2026-11-02T00:00:00Z"},
    {"issue_date": 20261102},
    {"due_date": "2026-11-01"},
    {"due_date": "2026-11-02"},
    {"colour": "blue"},
    {"customer": {**C, "locale": "de-DE"}},
    {"customer": {**C, "locale": "en_GB"}},
    {"customer": {**C, "locale": ""}},
    {"customer": {**C, "timezone": "Mars/Olympus"}},
    {"customer": {**C, "timezone": "America/Argentina/Buenos_Aires"}},
    {"customer": {**C, "email": "nope"}},
    {"customer": {**C, "email": "a@b.c."}},
    {"customer": {**C, "name": ""}},
    {"customer": {**C, "extra": 1}},
    {"customer": {k: v for k, v in C.items() if k != "name"}},
    {"customer": {**C, "name": ["x"]}},
    {"customer": "c1"},
    {"customer": None},
]


def assert_the_mirror_agrees(body, customers: dict | None) -> None:
    """The mirror accepts only what the model accepts and reads it as the model does; with a customer
    cache, asked again, it gives the same answer."""
    fast = fast_validate_invoice_in(body, customers)
    again = fast_validate_invoice_in(body, customers) if customers is not None else fast
    assert (again is None) == (fast is None)
    try:
        model = invoice_adapter.validate_python(body)
    except ValidationError:
        assert fast is None
        return
    if fast is not None and again is not None:
        assert read(fast) == read(model) == read(again)


@pytest.mark.parametrize("changes", NEAR_MISSES, ids=[str(i) for i in range(len(NEAR_MISSES))])
@pytest.mark.parametrize("cached", [False, True])
def test_known_near_misses_are_refused_or_read_as_the_model_reads_them(changes, cached):
    assert_the_mirror_agrees({**NEAR_MISS_BASE, **changes}, {} if cached else None)


@SETTINGS
@given(invoices(), st.booleans())
def test_the_mirror_accepts_only_what_the_model_accepts_and_reads_it_the_same(body, with_customer_cache):
    assert_the_mirror_agrees(body, {} if with_customer_cache else None)


@SETTINGS
@given(common_invoices())
def test_the_common_shapes_take_the_mirror(body):
    fast = fast_validate_invoice_in(body, {})
    assert fast is not None, body
    assert read(fast) == read(invoice_adapter.validate_python(body))


@SETTINGS
@given(invoices())
def test_a_refused_invoice_names_the_fields_the_model_names(body):
    """POST /v1/invoices (fast path first) refuses exactly as FastAPI would with the model alone."""
    try:
        raw = json.dumps(body).encode()
    except UnicodeEncodeError:
        return
    expected: list = []
    try:  # what FastAPI does for a body parameter of type InvoiceIn
        invoice_adapter.validate_python(json.loads(raw), from_attributes=True)
    except ValidationError as exc:
        expected = [(("body", *e["loc"]), e["type"], e["msg"]) for e in exc.errors()]
    try:
        decode_invoice(raw, "application/json")
    except RequestValidationError as exc:
        assert [(tuple(e["loc"]), e["type"], e["msg"]) for e in exc.errors()] == expected
    else:
        assert expected == []
