"""The stand-ins' app: one router per provider (see __init__.py), and the process that serves it."""

import argparse
import subprocess
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from dunning.http.server import QuietServer
from dunning_tools.stack.procs import spawn, wait_for_port
from dunning_tools.stack.providers import hooks, printmail, twilio


def make_app(directory: Path, secrets: dict[str, str]) -> FastAPI:
    """`secrets`: the credentials the stand-ins expect (e.g. `twilio_account_sid`, `twilio_auth_token`,
    `printmail_api_key`), handed to the notifier by the stack through its environment."""
    app = FastAPI(title="dev provider stand-ins", docs_url="/docs")
    directory.mkdir(parents=True, exist_ok=True)
    app.include_router(twilio.router(directory / "twilio", secrets))
    app.include_router(printmail.router(directory / "printmail", secrets))
    app.include_router(hooks.router(directory / "hooks", secrets))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def start(directory: Path, port: int, secrets: dict[str, str], log_path: Path) -> subprocess.Popen:
    """The stand-ins as a child process (procs.spawn), returned once the port listens."""
    args = [sys.executable, "-m", "dunning_tools.stack.providers.app", "--dir", str(directory), "--port", str(port)]
    for key, value in sorted(secrets.items()):
        args += ["--secret", f"{key}={value}"]
    proc = spawn(args, log_path=log_path)
    wait_for_port(port, proc=proc, what="provider stand-ins")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8026)
    parser.add_argument("--secret", action="append", default=[], help="key=value")
    args = parser.parse_args()
    secrets = dict(item.split("=", 1) for item in args.secret)
    config = uvicorn.Config(make_app(args.dir, secrets), host="127.0.0.1", port=args.port, log_level="warning")
    QuietServer(config).run()


if __name__ == "__main__":
    main()
