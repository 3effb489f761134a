"""What ``fleet prune`` and ``fleet heal`` would do, and why. Pure: a snapshot in,
decisions out.

Prune: the Manager keeps an entry for every worker that ever registered. Entries of
this pool's workers (by node-agent's naming, ``<pool>-<short node id>``) whose node
is gone, and entries that duplicate a node's current worker (a worker that
re-registered leaves its old entry behind), are stale. Only ``offline`` and
``error`` ones are removed: a live entry may still be working, and the Manager
marks a vanished worker ``error`` within a minute.

Heal asks Batch only for what it allows in the node's state (REST API 2025-06-01,
azure-batch 15.1.0 docstrings): Reboot Node "only if it is in an idle or running
state"; Reimage Node likewise, and "only on Pools created with the cloud service
configuration property", which the API no longer has; Remove Nodes states no
node-state condition (the pool must be ``steady``). Per cause:

- a node whose start task failed while it is ``idle`` or ``running`` (with
  ``waitForSuccess: false`` an idle, billed node whose ``startTaskInfo`` says so,
  node-agent's giving up included) is **rebooted**: the start task runs again on
  the same disk, so the worker keeps its identity and no package is downloaded
  again, and what stopped node-agent (a Manager or storage that did not come, a
  crash loop) is usually gone by then;
- a node Batch marks ``unusable`` (a package that failed to download or unzip, a
  full disk, a VM fault), or ``starttaskfailed`` (``waitForSuccess: true``), can be
  neither rebooted nor reimaged: it is **removed**, and the pool is resized back
  to its targets so that Batch allocates a fresh node in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from node_agent.fleet.model import (
    GONE,
    AgentRead,
    NodeView,
    Snapshot,
    current_entry,
    expected_names,
    node_workers,
    shared_names,
)
from node_agent.manager.api import ManagerWorker
from node_agent.node.layout import is_default_worker_name

PRUNABLE = ("offline", "error")  # the only statuses prune removes


@dataclass(frozen=True)
class Stale:
    """A stale worker entry: why it is stale, and whether prune removes it."""

    worker: ManagerWorker
    reason: str
    removable: bool


@dataclass(frozen=True)
class Repair:
    """What heal does to a node, and why."""

    node_id: str
    action: str  # reboot, remove
    reason: str
    dedicated: bool = False


@dataclass(frozen=True)
class Skip:
    """A node heal would repair but leaves, and why."""

    node_id: str
    reason: str


def _stale(worker: ManagerWorker, why: str) -> Stale:
    if worker.status in PRUNABLE:
        return Stale(worker, why, True)
    status = worker.status or "never signed on"
    return Stale(worker, f"{why}; left: it is {status} (only offline and error are removed)", False)


def stale_workers(snapshot: Snapshot) -> list[Stale]:
    """The Manager's stale entries of this pool's workers (none without workers)."""
    pool_id = snapshot.pool.id
    by_name: dict[str, list[ManagerWorker]] = {}
    for worker in snapshot.workers or ():
        by_name.setdefault(worker.name, []).append(worker)
    claimed = {
        name
        for node in snapshot.nodes
        for name in expected_names(pool_id, node, snapshot.agents.get(node.id))
    }
    # A name several nodes share (an operator's worker_name) says nothing of whose an
    # entry is: its entries are left alone.
    owned = claimed - set(shared_names(pool_id, snapshot.nodes, snapshot.agents))
    found = []
    for name, entries in by_name.items():
        if name in owned:
            current = current_entry(entries)
            assert current is not None
            for worker in entries:
                if worker is not current and worker.status in GONE:
                    why = f"a duplicate of {name}'s current entry {current.id}"
                    found.append(_stale(worker, why))
        elif is_default_worker_name(pool_id, name):
            found.extend(_stale(w, f"its node is no longer in pool {pool_id}") for w in entries)
    return found


# Node states in which Batch reboots a node.
REBOOTABLE = ("idle", "running")


def repair_for(node: NodeView, agent: Optional[AgentRead]) -> Optional[Repair]:
    """What a failed node needs (None: it has not failed)."""
    if node.state == "unusable":
        errors = "; ".join(node.errors) or "Batch gives no reason"
        why = f"Batch marks it unusable ({errors}); Batch restarts only idle or running nodes"
        return Repair(node.id, "remove", why, node.dedicated)
    start = node.start_task
    if node.state == "starttaskfailed" or (start.failed and node.state in REBOOTABLE):
        state = agent.state if agent is not None else None
        if state is not None and state.crash_loop:
            why = f"the worker crash-looped; last exit: {state.last_exit_reason}"
            reason = f"node-agent gave up ({why})"
        else:
            exit_code = "-" if start.exit_code is None else str(start.exit_code)
            detail = f": {start.failure}" if start.failure else ""
            reason = f"its start task failed (exit {exit_code}{detail})"
        if node.state in REBOOTABLE:
            return Repair(node.id, "reboot", reason, node.dedicated)
        why = f"{reason}; Batch reboots only idle or running nodes, not {node.state} ones"
        return Repair(node.id, "remove", why, node.dedicated)
    return None


def heal(snapshot: Snapshot) -> tuple[list[Repair], list[Skip]]:
    """The failed nodes' repairs, and the failed nodes left alone (a node whose
    worker still runs a task is never rebooted or removed)."""
    match = node_workers(snapshot.pool.id, snapshot.nodes, snapshot.agents, snapshot.workers or ())
    repairs, skipped = [], []
    for node in snapshot.nodes:
        repair = repair_for(node, snapshot.agents.get(node.id))
        if repair is None:
            continue
        task = snapshot.busy(match.of(node.id))
        if task is not None:
            skipped.append(Skip(node.id, f"its worker still runs task {task!r}; heal it after"))
        elif snapshot.queue is None and node.state == "unusable":
            # A failed start task took node-agent and its worker with it; an unusable
            # node may still be running one.
            why = "the Manager did not say whether its worker still runs a task"
            skipped.append(Skip(node.id, f"{repair.reason}; left: {why}"))
        elif node.id in match.unknown and node.state == "unusable":
            why = f"{match.unknown[node.id]}, so whether it renders is unknown"
            skipped.append(Skip(node.id, f"{repair.reason}; left: {why}"))
        else:
            repairs.append(repair)
    return repairs, skipped
