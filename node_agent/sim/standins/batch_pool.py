"""What the stand-in Azure Batch service knows: one account's pools and their compute
nodes, and the rules the real service applies to the operations ``node-agent fleet``
uses (REST API 2025-06-01). Plain data and plain methods, no HTTP:
``standins.batch`` serves this as the REST API. A refused operation raises
``BatchRefusal`` with the HTTP status and the error code the real service answers.

Modelled, from Microsoft's REST reference: a pool resizes, or removes nodes, only
while its allocation state is ``steady`` (409 otherwise; ``PoolBeingResized``); a
resize or a node removal leaves the pool ``resizing`` until Batch has done it, and
removing nodes lowers the pool's target by exactly those nodes; at most 100 nodes per
removal; Spot nodes count in ``currentLowPriorityNodes`` even when preempted;
rebooting or reimaging puts a node in ``rebooting``/``reimaging``, after which its
start task runs again (a reimage wipes its disk: its files are gone). Changes take
effect after ``settle_after`` seconds (0: at the next request), or at ``settle()``.

Where the documentation is silent or contradicts practice (said at each): a reboot or
reimage is accepted for nodes that are ``idle``, ``running``, ``starttaskfailed`` or
``unusable`` (the reference says "idle or running"; Batch Explorer offers both for
failed nodes); other states get 409 ``OperationInvalidForCurrentState``; files of a
node that is not up get 409 ``NodeNotReady``. Not modelled: autoscale formulas,
resize timeouts and errors, dedicated node quotas, jobs and tasks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MAX_REMOVE = 100  # node ids per removal request
# Node states in which a reboot or reimage is accepted (see the module docstring).
RESTARTABLE = ("idle", "running", "starttaskfailed", "unusable")
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
    """A time as Batch writes it: ISO 8601, UTC, with a ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp))


def new_node_id(dedicated: bool) -> str:
    """A node id of the newer form ``tvmps_<64 hex>_d`` (``_p`` for Spot: that suffix
    is unverified, and nothing in node-agent reads it)."""
    return f"tvmps_{os.urandom(32).hex()}_{'d' if dedicated else 'p'}"


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
    nodes: dict[str, ComputeNode] = field(default_factory=dict)  # in allocation order

    def count(self, dedicated: bool) -> int:
        """``currentDedicatedNodes`` / ``currentLowPriorityNodes``: nodes in the pool of
        that kind, preempted ones included, leaving ones not."""
        return sum(
            n.dedicated is dedicated and n.state != "leavingpool" for n in self.nodes.values()
        )


class Account:
    """The Batch account's pools, with the service's rules. Not thread-safe: the
    caller locks."""

    def __init__(self, settle_after: float = 0.0) -> None:
        self.pools: dict[str, Pool] = {}
        self.settle_after = settle_after
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
            raise BatchRefusal(409, "NodeNotReady", f"The node is in state {node.state}.")
        parts = Path(relative).parts
        if not parts or Path(relative).is_absolute() or ".." in parts:
            raise BatchRefusal(400, "InvalidInput", "The file path is not valid.")
        path = node.root / relative if node.root is not None else None
        if path is None or not path.is_file():
            raise BatchRefusal(404, "FileNotFound", "The specified file does not exist.")
        return path

    # -- operations -------------------------------------------------------------

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
        """``reboot`` or ``reimage`` a node."""
        node = self.node(pool_id, node_id)
        if node.state not in RESTARTABLE:
            raise BatchRefusal(
                409,
                "OperationInvalidForCurrentState",
                f"The node cannot be {how}ed in state {node.state}.",
            )
        node.set_state("rebooting" if how == "reboot" else "reimaging")
        node.pending = how
        self._later()

    # -- time -------------------------------------------------------------------

    def tick(self) -> None:
        """Apply pending changes whose time has come."""
        if self._settles_at is not None and time.time() >= self._settles_at:
            self.settle()

    def settle(self) -> None:
        """Finish every pending change now: restarted nodes come back running their
        start task, removed nodes are gone, pools reach their targets."""
        self._settles_at = None
        for pool in self.pools.values():
            for node in list(pool.nodes.values()):
                self._finish(pool, node)
            if pool.allocation_state == "steady":
                continue
            for dedicated, target in ((True, pool.target_dedicated), (False, pool.target_spot)):
                kind = [n for n in pool.nodes.values() if n.dedicated is dedicated]
                for node in kind[target:]:  # a resize down: Batch picks (here the newest)
                    del pool.nodes[node.id]
                for _ in range(target - len(kind)):
                    node = ComputeNode(new_node_id(dedicated), pool.id, dedicated)
                    pool.nodes[node.id] = node
            pool.allocation_state, pool.allocation_changed = "steady", time.time()

    def _finish(self, pool: Pool, node: ComputeNode) -> None:
        if node.pending == "remove":
            del pool.nodes[node.id]
        elif node.pending in ("reboot", "reimage"):
            if node.pending == "reimage":
                node.root = None  # a new OS disk: the node's files are gone
            node.set_state("idle")
            node.errors = []
            node.start_task = StartTaskInfo()
            node.pending = None

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
        self._later()

    def _later(self) -> None:
        if self._settles_at is None:
            self._settles_at = time.time() + self.settle_after
