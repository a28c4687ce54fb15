"""Invoices as an accounting system posts them (POST /v1/invoices), for tests."""


def customer_in(**changes) -> dict:
    """An invoice's customer: Acme, in London, writing en-GB; with `changes` on top."""
    return {
        "external_id": "c1",
        "name": "Acme",
        "email": "ap@acme.de",
        "locale": "en-GB",
        "timezone": "Europe/London",
        **changes,
    }


def invoice_in(**changes) -> dict:
    """The smallest invoice the API accepts (the required fields only): EUR 1,250.00 issued on
    2 Nov 2026, due on 16 Nov, to customer_in(); with `changes` on top."""
    return {
        "external_id": "in_1",
        "number": "INV-1",
        "customer": customer_in(),
        "currency": "EUR",
        "amount_due": "1250.00",
        "issue_date": "2026-11-02",
        "due_date": "2026-11-16",
        **changes,
    }
