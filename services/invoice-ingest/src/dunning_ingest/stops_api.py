"""The HTTP pieces the stop routes share (holds_api, disputes_api, promises_api; plans too): the
Idempotency-Key header as POST /v1/invoices takes it, the fingerprint of a decoded body, and the
answer of a Reply."""

from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import Response
from pydantic import BaseModel

from dunning_ingest.idempotency import MAX_KEY_LENGTH, Reply, checked_key
from dunning_ingest.schemas import canonical_fingerprint

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Optional. Replays the first response (with `Idempotent-Replayed: true`) for 24 h; reusing "
        "a key with a different body is a 422, while the first request runs a 409. At most 255 chars.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "\\S"},
    ),
]


def keyed(key: str | None, method: str, path: str, body: BaseModel) -> tuple[str | None, bytes | None]:
    """(the checked Idempotency-Key, the request's fingerprint) — (None, None) without a key."""
    key = checked_key(key)
    if key is None:
        return None, None
    return key, canonical_fingerprint(method, path, body.model_dump(mode="json", exclude_unset=True))


def answer(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def created(description: str, model: Any) -> dict[int | str, dict[str, Any]]:
    """The documented answers of an acknowledging POST: 201 (or its replay), 404, 409, 422."""
    return {
        201: {"model": model, "description": description},
        404: {"description": "No such invoice or customer for this tenant (the field is named)"},
        409: {
            "description": "The invoice is not open (`invoice_closed`: paid, void or written off), a live item "
            "conflicts, or the Idempotency-Key's first request is still running"
        },
    }
