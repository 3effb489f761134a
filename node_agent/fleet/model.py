"""What ``fleet`` observes of a pool and its Manager, and how a node's worker is
found on the Manager. Pure: frozen data and functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from node_agent.manager.api import ManagerWorker
from node_agent.node.layout import default_worker_name
from node_agent.runtime.state import AgentState

# Where fleet reads a node's state file through Batch's file API: relative to the
# node root, under the shared dir where Batch puts it (``<root>/shared``). A pool whose
# nodes have their shared dir elsewhere gives ``--state-path``.
STATE_PATH = "shared/.node-agent/state.json"
# Worker statuses of a worker that runs no task and will not get one.
GONE = ("offline", "error", "")
# Worker statuses of a worker that takes tasks (or would, when woken).
READY = ("awake", "asleep")
# RFC 3339 as Go writes it: a fraction of up to nine digits, ``Z`` or an offset.
_RFC3339 = re.compile(r"(.{19})(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class PoolView:
    """The pool as Batch reports it."""

    id: str
    allocation_state: str  # steady, resizing, stopping
    target_dedicated: int
    target_spot: int
    current_dedicated: int
    current_spot: int
    auto_scale: bool

    @property
    def steady(self) -> bool:
        """Whether Batch accepts a resize or a node removal now."""
        return self.allocation_state == "steady"


@dataclass(frozen=True)
class StartTaskView:
    """The start task's last run on a node (``startTaskInfo``)."""

    state: Optional[str] = None  # running, completed; None: it has not run yet
    exit_code: Optional[int] = None
    failure: Optional[str] = None  # Batch's failure message, when it counts one
    retries: int = 0

    @property
    def failed(self) -> bool:
        """Whether it ended with a failure (node-agent runs for the node's whole life:
        its start task ends only when it stops, 0 when it was asked to)."""
        return self.state == "completed" and (self.exit_code != 0 or self.failure is not None)


@dataclass(frozen=True)
class NodeView:
    """A compute node as Batch reports it."""

    id: str
    dedicated: bool
    state: str  # idle, running, unusable, starttaskfailed, preempted, ...
    start_task: StartTaskView = StartTaskView()
    errors: tuple[str, ...] = ()  # Batch's node errors (why it is unusable)

    @property
    def kind(self) -> str:
        """``dedicated`` or ``Spot``."""
        return "dedicated" if self.dedicated else "Spot"


@dataclass(frozen=True)
class AgentRead:
    """A node's state file, read through Batch's file API: the state, or why not."""

    state: Optional[AgentState] = None
    error: Optional[str] = None  # None with no state: it was not read


@dataclass(frozen=True)
class Queue:
    """The Manager's queue: tasks waiting or running, and who runs what."""

    demand: int  # queued, soft-failed and active tasks of queued and active jobs
    busy: Mapping[str, str]  # worker id -> name of the task it runs


@dataclass(frozen=True)
class Snapshot:
    """One look at the pool and its Manager."""

    pool: PoolView
    nodes: tuple[NodeView, ...]
    agents: Mapping[str, AgentRead]  # node id -> its state file
    workers: Optional[tuple[ManagerWorker, ...]]  # None: not asked, or no answer
    queue: Optional[Queue]  # None: not asked, or no answer
    manager_problem: Optional[str] = None  # why the Manager part is missing

    def busy(self, worker: Optional[ManagerWorker]) -> Optional[str]:
        """The task this worker runs, if any."""
        if worker is None or self.queue is None:
            return None
        return self.queue.busy.get(worker.id)


def seconds(stamp: Optional[str]) -> Optional[float]:
    """An RFC 3339 time from the Manager as a Unix time (None: none, or unreadable)."""
    match = _RFC3339.fullmatch(stamp or "")
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    fraction = (match.group(2) or "0")[:6]
    try:
        return datetime.fromisoformat(f"{match.group(1)}.{fraction:0<6}{zone}").timestamp()
    except ValueError:
        return None


def expected_names(pool_id: str, node: NodeView, agent: Optional[AgentRead]) -> tuple[str, ...]:
    """The names a node's worker has: the default one, and the one its state file
    names (an operator's ``worker_name`` setting)."""
    names = [default_worker_name(pool_id, node.id, node.id)]
    if agent is not None and agent.state is not None and agent.state.worker_name:
        names.append(agent.state.worker_name)
    return tuple(dict.fromkeys(names))


def current_entry(entries: Iterable[ManagerWorker]) -> Optional[ManagerWorker]:
    """Of the Manager's entries with one node's worker name, the node's current
    worker: a live one before a gone one, then the one seen last, then the one
    registered last (the Manager lists them in registration order)."""
    best: Optional[tuple[tuple[bool, float, int], ManagerWorker]] = None
    for index, worker in enumerate(entries):
        key = (worker.status not in GONE, seconds(worker.last_seen) or 0.0, index)
        if best is None or key > best[0]:
            best = (key, worker)
    return None if best is None else best[1]


def node_workers(
    pool_id: str,
    nodes: Iterable[NodeView],
    agents: Mapping[str, AgentRead],
    workers: Iterable[ManagerWorker],
) -> dict[str, Optional[ManagerWorker]]:
    """Each node's current worker on the Manager (None: it has no entry)."""
    by_name: dict[str, list[ManagerWorker]] = {}
    for worker in workers:
        by_name.setdefault(worker.name, []).append(worker)

    def entries(node: NodeView) -> list[ManagerWorker]:
        names = expected_names(pool_id, node, agents.get(node.id))
        return [w for name in names for w in by_name.get(name, ())]

    return {node.id: current_entry(entries(node)) for node in nodes}
