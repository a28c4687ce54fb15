"""One service process, run the way an orchestrator runs it: `python -m <package>` in a process group
of its own, its output in a log file, started, signalled and started again with the same port,
environment and log. The local stack, the chaos harness, the bench and the tests all use this."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from dunning_tools.stack.procs import spawn, stop


def service_env(
    prefix: str, database_url: str, kafka_bootstrap_servers: str, port: int, **settings: object
) -> dict[str, str]:
    """One service process's environment: this process's, the servers, its HTTP port, unbuffered
    output, and `<prefix><SETTING>` for each keyword (`db_schema="x"` is `NOTIFIER_DB_SCHEMA=x`)."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
            f"{prefix}HTTP_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"{prefix}{key.upper()}": str(value) for key, value in settings.items()})
    return env


@dataclass
class ServiceProc:
    name: str
    package: str  # the module run with `python -m`
    port: int
    env: dict[str, str]
    log_path: Path
    replica: int = 0
    python: str = sys.executable  # another interpreter runs it from another install (the wheels test)
    cwd: Path | None = None  # `python -m` puts the working directory first on sys.path
    proc: subprocess.Popen | None = None
    starts: int = 0
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def restarts(self) -> int:
        return max(self.starts - 1, 0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (again, after a kill or an exit)."""
        self.starts += 1
        self.proc = spawn([self.python, "-m", self.package], env=self.env, log_path=self.log_path, cwd=self.cwd)

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        """Until GET /readyz answers 200; fails with the log's tail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready on {self.url} after {timeout}s:\n{self.tail()}")

    async def wait_ready_async(self, timeout: float = 60) -> None:
        await asyncio.to_thread(self.wait_ready, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the whole process group: SIGKILL is a crash (no drain; reaped before returning),
        SIGSTOP/SIGCONT a freeze. Returns False when it was not running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)
            self.kills += 1
        return True

    async def wait_exit(self, timeout: float = 20) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the service drains), then SIGKILL after `timeout`."""
        stop(self.proc, timeout=timeout)
