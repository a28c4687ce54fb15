"""The run's channels beyond e-mail: a stage by SMS and a stage by webhook, read back from the provider
stand-ins' own records as the same `Mail` records the checks judge (chaos.checks).

- The policy: pre_due and final by e-mail, soft by SMS (Twilio's Messages API, the stand-in), firm by
  webhook (`reminder.due` to the tenant's endpoint, the receiver stand-in). One channel a stage keeps
  the load of a run what it was with four e-mails (a stage on two channels would add a delivery).
- Every customer has a phone of its own (`phone_of`), so an SMS maps to its invoice by its `To`: the
  stand-in keeps what Twilio keeps (sid, to, body, dates), not our delivery id; the delivery id comes
  from the notifier's deliveries (the same (invoice, stage, channel)). Received at: the message's
  `date_created`, Twilio's RFC 2822 date (whole seconds: lateness of an SMS is +-1 s coarse).
- The tenant's webhook endpoint (`POST /v1/webhook-endpoints`, subscribed to `reminder.due` only)
  points at `hooks/chaos-<run>` of the receiver, which keeps each request with its headers and body:
  the body's data names invoice, tenant, stage, channel, scheduled_at and delivery_id; every request
  is one received copy (a repost after an attempt in doubt carries the same `webhook-id`).
"""

import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from dunning_tools.chaos.checks import Mail, ts

CHANNELS_OF: dict[str, tuple[str, ...]] = {
    "pre_due": ("email",),
    "soft": ("sms",),
    "firm": ("webhook",),
    "final": ("email",),
}
EVENT_TYPE = "reminder.due"


def phone_of(index: int) -> str:
    """A German mobile number of the run's customer `index` (valid for libphonenumber; never ending in
    0000, which the Twilio stand-in leaves undelivered)."""
    return f"+49151{index % 10**7:07d}1"


def hook_name(run_id: str) -> str:
    return f"chaos-{run_id}"


def sms_path(workdir: Path) -> Path:
    return workdir / "providers" / "twilio" / "messages.jsonl"


def hooks_path(workdir: Path, run_id: str) -> Path:
    return workdir / "providers" / "hooks" / f"{hook_name(run_id)}.jsonl"


async def subscribe(run) -> dict[str, Any]:
    """The main tenant's webhook endpoint for `reminder.due`, at the receiver stand-in."""
    url = f"{run.stack.providers_url}/hooks/{hook_name(run.run_id)}"
    body = {"url": url, "event_types": [EVENT_TYPE], "description": "chaos: the webhook stage"}
    r = await run.client.post(f"{run.stack.url('notifier')}/v1/webhook-endpoints", json=body, headers=run.auth)
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/webhook-endpoints answered {r.status_code}: {r.text[:300]}")
    return r.json()


def read_sms(path: Path, invoice_of_phone: dict[str, str]) -> list[Mail]:
    """One `Mail` per message the Twilio stand-in accepted for one of the run's phones (a sid's first
    line is its creation; later lines are its status changes)."""
    if not path.is_file():
        return []
    seen: set[str] = set()
    out = []
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            message = json.loads(line)
            sid = message["sid"]
            invoice_id = invoice_of_phone.get(message.get("to") or "")
            if sid in seen or invoice_id is None:
                continue
            seen.add(sid)
            created = parsedate_to_datetime(message["date_created"]).timestamp()
            out.append(Mail(invoice_id, stage_of("sms"), "sms", "", sid, created, None))
    return out


def read_hooks(path: Path, tenant_id: str) -> list[Mail]:
    """One `Mail` per `reminder.due` request the receiver kept for the run's endpoint."""
    if not path.is_file():
        return []
    out = []
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            event = json.loads(record["body"] or "{}")
            data = event.get("data") or {}
            if event.get("type") != EVENT_TYPE or data.get("tenant_id") != tenant_id:
                continue
            webhook_id = str(record["headers"].get("webhook-id") or "")
            out.append(
                Mail(
                    str(data["invoice_id"]),
                    str(data["stage"]),
                    str(data.get("channel") or "webhook"),
                    str(data.get("delivery_id") or webhook_id),
                    webhook_id,
                    ts(record["received_at"]),
                    ts(data.get("scheduled_at")),
                )
            )
    return out


def stage_of(channel: str) -> str:
    (stage,) = [s for s, channels in CHANNELS_OF.items() if channel in channels]
    return stage


def received(run) -> list[Mail]:
    """Every SMS and webhook the stand-ins got for the run's main tenant, delivery ids filled in from
    the notifier's deliveries where the record carries none."""
    phones = {phone_of(inv.index): inv.id for inv in run.invoices if inv.id}
    out = read_sms(sms_path(run.stack.workdir), phones) + read_hooks(
        hooks_path(run.stack.workdir, run.run_id), run.tenant["tenant_id"]
    )
    return out


def activity(run) -> tuple[int, int]:
    """The stand-ins' record sizes: unchanged for a while means nothing more is arriving."""
    sizes = []
    for path in (sms_path(run.stack.workdir), hooks_path(run.stack.workdir, run.run_id)):
        sizes.append(path.stat().st_size if path.is_file() else 0)
    return sizes[0], sizes[1]
