"""The hand-off to a collection agency (docs/collections.md).

A tenant sets its agency (agency_api.py): `webhook` (the case file is POSTed to the agency's URL,
signed the Standard Webhooks way with a `whsec_` secret) or `export` (the agency downloads the case
and acknowledges it). A stage on the `agency` channel builds the case file (the invoice with its
balance, the customer's contacts, every reminder the notifier sent, failed or dropped for it, its
call tasks) once per delivery, and:
- webhook: POSTs it; a 2xx hands it over; any other answer or a connection failure is a Retry (the
  dispatcher's backoff), a timeout after the request went out a Retry in doubt (the agency may have it:
  `webhook-id` is the case id, the same on every attempt, for the agency to deduplicate);
- export: the delivery is sent (the case waits), and the acknowledgement hands it over.
Handed over, in the same transaction: InvoiceHandedToAgency in the outbox (the scheduler stops the
invoice's dunning, `with_agency`; invoice-ingest shows the invoice `with_agency`) and the debtor's
`handed_over` e-mail recorded as a delivery, exempt from the `with_agency` stop (repository.apply_stop)
but not from a payment's.
"""

import base64
import datetime as dt
import os
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from dunning import outbox
from dunning.clock import isoformat, utcnow
from dunning.contracts import InvoiceHandedToAgency
from dunning.events import envelope
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import agency_repository as repo
from dunning_notifier import delivery_inserts as deliveries
from dunning_notifier import tasks_repository
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.settings import Settings
from dunning_notifier.tasks import ChannelPool

log = get_logger(__name__)
HANDED_OVER = "handed_over"  # the debtor's notice: its stage, template and the stop it is exempt from
WITH_AGENCY = "with_agency"
CASE_SETTLED = "case_settled"  # the agency's message when a payment settles a handed-over invoice
SETTLING = ("invoice_settled", "invoice_credited")
_RETRYABLE_4XX = {408, 409, 425, 429}


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat(value)
    if isinstance(value, (dt.date, Decimal)):
        return str(value)
    return value


def _plain(row: Any) -> dict[str, Any]:
    return {k: _text(v) for k, v in dict(row).items()}


async def build_case_file(conn: asyncpg.Connection, case_id: str, d: Delivery, agency: Any) -> dict[str, Any]:
    """The case file: what the agency needs to collect (the JSON it receives or downloads)."""
    invoice = d.payload.get("invoice") or {}
    customer = dict(d.payload.get("customer") or {})
    contact = await repo.contact_of(conn, d.tenant_id, customer.get("customer_id"))
    if contact is not None:
        extra = {k: _text(v) for k, v in dict(contact).items() if k not in ("tenant_id", "customer_id", "version")}
        customer.update({k: v for k, v in extra.items() if v is not None})
    timeline = [_plain(r) for r in await repo.deliveries_of(conn, d.tenant_id, d.invoice_id, d.delivery_id)]
    tasks = [
        {
            k: _text(r[k])
            for k in (
                "task_id",
                "stage",
                "state",
                "due_at",
                "assignee",
                "outcome",
                "promised_amount",
                "promised_date",
                "dispute_reason",
                "note",
                "completed_at",
                "cancel_reason",
            )
        }
        for r in await tasks_repository.tasks_of_invoice(conn, d.tenant_id, d.invoice_id)
    ]
    return {
        "case_id": case_id,
        "tenant_id": d.tenant_id,
        "created_at": isoformat(utcnow()),
        "agency": {"name": agency["name"], "mode": agency["mode"]},
        "customer": {
            "customer_id": customer.get("customer_id"),
            "external_id": customer.get("external_id"),
            "name": customer.get("name"),
            "email": customer.get("email"),
            "cc": list(customer.get("cc") or []),
            "phone": customer.get("phone"),
            "postal_address": customer.get("postal_address") or customer.get("address"),
            "locale": customer.get("locale"),
            "timezone": customer.get("timezone"),
        },
        "invoices": [{"invoice_id": d.invoice_id, **invoice}],
        "totals": [{"currency": invoice.get("currency"), "balance": invoice.get("balance")}],
        "charges": d.payload.get("charges"),
        "timeline": timeline,
        "tasks": tasks,
    }


