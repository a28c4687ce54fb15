"""QuietServer: uvicorn ticking once a second (dunning.http.server) still serves, sends its Date
header, and stops when told."""

import asyncio

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from dunning.http.server import QuietServer
from dunning_tools.stack.procs import free_port

pytestmark = pytest.mark.unit


async def test_it_serves_with_a_date_header_refreshed_at_every_tick_and_exits_when_told(monkeypatch):
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    port = free_port()
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    ticks: list[int] = []
    real_tick = server.on_tick

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return await real_tick(counter)

    monkeypatch.setattr(server, "on_tick", on_tick)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/ping")
    assert answer.json() == {"ok": True} and answer.headers["date"].endswith("GMT")
    server.exit()
    await asyncio.wait_for(serving, 10)
    assert ticks and all(t % 10 == 0 for t in ticks)  # each tick refreshes the Date header
