"""Who a reminder goes to: the customer's contact data as it is when the reminder is sent.

CustomerUpdated (dunning.customers.v1) keeps one `contacts` row per customer, version-guarded
(handlers.py). Such a row exists only once the customer has been updated, so it is always newer than
the customer snapshot a StageEscalated carries. The dispatcher's claim reads it together with the
delivery, in the same statement (repository.claim_due: no query of its own), and `current` applies
it: the primary accounts-payable address goes in To, the CCs in Cc and on the SMTP envelope, and the
name, locale and time zone are what the reminder is rendered with; the phone is where an SMS (or a
call) goes, the postal address where a letter goes (the letter reads the structured address from
payload["customer"]["postal_address"]; the delivery's recipient is its one-line form). Without a
row, the snapshot as the consumer recorded it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

# The StageEscalated customer fields a contacts row replaces (the `contact_<field>` claim columns).
CUSTOMER_FIELDS = ("name", "email", "locale", "timezone")
# ... and the optional ones it replaces too (null there: the customer has none any more, left out).
OPTIONAL_FIELDS = ("phone", "postal_address")
PHONE_CHANNELS = frozenset({"sms", "call"})


def one_line(address: Mapping[str, Any] | None) -> str | None:
    """A postal address on one line: "Friedrichstraße 123, 10117 Berlin, DE" (None: no address)."""
    if not address:
        return None
    place = " ".join(str(p) for p in (address.get("postal_code"), address.get("city")) if p)
    parts = [*(address.get("lines") or ()), place, address.get("region"), address.get("country")]
    return ", ".join(str(p) for p in parts if p) or None


def addresses(
    channel: str,
    email: str | None,
    cc: Sequence[str] = (),
    phone: str | None = None,
    postal_address: Mapping[str, Any] | None = None,
) -> tuple[str | None, tuple[str, ...]]:
    """(To, Cc) of a delivery on `channel`: e-mail goes to the primary address, copied to the CCs
    (the primary itself left out of them, and no CC twice); SMS and calls to the phone (E.164); a
    letter to the postal address (its one-line form); the other channels have no address in the
    customer's data."""
    if channel in PHONE_CHANNELS:
        return phone or None, ()
    if channel == "letter":
        return one_line(postal_address), ()
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
    for f in OPTIONAL_FIELDS:
        value = row.get(f"contact_{f}")
        if value is None:
            customer.pop(f, None)
        else:
            customer[f] = value
    to, cc = addresses(
        row["channel"], row["contact_email"], row["contact_cc"], customer.get("phone"), customer.get("postal_address")
    )
    return {**payload, "customer": customer}, to, cc
