"""Who a reminder goes to: the customer's contact data as it is when the reminder is sent.

CustomerUpdated (dunning.customers.v1) keeps one `contacts` row per customer, version-guarded
(handlers.py). Such a row exists only once the customer has been updated, so it is always newer than
the customer snapshot a StageEscalated carries. The dispatcher's claim reads it together with the
delivery, in the same statement (repository.claim_due: no query of its own), and `current` applies
it: the primary accounts-payable address goes in To, the CCs in Cc and on the SMTP envelope, and the
name, locale and time zone are what the reminder is rendered with. Without a row, the snapshot as
the consumer recorded it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

# The StageEscalated customer fields a contacts row replaces (the `contact_<field>` claim columns).
CUSTOMER_FIELDS = ("name", "email", "locale", "timezone")


def addresses(channel: str, email: str | None, cc: Sequence[str] = ()) -> tuple[str | None, tuple[str, ...]]:
    """(To, Cc) of a delivery on `channel`: e-mail goes to the primary address, copied to the CCs
    (the primary itself left out of them, and no CC twice); the other channels have no address in
    the customer's data (yet)."""
    if channel != "email":
        return None, ()
    seen = {(email or "").lower()}
    copies = []
    for address in cc:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            copies.append(address)
    return email or None, tuple(copies)


def current(row: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, tuple[str, ...]]:
    """(payload, To, Cc) of a claimed delivery row: its customer replaced by the contacts row the
    claim found (`contact_*` columns, null when there is none), else as recorded from the event."""
    payload = row["payload"]
    if row["contact_email"] is None:
        return payload, row["recipient"], ()
    customer = {**payload["customer"], **{f: row[f"contact_{f}"] for f in CUSTOMER_FIELDS}}
    to, cc = addresses(row["channel"], row["contact_email"], row["contact_cc"])
    return {**payload, "customer": customer}, to, cc
