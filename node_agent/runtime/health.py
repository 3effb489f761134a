"""Watch the node's health while the worker runs: free disk on the node root against
Batch's DiskFull threshold, and memory.

A node whose temporary disk fills during a render (Batch then marks it unusable) or
whose memory is taken by something other than the running task fails task after
task. So every ``INTERVAL`` seconds (one wake-up a minute) a thread looks, and when
the node becomes unfit the worker is taken off new work: a v3 worker is set
``asleep`` lazily on the Manager (it finishes its current task, takes no new one,
and stays signed on, so it is back at once, with no restart, when the node
recovers); ``node-agent status`` shows why (``unfit``). A node found unfit is fit
again only ``RECOVER`` above the floor, so a value hovering at the floor does not
flap the worker. Memory held by the worker's children (the task's Blender) counts as
free: the task gives it back when it ends, and a render using most of the memory is
no fault of the node.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import psutil

from node_agent.common.errors import unexpected
from node_agent.common.log import get_logger
from node_agent.manager.status import StatusRequests
from node_agent.node.env import BatchEnv

log = get_logger("health")

INTERVAL = 60.0  # seconds between looks
DISK_FULL_DEFAULT = 2**30  # bytes: the DiskFull threshold where the node sets none
MEMORY_FLOOR = 2**30  # bytes available (tasks' memory counted as free) below: unfit
RECOVER = 1.1  # an unfit node is fit again at this many times the floor


def disk_floor(env: BatchEnv) -> int:
    """Free bytes on the node root below which Batch marks the node DiskFull
    (``AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES``; 1 GiB where unset)."""
    return env.reserved_disk_space.task_bytes or DISK_FULL_DEFAULT


def size(count: float) -> str:
    """Bytes as ``1.5 GiB`` or ``12.0 MiB``."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Reading:
    """One look at the node."""

    root: str
    disk_free: int
    disk_floor: int
    memory_available: int
    memory_in_tasks: int  # resident in the worker's children: back when the task ends


def assess(reading: Reading, unfit: frozenset[str] = frozenset()) -> dict[str, str]:
    """What makes the node unfit, by kind (``disk``, ``memory``), each with why; empty
    when it is fit (pure). ``unfit``: the kinds found at the last look."""

    def low(kind: str, value: int, floor: int) -> bool:
        return value < floor * (RECOVER if kind in unfit else 1.0)

    problems = {}
    if low("disk", reading.disk_free, reading.disk_floor):
        problems["disk"] = (
            f"{size(reading.disk_free)} free on {reading.root} "
            f"(Batch marks the node DiskFull below {size(reading.disk_floor)})"
        )
    memory = reading.memory_available + reading.memory_in_tasks
    if low("memory", memory, MEMORY_FLOOR):
        problems["memory"] = (
            f"{size(memory)} of memory available, tasks' memory included (below "
            f"{size(MEMORY_FLOOR)})"
        )
    return problems


def measure(root: str, floor: int, worker_pid: Optional[int]) -> Reading:
    """Look at the node now; ``OSError`` when the node root cannot be looked at."""
    in_tasks = 0
    if worker_pid is not None:
        try:
            for child in psutil.Process(worker_pid).children(recursive=True):
                try:
                    in_tasks += child.memory_info().rss
                except psutil.Error:
                    continue
        except psutil.Error:
            in_tasks = 0
    return Reading(
        root=root,
        disk_free=shutil.disk_usage(root).free,
        disk_floor=floor,
        memory_available=psutil.virtual_memory().available,
        memory_in_tasks=in_tasks,
    )


class HealthWatch:
    """Looks at the node every ``interval`` seconds in a thread (default: the
    module's ``INTERVAL``, read when the watch is made). ``worker_pid`` says which
    worker runs now; ``post(unfit=...)`` writes the state; ``status`` takes a v3
    worker off new work (None: v2, only logged)."""

    def __init__(
        self,
        root: str,
        floor: int,
        *,
        worker_pid: Callable[[], Optional[int]],
        post: Callable[..., None],
        status: Optional[StatusRequests],
        interval: Optional[float] = None,
    ) -> None:
        self.root = root
        self.floor = floor
        self.worker_pid = worker_pid
        self.post = post
        self.status = status
        self.interval = INTERVAL if interval is None else interval
        self.problems: dict[str, str] = {}
        self._failed: Optional[str] = None  # why the last look failed (logged once)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthWatch:
        """Start watching in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (a Manager call in progress finishes on its own)."""
        self._done.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                try:
                    reading = measure(self.root, self.floor, self.worker_pid())
                except OSError as exc:
                    self._fault(f"cannot look at free disk on {self.root}: {exc.strerror}")
                    continue
                self._look(assess(reading, frozenset(self.problems)))
            except Exception as exc:  # noqa: BLE001 (a bug must not end the watching)
                self._fault(f"the health watch failed ({unexpected(exc)}); it looks again later")
                continue
            self._failed = None

    def _fault(self, text: str) -> None:
        """Log a failed look once until a look works again."""
        if self._failed != text:
            log.warning("%s", text)
        self._failed = text

    def _look(self, problems: dict[str, str]) -> None:
        text = "; ".join(problems.values()) or None
        if set(problems) != set(self.problems):
            self._report(text)
        self.problems = problems
        if self.status is not None:
            # Every look: a worker that registered anew or started again gets the
            # request too, and a Manager that was away is asked again.
            self.status.want("health", "asleep" if problems else None)

    def _report(self, text: Optional[str]) -> None:
        changes: dict[str, Any] = {"unfit": text}
        self.post(**changes)
        if text is None:
            log.info("the node is fit again: the worker takes new work again")
        elif self.status is not None:
            log.error(
                "the node is unfit for new work: %s; the worker finishes its current task "
                "and takes no new one (asleep on the Manager) until the node recovers",
                text,
            )
        else:
            log.error(
                "the node is unfit for new work: %s; a v2 worker cannot be taken off new "
                "work: free disk space or memory on the node",
                text,
            )
