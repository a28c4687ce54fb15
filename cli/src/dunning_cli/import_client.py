"""POST /v1/invoices/bulk in upsert mode, one batch at a time, retried until it is answered.

Each batch carries an Idempotency-Key derived from the input's content hash and the batch's rows,
so a batch sent again (after a timeout, a 5xx, a kill of the CLI) is a replay of the first request
on the server, never a second import. Transient failures — connection errors, timeouts, 5xx, 429
(after its Retry-After), and 409 "that key's first request is still running" — are retried with
exponential backoff; any other 4xx refuses the whole request, and the import stops with the
server's reason.
"""

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

BULK_PATH = "/v1/invoices/bulk"
MAX_BACKOFF = 30.0


class ImportStopped(RuntimeError):
    """The server refused a batch, or stayed unreachable: the import stops (and can be resumed)."""


class BulkClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        retries: int = 10,
        timeout: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str, float], None] | None = None,
    ):
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self.retries = retries
        self.sleep = sleep
        self.on_retry = on_retry

    def close(self) -> None:
        self.http.close()

    def upsert(self, invoices: list[dict[str, Any]], key: str) -> dict[str, Any]:
        """The bulk response ({"summary", "results"}) for these invoices, sent under `key`."""
        body = orjson.dumps({"mode": "upsert", "invoices": invoices})
        attempt = 0
        while True:
            try:
                response = self.http.post(BULK_PATH, content=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                reason, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code == 200:
                    return _json(response)
                if not _transient(response.status_code):
                    raise ImportStopped(f"the server refused the batch: {describe(response)}")
                reason, wait = describe(response), retry_after(response.headers.get("retry-after"))
            attempt += 1
            if attempt > self.retries:
                raise ImportStopped(f"gave up after {self.retries} retries: {reason}")
            delay = wait if wait is not None else min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if self.on_retry is not None:
                self.on_retry(reason, delay)
            self.sleep(delay)


def _transient(status: int) -> bool:
    return status >= 500 or status in (408, 409, 429)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ImportStopped(f"the server's answer is not JSON: {response.text[:200]!r}") from None
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ImportStopped(f"the server's answer has no results: {response.text[:200]!r}")
    return body


def describe(response: httpx.Response) -> str:
    """A problem+json answer as "422 Unprocessable: mode: unknown field" (its errors named)."""
    text = f"{response.status_code} {response.reason_phrase}"
    try:
        problem = response.json()
    except ValueError:
        return f"{text}: {response.text[:200]}" if response.text else text
    if not isinstance(problem, dict):
        return text
    detail = problem.get("detail") or problem.get("title")
    errors = problem.get("errors") or []
    named = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    return ": ".join(part for part in (text, str(detail) if detail else "", named) if part)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), at most 5 minutes."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 300.0)
