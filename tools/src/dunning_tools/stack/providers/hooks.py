"""Stand-in receiver of outbound webhooks: the endpoints a tenant's accounting system would run.

`POST /hooks/{name}` keeps every request as it came (method, headers, the raw body) in
`<directory>/<name>.jsonl`, so a test verifies the signature with the `standardwebhooks` package
exactly as a receiver would, and answers as its name says:
- `fail-...`: 500; `gone-...`: 410 (final for the sender); `limit-...`: 429 with `Retry-After: 1`;
- `slow-...`: sleeps `hooks_slow_seconds` (a secret of the stand-ins, default 30) before its 200;
- `flaky-...`: 503 for its first two requests, then 200;
- anything else: 200 `{"received": true}`.
`PUT /_dev/hooks/{name}/answer` `{"status": 200, "delay_seconds": 0, "retry_after": null}` overrides the
answer of one name (kept on disk too); `DELETE` the same path goes back to the name's rule.
`GET /_dev/hooks/{name}` lists what the name received, oldest first.
"""

import asyncio
import base64
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

Name = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def router(directory: Path, secrets: dict[str, str]) -> APIRouter:
    directory.mkdir(parents=True, exist_ok=True)
    slow_seconds = float(secrets.get("hooks_slow_seconds", "30"))
    lock = threading.Lock()
    api = APIRouter(tags=["hooks"])

    def received(name: str) -> list[dict[str, Any]]:
        path = directory / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def override(name: str) -> dict[str, Any] | None:
        path = directory / f"{name}.answer.json"
        return json.loads(path.read_text()) if path.exists() else None

    def answer_for(name: str, count: int) -> tuple[int, float, str | None]:
        """(status, delay, retry_after) for the `count`th request (1-based) to `name`."""
        custom = override(name)
        if custom is not None:
            return int(custom.get("status", 200)), float(custom.get("delay_seconds", 0)), custom.get("retry_after")
        if name.startswith("fail-"):
            return 500, 0.0, None
        if name.startswith("gone-"):
            return 410, 0.0, None
        if name.startswith("limit-"):
            return 429, 0.0, "1"
        if name.startswith("slow-"):
            return 200, slow_seconds, None
        if name.startswith("flaky-") and count <= 2:
            return 503, 0.0, None
        return 200, 0.0, None

    @api.post("/hooks/{name}", summary="Receive a webhook (kept with its headers and raw body)")
    async def receive(name: Name, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            text: str | None = raw.decode()
        except UnicodeDecodeError:
            text = None
        record = {
            "received_at": datetime.now(UTC).isoformat(),
            "method": request.method,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": text,
            "body_base64": base64.b64encode(raw).decode(),
        }
        with lock:
            with (directory / f"{name}.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            count = len(received(name)) if name.startswith("flaky-") else 0  # only flaky- counts: no re-read
        status, delay, retry_after = answer_for(name, count)
        if delay:
            await asyncio.sleep(delay)
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        body = {"received": True} if 200 <= status < 300 else {"error": f"stand-in answers {status} for {name!r}"}
        return JSONResponse(body, status_code=status, headers=headers)

    @api.get("/_dev/hooks/{name}", summary="What a receiver got, oldest first")
    def list_received(name: Name) -> list[dict[str, Any]]:
        return received(name)

    @api.put("/_dev/hooks/{name}/answer", summary="Set a receiver's answer (status, delay, Retry-After)")
    def set_answer(name: Name, answer: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        status = answer.get("status", 200)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise HTTPException(422, "status: an HTTP status code (100-599)")
        (directory / f"{name}.answer.json").write_text(json.dumps(answer))
        return answer

    @api.delete("/_dev/hooks/{name}/answer", status_code=204, summary="Back to the answer the name's rule gives")
    def reset_answer(name: Name) -> None:
        (directory / f"{name}.answer.json").unlink(missing_ok=True)

    return api
