"""The bare FastAPI route `make bench` measures POST /v1/invoices against (bench/reference.py).

    BARE_PORT=... DATABASE_URL=... python -m dunning_tools.bench.bare_api

`POST /v1/invoices` reads the JSON body and does one INSERT into `bench_ref.inserted` (no
authentication, no validation beyond the table's own checks, no outbox), answering 201 with the
id. It is served as invoice-ingest is (dunning.runtime): uvicorn with the same settings, its
listening socket shared by the replicas (SO_REUSEPORT), the same uvloop and the same asyncpg pool
(dunning.db.create_pool, the default pool sizes), so the ratio is what the platform's route costs
beyond one INSERT.
"""

import os
import socket

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from dunning.db import create_pool
from dunning.settings import CommonSettings
from dunning_tools.bench import reference


def build_app(database_url: str) -> FastAPI:
    defaults = CommonSettings()
    state: dict = {}

    async def lifespan(app: FastAPI):
        state["pool"] = await create_pool(
            database_url, reference.SCHEMA, min_size=defaults.db_pool_min, max_size=defaults.db_pool_max
        )
        yield
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/invoices", status_code=201)
    async def create_invoice(request: Request) -> Response:
        item = orjson.loads(await request.body())
        async with state["pool"].acquire() as conn:
            invoice_id = await conn.fetchval(reference.INSERT, *reference.row("ten_bare", item))
        return Response(orjson.dumps({"id": invoice_id}), status_code=201, media_type="application/json")

    return app


async def serve(port: int, database_url: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(
        build_app(database_url), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(int(os.environ["BARE_PORT"]), os.environ["DATABASE_URL"]))
