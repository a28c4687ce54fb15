"""Dunning policies are data: a versioned JSON document per tenant, validated strictly.

A document (unknown keys are refused; every error names its field, e.g. `stages.2.offset`):

    {
      "id": "pol_standard_b2b",          optional, shown in DunningPlanned.policy_id
      "description": "Our B2B terms",    optional
      "anchor": "due_date",              "due_date" (default) or "issued_at"
      "send_time": "09:00",              HH:MM on the customer's wall clock (due_date anchor only)
      "stages": [                        0..20 stages, offsets strictly increasing, names unique
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D", "template": "soft", "channels": ["email"]},
        ...
      ]
    }

`offset` is an ISO 8601 duration from the anchor (`-` = before it). `template` defaults to the
stage name, `channels` to ["email"]. With anchor "due_date" a stage's instant is the due date at
`send_time` in the customer's time zone plus the offset; with "issued_at" it is the invoice's
issued_at instant plus the offset (demos and tests use second offsets such as "PT5S").
"""

import re
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from typing import Any

from dunning_scheduler.durations import Duration, DurationError, parse_duration

MAX_STAGES = 20
MAX_TIMERS = 50  # DunningPlanned carries at most 50 (stage, channel) entries
MAX_OFFSET_SECONDS = Decimal(10 * 366 * 86400)
CHANNELS = ("email", "sms", "webhook", "letter")
ANCHORS = ("due_date", "issued_at")
DEFAULT_POLICY_ID = "pol_default"
CUSTOM_POLICY_ID = "pol_custom"

_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_TEMPLATE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_SEND_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_POLICY_KEYS = {"id", "description", "anchor", "send_time", "stages"}
_STAGE_KEYS = {"name", "offset", "template", "channels"}

DEFAULT_DOCUMENT: dict[str, Any] = {
    "id": DEFAULT_POLICY_ID,
    "description": "Built-in default: a courtesy note before the due date, three reminders, then collections.",
    "anchor": "due_date",
    "send_time": "09:00",
    "stages": [
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D"},
        {"name": "firm", "offset": "P7D"},
        {"name": "final", "offset": "P14D"},
        {"name": "collections", "offset": "P30D"},
    ],
}


