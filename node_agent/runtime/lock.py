"""One agent per node: an exclusive ``flock`` on a file in the agent's dir.

The kernel drops the lock when the holder dies, however it dies (SIGKILL, OOM), so
a stale lock never blocks the next start. The descriptor is not inherited by the
worker (close-on-exec), so a leftover worker never holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Optional

from node_agent.common.errors import RuntimeFailure
from node_agent.common.log import get_logger

log = get_logger("lock")

LOCK_FILE = "agent.lock"


class AlreadyRunning(RuntimeFailure):
    """Another agent holds the node's lock."""


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symlink, not node-agent's lock file; remove it"
    if exc.errno == errno.EISDIR:
        return "it is a directory, not node-agent's lock file; remove it"
    return f"{exc.strerror}; check the shared dir is writable by uid {os.getuid()}"


class NodeLock:
    """Held for the agent's whole life."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise ``AlreadyRunning`` naming the holder
        (``RuntimeFailure`` when something else is at the lock's path)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # No lock file, so no agent holds it: a full disk must not keep the
                # worker from running.
                log.warning(
                    "cannot create the node's lock %s (%s): running without it",
                    self.path,
                    exc.strerror,
                )
                return
            raise RuntimeFailure(f"cannot take the node's lock {self.path}: {_why(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another node-agent (pid {holder}) is already supervising the worker on "
                f"this node (lock {self.path}); stop it first, or use 'node-agent status'"
            ) from None
        with contextlib.suppress(OSError):  # the pid is for messages only (a full disk)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (dying drops it too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
