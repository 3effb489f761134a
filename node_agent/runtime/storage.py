"""The shared storage the worker needs: really mounted and writable, or wait.

Batch mounts the pool's ``mountConfiguration`` at
``$AZ_BATCH_NODE_MOUNTS_DIR/<relativeMountPath>`` before the start task runs. When a
mount fails, or is gone, what is left there is an empty directory on the node's
own temporary disk: a worker started then would read no job files and write frames
nobody sees. So before every start the agent checks that each mount the worker
needs is a mount point (``/proc/self/mountinfo``) and that the start task's user
can create a file in it, and waits with backoff (full jitter) until it can.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from node_agent.common.log import get_logger
from node_agent.common.retry import wait_until_ready
from node_agent.node.env import BatchEnv
from node_agent.runtime.health import size

log = get_logger("storage")

MOUNTINFO = "/proc/self/mountinfo"
PROBE_TIMEOUT = 20.0  # seconds: a hung network file system must not hang the agent
STORAGE_VARIABLE = "NODE_AGENT_STORAGE_DIR"  # the worker's first mount, absolute
_WRITE_PROBE_PREFIX = ".node-agent-write-test-"


@dataclass(frozen=True)
class Mount:
    """One mount the worker needs: the pool's relative path and where it is."""

    name: str  # relativeMountPath, as in the pool
    path: str  # $AZ_BATCH_NODE_MOUNTS_DIR/<name>


@dataclass(frozen=True)
class MountStatus:
    """What a look at one mount found. ``problem`` is None when it is ready."""

    mount: Mount
    mounted: bool
    fstype: Optional[str]
    writable: bool
    free_bytes: Optional[int]
    problem: Optional[str]

    @property
    def ready(self) -> bool:
        """Mounted and writable."""
        return self.problem is None

    def describe(self) -> str:
        """One line for logs and the doctor."""
        if self.problem is not None:
            return f"{self.mount.path}: {self.problem}"
        free = "" if self.free_bytes is None else f", {size(self.free_bytes)} free"
        return f"{self.mount.path} ({self.fstype or 'mounted'}, writable{free})"


def mounts_dir(env: BatchEnv) -> str:
    """Where Batch mounts the pool's file systems. Older nodes lack the variable;
    Batch's documented default, ``<root>/fsmounts``, is used then."""
    return env.node.mounts_dir or posixpath.join(env.node.root_dir, "fsmounts")


def storage_mounts(env: BatchEnv, names: Sequence[str]) -> tuple[Mount, ...]:
    """The mounts named by the ``storage_mounts`` setting (pure)."""
    base = mounts_dir(env)
    return tuple(Mount(name, posixpath.join(base, name)) for name in names)


def worker_environment(mounts: Sequence[Mount]) -> dict[str, str]:
    """What the worker's environment says about the storage: the first mount's
    absolute path, for job scripts that need it."""
    return {STORAGE_VARIABLE: mounts[0].path} if mounts else {}


def _unescape(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (space, tab, newline and backslash
    as octal escapes)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> dict[str, str]:
    """Mount point -> file system type, the last mount on a point winning (it hides
    the ones below it)."""
    points: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) > separator + 1 and len(fields) > 4:
            points[_unescape(fields[4])] = fields[separator + 1]
    return points


def _mount_point(path: str, mountinfo: str) -> tuple[bool, Optional[str]]:
    """Whether ``path`` is a mount point, and its file system type. The parent is
    resolved, never the mount itself (a hung mount would hang the lookup)."""
    head, tail = posixpath.split(path.rstrip("/"))
    resolved = posixpath.join(os.path.realpath(head), tail)
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            points = parse_mountinfo(handle.read())
    except OSError:
        return os.path.ismount(resolved), None  # st_dev against the parent's
    if resolved in points:
        return True, points[resolved]
    return False, None


def _can_write(path: str) -> Optional[str]:
    """None when the start task's user can create a file here, else why not. A real
    file is made: mode bits say nothing on CIFS, or on NFS with root squashing."""
    try:
        fd, name = tempfile.mkstemp(prefix=_WRITE_PROBE_PREFIX, dir=path)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def probe(mount: Mount, mountinfo: str = MOUNTINFO) -> MountStatus:
    """Look at one mount: mounted, file system type, writable, free space."""
    mounted, fstype = _mount_point(mount.path, mountinfo)
    if not mounted:
        problem = (
            "not a mount point: an empty directory on the node's own disk (the pool's "
            "mountConfiguration did not mount it)"
            if os.path.isdir(mount.path)
            else "does not exist (the pool's mountConfiguration did not mount it)"
        )
        return MountStatus(mount, False, None, False, None, problem)
    try:
        stats = os.statvfs(mount.path)
        free: Optional[int] = stats.f_bavail * stats.f_frsize
    except OSError:
        free = None
    denied = _can_write(mount.path)
    if denied is not None:
        problem = f"mounted ({fstype or 'unknown type'}) but not writable by this user: {denied}"
        return MountStatus(mount, True, fstype, False, free, problem)
    return MountStatus(mount, True, fstype, True, free, None)


def probe_all(
    mounts: Sequence[Mount], timeout: float = PROBE_TIMEOUT, mountinfo: str = MOUNTINFO
) -> list[MountStatus]:
    """Every mount, looked at in a thread of its own so that a file system that
    does not answer (a hung NFS server) costs ``timeout`` seconds, not the agent."""
    results: dict[int, MountStatus] = {}

    def look() -> None:
        for index, mount in enumerate(mounts):
            results[index] = probe(mount, mountinfo)

    worker = threading.Thread(target=look, name="storage-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    hung = f"did not answer within {timeout:g} s (a network file system that hangs?)"
    return [
        results.get(i) or MountStatus(m, True, None, False, None, hung)
        for i, m in enumerate(mounts)
    ]


class StorageNotReady(Exception):
    """A mount is missing or not writable; the message says which and why."""


@dataclass(frozen=True)
class StorageCheck:
    """The mounts the worker needs and how long to wait between looks."""

    mounts: tuple[Mount, ...]
    cap: float  # seconds: the largest wait window
    mountinfo: str = MOUNTINFO
    timeout: float = PROBE_TIMEOUT


def wait_for_storage(
    check: StorageCheck,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool],
    on_wait: Callable[[], None],
) -> bool:
    """Look until every mount is ready (``retry.wait_until_ready``: full-jitter
    backoff up to ``check.cap``, one log line per failed look); ``on_wait`` is
    called once, at the first failure. Returns False when ``should_stop`` ended the
    wait (``sleep`` must return early then), True when the storage is ready."""
    started = time.monotonic()
    waited: list[bool] = []

    def look() -> list[MountStatus]:
        statuses = probe_all(check.mounts, check.timeout, check.mountinfo)
        problems = [s.describe() for s in statuses if not s.ready]
        if problems:
            raise StorageNotReady("; ".join(problems))
        return statuses

    def waiting() -> None:
        waited.append(True)
        on_wait()

    try:
        statuses = wait_until_ready(
            look,
            label="shared storage",
            not_ready=StorageNotReady,
            cap=check.cap,
            sleep=sleep,
            should_stop=should_stop,
            on_wait=waiting,
        )
    except StorageNotReady:
        return False
    after = f" after {time.monotonic() - started:.1f} s" if waited else ""
    for status in statuses:
        log.info("shared storage ready%s: %s", after, status.describe())
    return True
