"""Starting the worker's process: in a session of its own, with a fresh token in its
environment that every descendant inherits (``proctree``), its stdout and stderr
forwarded by ``logpump``."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass

from node_agent.common.log import get_logger
from node_agent.runtime import proctree
from node_agent.runtime.logpump import Pump, utc_stamp
from node_agent.runtime.worker import WorkerSpec

log = get_logger("launch")


@dataclass(frozen=True)
class Launched:
    """A worker process just started, and the pumps forwarding its output."""

    process: subprocess.Popen[bytes]
    token: str
    pumps: tuple[Pump, ...]

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for each pump to forward what is left."""
        for pump in self.pumps:
            if not pump.join(timeout):
                log.warning("worker output still open after it stopped; not waiting for it")


def launch(spec: WorkerSpec, stdout_fd: int, stderr_fd: int, timestamps: bool) -> Launched:
    """Start the worker; ``OSError`` when it cannot be started."""
    token = secrets.token_hex(16)
    env = dict(spec.env)
    env[proctree.TOKEN_VARIABLE] = token
    process = subprocess.Popen(
        spec.argv,
        cwd=spec.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stamp = utc_stamp if timestamps else None
    pumps = (
        Pump(os.dup(process.stdout.fileno()), stdout_fd, "stdout", stamp).start(),
        Pump(os.dup(process.stderr.fileno()), stderr_fd, "stderr", stamp).start(),
    )
    process.stdout.close()
    process.stderr.close()
    return Launched(process, token, pumps)
