"""Bodies the routes read themselves, decoded and checked as FastAPI would for a body parameter of
their model (the same errors, locations and problem): POST /v1/invoices through the fast mirror of
`InvoiceIn` first (see invoice_input); PATCH, void and write-off (`decode_model`) because they take
`application/merge-patch+json` too and tell a field left out from a null.
"""

import email.message
import json
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import HTTPException, RequestValidationError
from pydantic import TypeAdapter, ValidationError

from dunning_ingest.invoice_input import FastInvoiceIn, InvoiceIn, fast_validate_invoice_in, invoice_adapter

M = TypeVar("M")


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: application/json or application/*+json (a missing type is not JSON: strict)."""
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _parsed(raw: bytes, content_type: str | None) -> Any:
    """The JSON of a body declared JSON; other bodies as they are (the model then refuses them)."""
    body: Any = raw
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if _is_json(content_type):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:  # what only the stdlib parser takes (lone surrogates, NaN...), or not JSON
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RequestValidationError(
                    [
                        {
                            "type": "json_invalid",
                            "loc": ("body", exc.pos),
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": exc.msg},
                        }
                    ]
                ) from None
            except UnicodeDecodeError:
                raise HTTPException(400, "There was an error parsing the body") from None
    return body


def _validated(adapter: TypeAdapter[M], body: Any) -> M:
    try:  # from_attributes: as FastAPI validates a body (the same error for a body that is not an object)
        return adapter.validate_python(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def decode_invoice(raw: bytes, content_type: str | None) -> FastInvoiceIn | InvoiceIn:
    """The request body of POST /v1/invoices as the invoice, or the RequestValidationError that FastAPI
    would raise for a body parameter of type InvoiceIn (the same errors, locations and problem)."""
    body = _parsed(raw, content_type)
    return fast_validate_invoice_in(body) or _validated(invoice_adapter, body)


def decode_model(raw: bytes, content_type: str | None, adapter: TypeAdapter[M]) -> M:
    """The request body as `adapter`'s model, or the RequestValidationError FastAPI would raise."""
    return _validated(adapter, _parsed(raw, content_type))
