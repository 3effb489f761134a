"""What ``fleet`` observes of a pool and its Manager, and how a node's worker is
found on the Manager. Pure: frozen data and functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

from node_agent.fleet.agentfile import AgentView
from node_agent.fleet.times import seconds
from node_agent.manager.api import ManagerWorker
from node_agent.node.layout import default_worker_name

# Where fleet reads a node's state file through Batch's file API: relative to the
# node root, under the shared dir where Batch puts it (``<root>/shared``). A pool whose
# nodes have their shared dir elsewhere gives ``--state-path``.
STATE_PATH = "shared/.node-agent/state.json"
# The list of worker ids a node's worker has held, beside the state file.
WORKER_IDS = "worker-ids"
# Worker statuses of a worker that runs no task and will not get one.
GONE = ("offline", "error", "")
# Worker statuses of a worker that takes tasks (or would, when woken).
READY = ("awake", "asleep")
# The start task setting that gives new workers their tags (docs/settings.md).
TAGS_SETTING = "FLAMENCO_WORKER_TAGS"


@dataclass(frozen=True)
class PackageRef:
    """One of the pool's ``applicationPackageReferences`` (no version: the
    application's default)."""

    application_id: str
    version: Optional[str] = None

    @property
    def name(self) -> str:
        """The application's name (the last part of a fully qualified id)."""
        return self.application_id.rstrip("/").rsplit("/applications/", 1)[-1]


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
    references: tuple[PackageRef, ...] = ()
    start_command: str = ""  # the start task's command line
    start_settings: Mapping[str, str] = field(default_factory=dict)  # its environment

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
    started: Optional[float] = None  # Unix time

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
    booted: Optional[float] = None  # ``lastBootTime``, Unix time

    @property
    def kind(self) -> str:
        """``dedicated`` or ``Spot``."""
        return "dedicated" if self.dedicated else "Spot"


@dataclass(frozen=True)
class AgentRead:
    """A node's own files, read through Batch's file API: its state file (or why it
    could not be read) and the worker ids its worker has held (None: not read)."""

    state: Optional[AgentView] = None
    error: Optional[str] = None  # None with no state: it was not read
    worker_ids: Optional[frozenset[str]] = None


@dataclass(frozen=True)
class TaskRead:
    """A task as the jobs API summarises it (``TaskSummary``)."""

    id: str
    name: str
    status: str
    type: str
    index: int  # index_in_job
    worker_id: Optional[str] = None  # the worker it was last handed to


@dataclass(frozen=True)
class JobRead:
    """A job, its tasks, and who is blocklisted for which of its task types."""

    id: str
    name: str
    status: str
    tag_id: Optional[str]  # only workers with this tag get its tasks
    tasks: tuple[TaskRead, ...] = ()
    blocklist: frozenset[tuple[str, str]] = frozenset()  # (worker id, task type)


@dataclass(frozen=True)
class QueueRead:
    """The Manager's queue as fleet read it: the jobs that can still run a task, and
    what it needed to know of tags (only when a job has one)."""

    jobs: tuple[JobRead, ...]
    worker_tags: Mapping[str, frozenset[str]] = field(default_factory=dict)  # id -> tag ids
    pool_tags: frozenset[str] = frozenset()  # tag ids the pool's start task gives new workers

    @cached_property
    def running(self) -> dict[str, str]:
        """Worker id -> the name of the task it runs (an active task, in whatever job:
        a paused or canceled job's task runs to its end)."""
        return {
            t.worker_id: t.name
            for job in self.jobs
            for t in job.tasks
            if t.status == "active" and t.worker_id
        }


@dataclass(frozen=True)
class Snapshot:
    """One look at the pool and its Manager."""

    pool: PoolView
    nodes: tuple[NodeView, ...]
    agents: Mapping[str, AgentRead]  # node id -> its files
    workers: Optional[tuple[ManagerWorker, ...]]  # None: not asked, or no answer
    queue: Optional[QueueRead]  # None: not asked, or no answer
    manager_problem: Optional[str] = None  # why the Manager part is missing
    now: float = 0.0  # when the look was taken (Unix time)
    manager_asked: bool = True  # False: no Manager URL was given

    def busy(self, worker: Optional[ManagerWorker]) -> Optional[str]:
        """The task this worker runs, if any."""
        if worker is None or self.queue is None:
            return None
        return self.queue.running.get(worker.id)


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


def shared_names(
    pool_id: str, nodes: Iterable[NodeView], agents: Mapping[str, AgentRead]
) -> dict[str, int]:
    """Names more than one node's worker has (an operator's ``worker_name`` the
    same on every node): how many nodes claim each."""
    claims: dict[str, int] = {}
    for node in nodes:
        for name in expected_names(pool_id, node, agents.get(node.id)):
            claims[name] = claims.get(name, 0) + 1
    return {name: count for name, count in claims.items() if count > 1}


@dataclass(frozen=True)
class WorkerMatch:
    """Each node's current worker on the Manager, and the nodes whose worker cannot
    be told apart from another node's (never acted on)."""

    workers: Mapping[str, Optional[ManagerWorker]]  # node id -> its worker (None: none known)
    unknown: Mapping[str, str]  # node id -> why its worker cannot be told

    def of(self, node_id: str) -> Optional[ManagerWorker]:
        """The node's worker (None: no entry, or not to be told)."""
        return self.workers.get(node_id)


def node_workers(
    pool_id: str,
    nodes: Iterable[NodeView],
    agents: Mapping[str, AgentRead],
    workers: Iterable[ManagerWorker],
) -> WorkerMatch:
    """Each node's current worker on the Manager. A name only one node has is that
    node's; of a name several nodes share, a node's entries are those whose ids its
    ``worker-ids`` file lists, and without that list its worker cannot be told."""
    listed = tuple(nodes)
    by_name: dict[str, list[ManagerWorker]] = {}
    for worker in workers:
        by_name.setdefault(worker.name, []).append(worker)
    shared = shared_names(pool_id, listed, agents)
    found: dict[str, Optional[ManagerWorker]] = {}
    unknown: dict[str, str] = {}
    for node in listed:
        agent = agents.get(node.id)
        ids = agent.worker_ids if agent is not None else None
        entries: list[ManagerWorker] = []
        for name in expected_names(pool_id, node, agent):
            if name not in shared:
                entries += by_name.get(name, ())
            elif ids is not None:
                entries += [w for w in by_name.get(name, ()) if w.id in ids]
            elif by_name.get(name):
                unknown[node.id] = (
                    f"{shared[name]} nodes' workers are named {name!r} and its worker-ids "
                    "file could not be read: its worker cannot be told from theirs"
                )
        found[node.id] = None if node.id in unknown else current_entry(entries)
    owners: dict[str, list[str]] = {}
    for node_id, entry in found.items():
        if entry is not None:
            owners.setdefault(entry.id, []).append(node_id)
    for worker_id, claimants in owners.items():
        if len(claimants) > 1:
            for node_id in claimants:
                found[node_id] = None
                unknown[node_id] = f"worker {worker_id} is claimed by {len(claimants)} nodes"
    return WorkerMatch(found, unknown)