def webhook_request(secret: str, case: Any, now: dt.datetime) -> tuple[bytes, dict[str, str]]:
    """The signed body and headers of a case's POST (Standard Webhooks: webhook-id is the case id)."""
    body = orjson.dumps({"type": "case.created", "timestamp": isoformat(now), "data": case["case_file"]})
    signature = Webhook(secret).sign(case["case_id"], now, body.decode())
    return body, {
        "content-type": "application/json",
        "webhook-id": case["case_id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def handed_over_payload(
    payload: dict[str, Any], stage_id: str, agency_name: str, contact_email: str | None
) -> dict[str, Any]:
    """The debtor's notice: the agency stage's payload as an e-mail of the `handed_over` template,
    naming the agency (rendering._agency)."""
    return {
        **payload,
        "stage_id": stage_id,
        "stage": HANDED_OVER,
        "channel": "email",
        "template": HANDED_OVER,
        "agency": {"name": agency_name, "contact_email": contact_email},
    }


async def complete_hand_over(
    conn: asyncpg.Connection, case: Any, *, acknowledged_by: str | None, payload: dict[str, Any] | None
) -> asyncpg.Record | None:
    """Hand the case over (None: it already was): InvoiceHandedToAgency, and the debtor's notice."""
    row = await repo.hand_over(conn, case["case_id"], acknowledged_by)
    if row is None:
        return None
    event = envelope(
        InvoiceHandedToAgency(
            row["case_id"],
            row["tenant_id"],
            row["invoice_id"],
            row["customer_id"],
            row["agency_name"],
            row["mode"],
            row["balance"],
            row["currency"],
            row["handed_over_at"],
        )
    )
    await outbox.add(conn, event)
    agency = await repo.get_agency(conn, row["tenant_id"])
    notice_payload = payload if payload is not None else (row["case_file"].get("payload") or {})
    if notice_payload:
        stage_id = new_id("stg")
        contact_email = agency["contact_email"] if agency else None
        data = handed_over_payload(notice_payload, stage_id, row["agency_name"], contact_email)
        customer = data.get("customer") or {}
        await deliveries.insert_delivery(
            conn,
            delivery_id=new_id("dlv"),
            tenant_id=row["tenant_id"],
            invoice_id=row["invoice_id"],
            stage_id=stage_id,
            stage=HANDED_OVER,
            channel="email",
            template=HANDED_OVER,
            recipient=customer.get("email") or None,
            payload=data,
            source_event_id=event["id"],
            traceparent=event.get("traceparent"),
        )
    log.info("notifier.agency.handed_over", case_id=row["case_id"], invoice_id=row["invoice_id"], mode=row["mode"])
    return row


async def settled_message(
    conn: asyncpg.Connection, *, tenant_id: str, invoice_id: str, reason: str, cause_event_id: str, at: dt.datetime
) -> str | None:
    """A stop that settles an invoice the agency received by webhook (handlers._apply_stop): a signed
    `case.settled` message to the agency, as a delivery on the agency channel (the dispatcher sends it,
    retries it like the case). None: nothing to tell (another stop, no such case, told already)."""
    if reason not in SETTLING:
        return None
    case = await repo.handed_over_webhook_case(conn, tenant_id, invoice_id)
    if case is None:
        return None
    original = case["case_file"].get("payload") or {}
    stage_id = new_id("stg")
    payload = {
        **original,
        "stage_id": stage_id,
        "stage": CASE_SETTLED,
        "channel": "agency",
        "template": CASE_SETTLED,
        "case_settled": {"case_id": case["case_id"], "reason": reason, "settled_at": isoformat(at)},
    }
    delivery_id = await repo.insert_agency_message(
        conn,
        delivery_id=new_id("dlv"),
        tenant_id=tenant_id,
        invoice_id=invoice_id,
        stage_id=stage_id,
        stage=CASE_SETTLED,
        payload=payload,
        source_event_id=str(cause_event_id),
        customer_id=case["customer_id"],
    )
    log.info("notifier.agency.settled_message", case_id=case["case_id"], delivery_id=delivery_id, reason=reason)
    return delivery_id


def settled_request(secret: str, d: Delivery, now: dt.datetime) -> tuple[bytes, dict[str, str]]:
    """The signed `case.settled` message (webhook-id: its delivery id, the same on every attempt)."""
    data = {**d.payload["case_settled"], "invoice_id": d.invoice_id}
    body = orjson.dumps({"type": "case.settled", "timestamp": isoformat(now), "data": data})
    signature = Webhook(secret).sign(d.delivery_id, now, body.decode())
    return body, {
        "content-type": "application/json",
        "webhook-id": d.delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


class AgencyChannel:
    """The `agency` channel (PROVIDERS in channels.py): a case per delivery, handed to the agency."""

    name = "agency"

    def __init__(self, settings: Settings, renderer: Any = None):
        self.settings = settings
        self.db = ChannelPool(settings)
        self._http: httpx.AsyncClient | None = None

    def open_session(self) -> "AgencyChannel":
        self.db.sessions += 1
        return self

    async def close(self) -> None:
        await self.db.release()
        if self.db.sessions <= 0:
            client, self._http = self._http, None
            if client is not None:
                await client.aclose()

    async def send(self, d: Delivery) -> Outcome:
        if d.stage == CASE_SETTLED:
            return await self._settled(d)
        try:
            pool = await self.db.get()
            async with pool.acquire() as conn, conn.transaction():
                agency = await repo.get_agency(conn, d.tenant_id)
                if agency is None:
                    return Failed("agency_not_configured", "the tenant has no collection agency (PUT /v1/agency)", True)
                case_id = new_id("case")
                case_file = await build_case_file(conn, case_id, d, agency)
                case_file["payload"] = d.payload  # kept for the debtor's notice at the hand-off (not sent)
                invoice = d.payload.get("invoice") or {}
                case = await repo.insert_case(
                    conn,
                    {
                        "case_id": case_id,
                        "tenant_id": d.tenant_id,
                        "invoice_id": d.invoice_id,
                        "customer_id": (d.payload.get("customer") or {}).get("customer_id"),
                        "delivery_id": d.delivery_id,
                        "agency_name": agency["name"],
                        "mode": agency["mode"],
                        "state": "sending" if agency["mode"] == "webhook" else "awaiting_acknowledgement",
                        "case_file": case_file,
                        "balance": Decimal(str(invoice.get("balance") or "0")),
                        "currency": invoice.get("currency") or "EUR",
                    },
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return Retry("case_store", f"{type(exc).__name__}: {exc}")
        log.info("notifier.agency.case", case_id=case["case_id"], mode=case["mode"], state=case["state"])
        if case["state"] == "handed_over" or case["mode"] == "export":
            return Sent(provider_message_id=case["case_id"], sent_at=utcnow())
        return await self._post(pool, agency, case, d)

    async def _settled(self, d: Delivery) -> Outcome:
        try:
            agency = await repo.get_agency(await self.db.get(), d.tenant_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return Retry("case_store", f"{type(exc).__name__}: {exc}")
        if agency is None or agency["mode"] != "webhook":
            return Failed("agency_not_webhook", "the tenant's agency takes no webhook now", permanent=True)
        body, headers = settled_request(agency["secret"], d, utcnow())
        outcome = await self._deliver(agency["url"], body, headers)
        return outcome or Sent(provider_message_id=d.payload["case_settled"]["case_id"], sent_at=utcnow())

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str]) -> Retry | Failed | None:
        """POST a signed message: None on a 2xx, else what to do (Retry, Failed) as for a case."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.agency_timeout_seconds, follow_redirects=False)
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            in_doubt = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            return Retry("agency_timeout", f"{type(exc).__name__}: {exc}", in_doubt=in_doubt)
        except httpx.HTTPError as exc:
            return Retry("agency_connect", f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return None
        error, code = f"{response.status_code} {response.text[:500]}", f"agency_{response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX:
            return Failed(code, f"the agency refused it: {error}", permanent=True)
        return Retry(code, error)

    async def _post(self, pool: asyncpg.Pool, agency: Any, case: Any, d: Delivery) -> Outcome:
        file = {k: v for k, v in case["case_file"].items() if k != "payload"}
        body, headers = webhook_request(agency["secret"], {"case_id": case["case_id"], "case_file": file}, utcnow())
        outcome = await self._deliver(agency["url"], body, headers)
        if outcome is not None:
            await repo.note_attempt(pool, case["case_id"], f"{outcome.error_code}: {outcome.error}"[:2000])
            return outcome
        try:
            async with pool.acquire() as conn, conn.transaction():
                await complete_hand_over(conn, case, acknowledged_by=None, payload=d.payload)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The agency has it, our record of that failed: the retry POSTs it again (same webhook-id).
            return Retry("case_store", f"{type(exc).__name__}: {exc}", in_doubt=True)
        return Sent(provider_message_id=case["case_id"], sent_at=utcnow())
