"""Only the HTTP API of invoice-ingest under uvicorn (no broker): for bench_ingest.py."""

import uvicorn

from dunning.db import create_pool
from dunning.logging import configure_logging
from dunning_ingest.bootstrap import build_app
from dunning_ingest.settings import Settings


async def serve() -> None:
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    pool = await create_pool(settings.database_url, settings.db_schema, min_size=4, max_size=settings.db_pool_max)
    app = build_app(settings, pool)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.http_port, log_config=None, access_log=False, loop="uvloop"
    )  # http="auto", as dunning.runtime runs it
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve())
