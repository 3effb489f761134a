"""What the stand-in Azure Batch service knows: one account's applications, pools and
compute nodes, and the rules the real service applies to the operations
``node-agent fleet`` uses (REST API 2025-06-01). Plain data and plain methods, no
HTTP: ``standins.batch`` serves this as the REST API. A refused operation raises
``BatchRefusal`` with the HTTP status and the error code the real service answers.

Modelled, from Microsoft's REST reference and the azure-batch 15.1.0 docstrings: a
pool resizes, or removes nodes, only while its allocation state is ``steady`` (409
``PoolBeingResized`` otherwise); a resize or a node removal leaves the pool
``resizing`` until Batch has done it, and removing nodes lowers the pool's target by
exactly those nodes; at most 100 nodes per removal; Spot nodes count in
``currentLowPriorityNodes`` even when preempted. Reboot Node and Reimage Node: "only
if it is in an idle or running state"; any other state is refused with 409 and the
documented code closest to it (``NodeBeingCreated``, ``NodeBeingStarted``,
``NodeBeingRebooted``, ``NodeBeingReimaged``, ``NodeStateUnusable``; the .NET SDK's
``BatchErrorCodeStrings`` lists them, which state gets which is our reading), else
``OperationInvalidForCurrentState``. A rebooted or reimaged node comes back with the
pool's application packages as they are then ("Changes to Package references ...
do not affect Compute Nodes that are already in the Pool until they are rebooted or
reimaged", ``BatchPoolUpdateOptions``) and runs its start task again; a reimage wipes
its disk. A pool's package references must name an application of the account and
one of its versions, or none for the application's default version (409
``InvalidApplicationPackageReferences`` otherwise). Changes take effect after
``settle_after`` seconds (0: at the next request), or at ``settle()``. A simulated
pool (``on_node``) is told of each restart, which it finishes itself
(``restarted``), and of each node that joins or leaves the pool.

Not modelled: autoscale formulas (a pool is marked ``auto_scale`` only to be
reported), resize timeouts and errors, dedicated node quotas, jobs and tasks. Which
error a file read of a node that is not up gets is unverified: the same codes as a
reboot.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

MAX_REMOVE = 100  # node ids per removal request
# Node states in which a reboot or reimage is accepted.
RESTARTABLE = ("idle", "running")
# The refusal of a node operation in these states (409); any other state that is not
# allowed gets OperationInvalidForCurrentState.
REFUSALS = {
    "creating": "NodeBeingCreated",
    "starting": "NodeBeingStarted",
    "waitingforstarttask": "NodeBeingStarted",
    "rebooting": "NodeBeingRebooted",
    "reimaging": "NodeBeingReimaged",
    "unusable": "NodeStateUnusable",
}
# Node states in which the node's file system can be read.
UP = ("idle", "running", "starttaskfailed", "unusable", "waitingforstarttask", "offline")


class BatchRefusal(Exception):
    """The service refuses: ``status`` is the HTTP status, ``code`` Batch's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def iso(stamp: float) -> str:
    """A time as Batch writes it: ISO 8601, UTC, milliseconds, with a ``Z``."""
    millis = int(stamp * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{millis:03d}Z"


def new_node_id(dedicated: bool) -> str:
    """A node id of the newer form ``tvmps_<64 hex>_d`` (``_p`` for Spot: that suffix
    is unverified, and nothing in node-agent reads it)."""
    return f"tvmps_{os.urandom(32).hex()}_{'d' if dedicated else 'p'}"


def refuse_in_state(state: str, what: str) -> BatchRefusal:
    """The 409 for an operation on a node in a state that does not allow it."""
    code = REFUSALS.get(state, "OperationInvalidForCurrentState")
    return BatchRefusal(409, code, f"The node cannot be {what} in state {state}.")


@dataclass
class Application:
    """An application of the account: its package versions (each a zip, or None when
    nothing needs the bytes) and its default version."""

    id: str
    versions: dict[str, Optional[Path]] = field(default_factory=dict)
    default_version: Optional[str] = None


@dataclass(frozen=True)
class Deployed:
    """A package as a node got it: its version, and whether the pool referenced it
    without a version (so the node has the unversioned variable too)."""

    version: str
    by_default: bool


@dataclass
class StartTaskInfo:
    """``startTaskInfo``: the start task's last run on the node."""

    state: str = "running"  # running, completed
    exit_code: Optional[int] = None
    retry_count: int = 0
    started: float = field(default_factory=time.time)
    ended: Optional[float] = None

    def document(self) -> dict[str, Any]:
        """The REST document (a failure as Batch reports a non-zero exit)."""
        document: dict[str, Any] = {
            "state": self.state,
            "startTime": iso(self.started),
            "retryCount": self.retry_count,
        }
        if self.state == "completed":
            document.update(exitCode=self.exit_code, endTime=iso(self.ended or self.started))
            document["result"] = "success" if self.exit_code == 0 else "failure"
            if self.exit_code != 0:
                document["failureInfo"] = {
                    "category": "usererror",
                    "code": "FailureExitCode",
                    "message": "The task exited with an exit code representing a failure",
                }
        return document


@dataclass
class ComputeNode:
    """One compute node. ``root`` is its node root on this machine (the file API
    serves it), or None when it has no files to serve."""

    id: str
    pool_id: str
    dedicated: bool
    state: str = "idle"
    root: Optional[Path] = None
    start_task: Optional[StartTaskInfo] = field(default_factory=StartTaskInfo)
    errors: list[dict[str, Any]] = field(default_factory=list)  # ``errors`` (unusable nodes)
    changed: float = field(default_factory=time.time)
    allocated: float = field(default_factory=time.time)
    booted: float = field(default_factory=time.time)  # ``lastBootTime``
    packages: dict[str, Deployed] = field(default_factory=dict)  # application id -> as deployed
    pending: Optional[str] = None  # "reboot", "reimage" or "remove", until it settles

    def set_state(self, state: str) -> None:
        """Enter a state (and stamp the transition)."""
        self.state, self.changed = state, time.time()


@dataclass
class Pool:
    """A pool with fixed target counts (no autoscale formula)."""

    id: str
    vm_size: str = "standard_d4s_v5"
    target_dedicated: int = 0
    target_spot: int = 0
    allocation_state: str = "steady"
    allocation_changed: float = field(default_factory=time.time)
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    auto_scale: bool = False
    start_task: Optional[dict[str, Any]] = None  # ``startTask``, as given
    references: list[dict[str, Any]] = field(default_factory=list)  # applicationPackageReferences
    metadata: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, ComputeNode] = field(default_factory=dict)  # in allocation order

    def count(self, dedicated: bool) -> int:
        """``currentDedicatedNodes`` / ``currentLowPriorityNodes``: nodes in the pool of
        that kind, preempted ones included, leaving ones not."""
        return sum(
            n.dedicated is dedicated and n.state != "leavingpool" for n in self.nodes.values()
        )


