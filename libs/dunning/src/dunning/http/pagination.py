"""The one pagination style of every list route: `limit` and an opaque `cursor` in; out
`{"data": [...], "next_cursor": "..."}`, with `next_cursor` null on the last page.

A cursor carries the sort key of the last item of the page, base64url-encoded JSON: clients pass
`next_cursor` back unchanged and never build one. A route fetches `limit + 1` rows and hands them
to `page()`, which cuts the extra row and makes the cursor from the last row kept.
"""

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from dunning.http.problems import Problem

T = TypeVar("T")
MAX_CURSOR_LENGTH = 200
# What encode_cursor writes: base64url of {"after": ...}, unpadded.
CURSOR_SHAPE = "^eyJhZnRlciI6[A-Za-z0-9_-]*$"
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` of the previous page, unchanged",
        json_schema_extra={"pattern": CURSOR_SHAPE},  # documented; decode_cursor is the rule (400 naming it)
    ),
]


def limit_query(default: int, maximum: int) -> Any:
    """`limit: Annotated[int, limit_query(50, 200)] = 50`."""
    return Query(ge=1, le=maximum, description=f"Items per page (1 to {maximum}, default {default})")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def decode_cursor(cursor: str | None, pattern: re.Pattern[str]) -> str | None:
    """The key a cursor carries (None for no cursor: the first page); a 400 naming `cursor` if it is
    not one this API returned."""
    if cursor is None:
        return None
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = decoded["after"]
        if not isinstance(after, str) or not pattern.fullmatch(after):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise Problem(
            400,
            "cursor is not a cursor this API returned; pass next_cursor unchanged.",
            errors=[{"field": "cursor", "message": "invalid cursor", "code": "invalid_cursor"}],
        ) from None
    return after


def page(
    rows: Sequence[Any], limit: int, key: Callable[[Any], str], view: Callable[[Any], Any] = lambda r: r
) -> dict[str, Any]:
    """`rows`: up to `limit + 1` rows in page order; the answer body with its next cursor."""
    kept = rows[:limit]
    return {"data": [view(r) for r in kept], "next_cursor": encode_cursor(key(kept[-1])) if len(rows) > limit else None}