class PolicyError(ValueError):
    """A document that is not a valid policy; `errors` name each offending field."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))
        self.errors = errors


@dataclass(frozen=True)
class Stage:
    name: str
    offset: Duration
    offset_text: str
    template: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    policy_id: str
    anchor: str
    send_time: time
    stages: tuple[Stage, ...]
    document: dict[str, Any]  # normalised: every default written out
    version: int = 1
    is_default: bool = True
    # Planning's memo of stage instants by (due date, zone): a policy version never changes.
    instants_cache: dict = field(default_factory=dict, compare=False, repr=False)


def parse_policy(document: Any, *, version: int = 1, is_default: bool = False) -> Policy:
    """Validate a document and return the policy, or raise PolicyError listing every problem."""
    errors: list[dict[str, str]] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if not isinstance(document, dict):
        raise PolicyError([{"field": "(body)", "message": "a policy must be a JSON object"}])
    for key in sorted(set(document) - _POLICY_KEYS):
        err(key, f"unknown key; allowed: {', '.join(sorted(_POLICY_KEYS))}")

    policy_id = document.get("id", DEFAULT_POLICY_ID if is_default else CUSTOM_POLICY_ID)
    if not isinstance(policy_id, str) or not _POLICY_ID.fullmatch(policy_id):
        err("id", "must be 1-100 characters of letters, digits, '_', '.', ':' or '-'")
    description = document.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 500):
        err("description", "must be a string of at most 500 characters")
    anchor = document.get("anchor", "due_date")
    if anchor not in ANCHORS:
        err("anchor", f"must be one of {', '.join(ANCHORS)}")
    send_time_text = document.get("send_time", "09:00")
    send_match = _SEND_TIME.fullmatch(send_time_text) if isinstance(send_time_text, str) else None
    if send_match is None:
        err("send_time", "must be a local time HH:MM such as \"09:00\"")

    stages_raw = document.get("stages")
    stages: list[Stage] = []
    if not isinstance(stages_raw, list):
        err("stages", "is required: a list of stages (may be empty)")
        stages_raw = []
    elif len(stages_raw) > MAX_STAGES:
        err("stages", f"at most {MAX_STAGES} stages, got {len(stages_raw)}")
        stages_raw = []
    seen: set[str] = set()
    previous: tuple[str, Decimal] | None = None
    for index, raw in enumerate(stages_raw):
        stage = _parse_stage(raw, f"stages.{index}", err)
        if stage is None:
            previous = None
            continue
        if stage.name in seen:
            err(f"stages.{index}.name", f"duplicate stage name {stage.name!r}")
        seen.add(stage.name)
        nominal = stage.offset.nominal_seconds()
        if previous is not None and nominal <= previous[1]:
            err(f"stages.{index}.offset",
                f"stages must be in increasing offset order: {stage.offset_text} is not after {previous[0]}")
        previous = (stage.offset_text, nominal)
        stages.append(stage)
    timers = sum(len(s.channels) for s in stages)
    if timers > MAX_TIMERS:
        err("stages", f"at most {MAX_TIMERS} (stage, channel) pairs in all, got {timers}")

    if errors:
        raise PolicyError(errors)
    normalised = {"id": policy_id, "anchor": anchor, "send_time": send_time_text,
                  "stages": [{"name": s.name, "offset": s.offset_text, "template": s.template,
                              "channels": list(s.channels)} for s in stages]}
    if description is not None:
        normalised["description"] = description
    hours, minutes = int(send_match.group(1)), int(send_match.group(2))
    return Policy(policy_id=policy_id, anchor=anchor, send_time=time(hours, minutes), stages=tuple(stages),
                  document=normalised, version=version, is_default=is_default)


def _parse_stage(raw: Any, where: str, err) -> Stage | None:
    if not isinstance(raw, dict):
        err(where, "a stage must be an object with name and offset")
        return None
    ok = True
    for key in sorted(set(raw) - _STAGE_KEYS):
        err(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(_STAGE_KEYS))}")
        ok = False
    name = raw.get("name")
    if not isinstance(name, str) or not _STAGE_NAME.fullmatch(name):
        err(f"{where}.name", "is required: lower-case letters, digits and '_', starting with a letter, at most 40")
        ok = False
    offset_text = raw.get("offset")
    offset = None
    try:
        offset = parse_duration(offset_text)
        if abs(offset.nominal_seconds()) > MAX_OFFSET_SECONDS:
            err(f"{where}.offset", "must be within 10 years of the anchor")
            ok = False
    except DurationError as exc:
        err(f"{where}.offset", str(exc) if offset_text is not None else "is required: an ISO 8601 duration")
        ok = False
    template = raw.get("template", name)
    if not isinstance(template, str) or not _TEMPLATE.fullmatch(template):
        if "template" in raw:
            err(f"{where}.template", "must be lower-case letters, digits, '_', '.', '-', starting with a letter, at most 64")
        ok = False
    channels = raw.get("channels", ["email"])
    if not isinstance(channels, list) or not channels:
        err(f"{where}.channels", f"must be a non-empty list of {', '.join(CHANNELS)}")
        ok = False
    else:
        for i, channel in enumerate(channels):
            if channel not in CHANNELS:
                err(f"{where}.channels.{i}", f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
                ok = False
        if len(set(map(str, channels))) != len(channels):
            err(f"{where}.channels", "lists a channel twice")
            ok = False
    if not ok:
        return None
    return Stage(name=name, offset=offset, offset_text=offset_text, template=template, channels=tuple(channels))


DEFAULT_POLICY = parse_policy(DEFAULT_DOCUMENT, version=1, is_default=True)