def application_name(application_id: str) -> str:
    """The application's name from a reference's id: fully qualified
    (``.../batchAccounts/A/applications/blender``) or bare."""
    return application_id.rstrip("/").rsplit("/applications/", 1)[-1]


class Account:
    """The Batch account's applications and pools, with the service's rules. Not
    thread-safe: the caller locks."""

    def __init__(self, settle_after: float = 0.0) -> None:
        self.pools: dict[str, Pool] = {}
        self.applications: dict[str, Application] = {}
        self.settle_after = settle_after
        # The simulated pool behind the nodes: told ("restart", node) when a node is
        # to be rebooted or reimaged (it calls ``restarted`` once it is up again),
        # ("added", node) when a resize added one and ("removed", node) when one has
        # left. None: a restarted node comes back at the next settling.
        self.on_node: Optional[Callable[[str, ComputeNode], None]] = None
        self._settles_at: Optional[float] = None

    # -- lookups --------------------------------------------------------------

    def pool(self, pool_id: str) -> Pool:
        """A pool; 404 ``PoolNotFound`` for no such pool."""
        self.tick()
        pool = self.pools.get(pool_id)
        if pool is None:
            raise BatchRefusal(404, "PoolNotFound", "The specified pool does not exist.")
        return pool

    def node(self, pool_id: str, node_id: str) -> ComputeNode:
        """A node of a pool; 404 ``NodeNotFound`` for no such node."""
        node = self.pool(pool_id).nodes.get(node_id)
        if node is None:
            raise BatchRefusal(404, "NodeNotFound", "The specified node does not exist.")
        return node

    def read_file(self, pool_id: str, node_id: str, relative: str) -> Path:
        """The file at ``relative`` (to the node root) on a node that is up: 404
        ``FileNotFound`` when there is none, 400 for a path that leaves the root."""
        node = self.node(pool_id, node_id)
        if node.state not in UP:
            raise refuse_in_state(node.state, "read from")
        parts = Path(relative).parts
        if not parts or Path(relative).is_absolute() or ".." in parts:
            raise BatchRefusal(400, "InvalidInput", "The file path is not valid.")
        path = node.root / relative if node.root is not None else None
        if path is None or not path.is_file():
            raise BatchRefusal(404, "FileNotFound", "The specified file does not exist.")
        return path

    def deployment(self, pool: Pool) -> dict[str, Deployed]:
        """The packages a node joining or restarting in ``pool`` gets now."""
        found = {}
        for reference in pool.references:
            name = application_name(str(reference.get("applicationId", "")))
            application = self.applications[name]
            version = reference.get("version")
            chosen = version or application.default_version
            assert chosen is not None  # checked when the references were set
            found[name] = Deployed(chosen, not version)
        return found

    # -- operations -------------------------------------------------------------

    def update(self, pool_id: str, body: dict[str, Any]) -> None:
        """``PATCH /pools/{id}``: the properties given replace the pool's."""
        pool = self.pool(pool_id)
        if "applicationPackageReferences" in body:
            pool.references = self._references(body["applicationPackageReferences"])
        if "startTask" in body:
            if not isinstance(body["startTask"], dict):
                raise BatchRefusal(400, "InvalidPropertyValue", "startTask is not an object.")
            pool.start_task = body["startTask"]
        if "metadata" in body:
            pool.metadata = list(body["metadata"] or [])
        pool.modified = time.time()

    def _references(self, references: Any) -> list[dict[str, Any]]:
        if not isinstance(references, list) or not all(isinstance(r, dict) for r in references):
            raise BatchRefusal(
                400, "InvalidPropertyValue", "applicationPackageReferences is not a list."
            )
        for reference in references:
            name = application_name(str(reference.get("applicationId", "")))
            application = self.applications.get(name)
            version = reference.get("version")
            if (
                application is None
                or (version is not None and version not in application.versions)
                or (version is None and application.default_version is None)
            ):
                raise BatchRefusal(
                    409,
                    "InvalidApplicationPackageReferences",
                    f"One or more of the specified application package references are "
                    f"invalid: {name} {version or '(default version)'}.",
                )
        return [dict(r) for r in references]

    def resize(self, pool_id: str, dedicated: Optional[int], spot: Optional[int]) -> None:
        """``resize``: new targets (an omitted one stays); Batch picks which nodes come
        or go."""
        pool = self._steady(pool_id)
        for value in (dedicated, spot):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise BatchRefusal(400, "InvalidPropertyValue", "A target node count is invalid.")
        if dedicated is not None:
            pool.target_dedicated = dedicated
        if spot is not None:
            pool.target_spot = spot
        self._resizing(pool)

    def remove_nodes(self, pool_id: str, node_ids: Any) -> None:
        """``removenodes``: exactly these nodes leave, and the targets drop by them."""
        pool = self._steady(pool_id)
        if not isinstance(node_ids, list) or not node_ids or len(node_ids) > MAX_REMOVE:
            raise BatchRefusal(
                400, "InvalidPropertyValue", f"nodeList must hold 1 to {MAX_REMOVE} node ids."
            )
        for node_id in node_ids:
            if node_id not in pool.nodes:
                raise BatchRefusal(404, "NodeNotFound", f"The node {node_id} does not exist.")
        for node_id in dict.fromkeys(node_ids):
            node = pool.nodes[node_id]
            node.set_state("leavingpool")
            node.pending = "remove"
            if node.dedicated:
                pool.target_dedicated = max(0, pool.target_dedicated - 1)
            else:
                pool.target_spot = max(0, pool.target_spot - 1)
        self._resizing(pool)

    def restart(self, pool_id: str, node_id: str, how: str) -> None:
        """``reboot`` or ``reimage`` a node (only an idle or running one)."""
        node = self.node(pool_id, node_id)
        if node.state not in RESTARTABLE:
            raise refuse_in_state(node.state, f"{how}ed")
        node.set_state("rebooting" if how == "reboot" else "reimaging")
        node.pending = how
        if self.on_node is not None:
            self.on_node("restart", node)
        else:
            self._later()

    def restarted(self, node: ComputeNode) -> None:
        """A rebooted or reimaged node is up again: it runs its start task, with the
        pool's packages as they are now."""
        if node.pending == "reimage" and self.on_node is None:
            node.root = None  # a new OS disk: the node's files are gone
        node.set_state("idle")
        node.errors = []
        node.start_task = StartTaskInfo()
        node.booted = time.time()
        node.packages = self.deployment(self.pools[node.pool_id])
        node.pending = None

    def add(self, pool: Pool, node: ComputeNode) -> ComputeNode:
        """A node joins: it gets the pool's packages."""
        node.packages = self.deployment(pool)
        pool.nodes[node.id] = node
        return node

    # -- time -------------------------------------------------------------------

    def tick(self) -> None:
        """Apply pending changes whose time has come."""
        if self._settles_at is not None and time.time() >= self._settles_at:
            self.settle()

    def settle(self) -> None:
        """Finish every pending change now: restarted nodes come back running their
        start task (unless a simulated pool brings them back), removed nodes are
        gone, pools reach their targets."""
        self._settles_at = None
        for pool in self.pools.values():
            for node in list(pool.nodes.values()):
                if node.pending == "remove":
                    self._gone(pool, node)
                elif node.pending in ("reboot", "reimage") and self.on_node is None:
                    self.restarted(node)
            if pool.allocation_state == "steady":
                continue
            for dedicated, target in ((True, pool.target_dedicated), (False, pool.target_spot)):
                kind = [n for n in pool.nodes.values() if n.dedicated is dedicated]
                for node in kind[target:]:  # a resize down: Batch picks (here the newest)
                    self._gone(pool, node)
                for _ in range(target - len(kind)):
                    node = self.add(pool, ComputeNode(new_node_id(dedicated), pool.id, dedicated))
                    if self.on_node is not None:
                        self.on_node("added", node)
            pool.allocation_state, pool.allocation_changed = "steady", time.time()

    def _gone(self, pool: Pool, node: ComputeNode) -> None:
        del pool.nodes[node.id]
        if self.on_node is not None:
            self.on_node("removed", node)

    def _steady(self, pool_id: str) -> Pool:
        pool = self.pool(pool_id)
        if pool.allocation_state != "steady":
            raise BatchRefusal(
                409,
                "PoolBeingResized",
                "The pool is being resized; wait until its allocation state is steady.",
            )
        return pool

    def _resizing(self, pool: Pool) -> None:
        pool.allocation_state, pool.allocation_changed = "resizing", time.time()
        pool.modified = time.time()
        self._later()

    def _later(self) -> None:
        if self._settles_at is None:
            self._settles_at = time.time() + self.settle_after
