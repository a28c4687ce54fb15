"""API models: what an accounting system sends (`InvoiceIn`, in invoice_input beside its fast mirror),
what it gets back (`InvoiceOut` and the rest, in invoice_output beside the JSON writer that mirrors
them), and the bulk import's answer.
"""

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from dunning.http import FieldError, Page
from dunning_ingest.invoice_output import InvoiceOut


def canonical_fingerprint(method: str, path: str, body: Any) -> bytes:
    """Idempotency-Key fingerprint: method, path and the body with sorted keys (whitespace-blind)."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return digest.digest()


InvoiceList = Page[InvoiceOut]


class BulkResult(BaseModel):
    index: int
    status: Literal["created", "existing", "conflict", "invalid"]
    id: str | None = None
    errors: list[FieldError] | None = None


class BulkSummary(BaseModel):
    created: int
    existing: int
    failed: int


class BulkResponse(BaseModel):
    summary: BulkSummary
    results: list[BulkResult]
