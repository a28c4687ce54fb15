"""The documented sample a tenant's template is checked and previewed against (docs/templates.md).

A template is validated by rendering it, in the renderer's sandbox with StrictUndefined, against two
contexts built by the renderer itself from a sample StageEscalated payload (so the variable set is
always the renderer's, whatever it adds): `rich`, where every optional value is present (promise,
instalment, agency, charges, deadline, payment link, a full brand: an unknown attribute of a known
object fails here, even inside `{% if %}`), and `sparse`, where only what the stage always carries
is (promise for promise_broken, instalment for instalment_*, agency for handed_over: an unguarded
`{{ charges.total_due }}` fails here, as it would for a real reminder without charges).
"""

import copy
from typing import Any

from dunning_notifier.brand import EXAMPLE_BRAND, BrandIn, brand_context
from dunning_notifier.rendering import Renderer, parse_locale

SAMPLE_PAYLOAD: dict[str, Any] = {
    "tenant_id": "ten_sample",
    "invoice_id": "inv_sample",
    "stage_id": "stg_sample",
    "stage": "firm",
    "template": "firm",
    "channel": "email",
    "sequence": 2,
    "scheduled_at": "2026-03-02T08:00:00Z",
    "fired_at": "2026-03-02T08:00:00.412Z",
    "invoice": {
        "external_id": "RE-2026-031",
        "number": "INV-2026-00031",
        "currency": "EUR",
        "amount_due": "1000.00",
        "balance": "600.00",
        "issue_date": "2026-01-01",
        "due_date": "2026-01-31",
        "payment_url": "https://pay.example.com/i/RE-2026-031",
    },
    "customer": {
        "customer_id": "cus_sample",
        "external_id": "C-1001",
        "name": "Brandt & Söhne GmbH",
        "email": "ap@brandt-soehne.example",
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "country": "DE",
    },
    "context": {"kind": "stage", "next_stage": "final", "next_stage_on": "2026-03-16"},
    "charges": {
        "currency": "EUR",
        "late_fee": "40.00",
        "interest": "6.56",
        "total_late_fees": "40.00",
        "total_interest": "6.56",
        "total_due": "646.56",
        "interest_to": "2026-03-02",
        "day_count": "ACT/365F",
        "annual_rate": "10.15",
    },
    "agency": {"name": "Inkasso Nord GmbH", "contact_email": "cases@inkasso-nord.example"},
}
_PROMISE = {"kind": "promise_broken", "promised_amount": "600.00", "promised_date": "2026-02-20", "currency": "EUR"}
_INSTALMENT = {"kind": "instalment", "number": 2, "instalments": 3, "amount": "200.00", "due_date": "2026-02-28"}
# What a stage always carries (the sparse sample keeps it): its quote's context kind, and the agency.
_STAGE_CONTEXT: dict[str, dict[str, Any]] = {
    "promise_broken": _PROMISE,
    "instalment_pre_due": _INSTALMENT,
    "instalment_overdue": _INSTALMENT,
}
_NEEDS_AGENCY = {"handed_over"}
SAMPLE_BRAND = brand_context(BrandIn.model_validate(EXAMPLE_BRAND).model_dump(), None, None)


def sample_payload(key: str, channel: str, locale: str, *, rich: bool = True) -> dict[str, Any]:
    """The sample StageEscalated data for a stage key, channel and locale."""
    data = copy.deepcopy(SAMPLE_PAYLOAD)
    data.update(stage=key, template=key, channel=channel)
    data["customer"]["locale"] = locale
    if key in _STAGE_CONTEXT:
        data["context"] = dict(_STAGE_CONTEXT[key])
    if not rich:
        data["charges"] = None
        data["invoice"]["payment_url"] = None
        if key not in _STAGE_CONTEXT:
            data["context"] = {"kind": "stage"}
        if key not in _NEEDS_AGENCY:
            data.pop("agency")
    return data


def sample_contexts(renderer: Renderer, key: str, channel: str, locale: str) -> list[dict[str, Any]]:
    """[rich, sparse]: the contexts a template of this stage key must render against."""
    loc, tag = parse_locale(locale)
    rich = renderer.context(sample_payload(key, channel, locale), loc)
    for context in (_PROMISE, _INSTALMENT, SAMPLE_PAYLOAD["context"]):  # one kind per payload; rich has all
        quoted = renderer.context({**sample_payload(key, channel, locale), "context": context}, loc)
        rich.update({k: v for k, v in quoted.items() if rich.get(k) is None and v is not None})
    rich.update(brand=SAMPLE_BRAND, sender_name=SAMPLE_BRAND["sender_name"])
    sparse = renderer.context(sample_payload(key, channel, locale, rich=False), loc)
    sparse["brand"] = brand_context(None, None, None)
    return [renderer.localized(rich, tag), renderer.localized(sparse, tag)]
