"""Processors' events as they send them, signed as they sign them, for the end-to-end tests, chaos
and the demo (issue 11): Stripe (an invoice paid by a charge, the charge refunded, a dispute opened
and closed, a debit processing then failing), GoCardless (`Webhook-Signature`: hex HMAC-SHA256 of the
body) and Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`).

The Stripe objects follow the published API (version 2024-06-20): an Invoice names its `charge` and
`payment_intent`; a Charge its `invoice`, `payment_intent`, cumulative `amount_refunded` and
`refunds.data[]`; a Dispute its `charge`, `payment_intent`, `amount`, `status`."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal

import httpx

from dunning.money import to_minor
from dunning_reconciliation.stripe_signature import sign


def _event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "api_version": "2024-06-20",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj},
        }
    ).encode()


class StripeCharge:
    """One card payment of one of our invoices through Stripe: its ids, and its events."""

    def __init__(self, invoice: dict, *, run: str | None = None):
        run = run or uuid.uuid4().hex[:12]
        self.invoice = invoice  # our invoice (POST /v1/invoices' answer)
        self.stripe_invoice = f"in_{run}"
        self.charge = f"ch_{run}"
        self.payment_intent = f"pi_{run}"
        self.currency = invoice["currency"].lower()
        self.refunded = 0
        self.refunds: list[dict] = []

    def minor(self, amount: str) -> int:
        return to_minor(Decimal(amount), self.invoice["currency"])

    def invoice_paid(self, event_id: str | None = None) -> bytes:
        now = int(time.time())
        amount = self.minor(self.invoice["amount_due"])
        return _event(
            "invoice.paid",
            {
                "id": self.stripe_invoice,
                "object": "invoice",
                "number": self.invoice["number"],
                "status": "paid",
                "paid": True,
                "amount_due": amount,
                "amount_paid": amount,
                "amount_remaining": 0,
                "currency": self.currency,
                "charge": self.charge,
                "payment_intent": self.payment_intent,
                "metadata": {"dunning_invoice_id": self.invoice["id"]},
                "status_transitions": {"paid_at": now},
            },
            event_id,
        )

    def charge_refunded(self, amount: int, event_id: str | None = None) -> bytes:
        """charge.refunded after a new refund of `amount` (minor units); the charge lists every refund."""
        self.refunded += amount
        self.refunds.insert(
            0,
            {
                "id": f"re_{uuid.uuid4().hex[:24]}",
                "object": "refund",
                "amount": amount,
                "charge": self.charge,
                "currency": self.currency,
                "payment_intent": self.payment_intent,
                "reason": "requested_by_customer",
                "status": "succeeded",
                "created": int(time.time()),
            },
        )
        total = self.minor(self.invoice["amount_due"])
        return _event(
            "charge.refunded",
            {
                "id": self.charge,
                "object": "charge",
                "amount": total,
                "amount_captured": total,
                "amount_refunded": self.refunded,
                "captured": True,
                "paid": True,
                "refunded": self.refunded >= total,
                "currency": self.currency,
                "invoice": self.stripe_invoice,
                "payment_intent": self.payment_intent,
                "metadata": {},
                "refunds": {"object": "list", "data": list(self.refunds), "has_more": False, "total_count": 1},
                "status": "succeeded",
            },
            event_id,
        )

    def dispute(self, event_type: str, status: str, event_id: str | None = None) -> bytes:
        """charge.dispute.created (status needs_response) or charge.dispute.closed (won / lost)."""
        return _event(
            event_type,
            {
                "id": f"dp_{self.charge[3:]}",
                "object": "dispute",
                "amount": self.minor(self.invoice["amount_due"]),
                "currency": self.currency,
                "charge": self.charge,
                "payment_intent": self.payment_intent,
                "reason": "fraudulent",
                "status": status,
                "is_charge_refundable": False,
                "metadata": {},
                "created": int(time.time()),
            },
            event_id,
        )

    def intent(self, event_type: str, status: str, event_id: str | None = None) -> bytes:
        """payment_intent.processing / .payment_failed / .succeeded of a debit for our invoice."""
        return _event(
            event_type,
            {
                "id": self.payment_intent,
                "object": "payment_intent",
                "amount": self.minor(self.invoice["amount_due"]),
                "amount_received": self.minor(self.invoice["amount_due"]) if status == "succeeded" else 0,
                "currency": self.currency,
                "status": status,
                "payment_method_types": ["sepa_debit"],
                "latest_charge": self.charge,
                "invoice": None,
                "metadata": {"dunning_invoice_id": self.invoice["id"]},
                "created": int(time.time()),
            },
            event_id,
        )


def post_stripe(client: httpx.Client, url: str, tenant_id: str, payload: bytes, secret: str) -> httpx.Response:
    return client.post(
        f"{url}/v1/webhooks/stripe/{tenant_id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, secret), "Content-Type": "application/json"},
    )


def gocardless_body(*events: dict) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def gocardless_payment_event(action: str, payment: str, *, invoice_id: str, amount_minor: int, currency: str) -> dict:
    """A `payments` event as GoCardless sends it, the payment's metadata (set by the merchant when it
    created the payment) copied into `resource_metadata`."""
    causes = {"submitted": "payment_submitted", "confirmed": "payment_confirmed", "failed": "mandate_cancelled"}
    return {
        "id": f"EV{uuid.uuid4().hex[:12].upper()}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "resource_type": "payments",
        "action": action,
        "links": {"payment": payment},
        "details": {"origin": "gocardless", "cause": causes.get(action, action), "description": f"Payment {action}."},
        "metadata": {},
        "resource_metadata": {"invoice_id": invoice_id, "amount": str(amount_minor), "currency": currency},
    }


def gocardless_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_gocardless(client: httpx.Client, url: str, tenant_id: str, body: bytes, signature: str) -> httpx.Response:
    return client.post(
        f"{url}/v1/webhooks/gocardless/{tenant_id}",
        content=body,
        headers={"Webhook-Signature": signature, "Content-Type": "application/json"},
    )


def standard_headers(body: bytes, secret: str, *, msg_id: str | None = None, at: int | None = None) -> dict:
    """The Standard Webhooks headers for `body`: v1 = base64 HMAC-SHA256 of "id.timestamp.body" with
    the secret's bytes (the base64 after `whsec_`)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = int(time.time()) if at is None else at
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{at}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
        "Content-Type": "application/json",
    }


def standard_event(event_type: str, data: dict) -> bytes:
    return json.dumps(
        {"type": event_type, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}
    ).encode()


def post_standard(client: httpx.Client, url: str, tenant_id: str, body: bytes, headers: dict) -> httpx.Response:
    return client.post(f"{url}/v1/webhooks/standard/{tenant_id}", content=body, headers=headers)
