"""``fleet status``: one row per node, joining what Batch says of it, what its own
state file says, and its worker's entry on the Manager; a summary; as text or JSON.
Pure: a snapshot (and the time) in, rows and text out."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Optional

from node_agent.common.redact import printable
from node_agent.fleet.cleanup import Repair, Stale, repair_for, stale_workers
from node_agent.fleet.model import (
    READY,
    AgentRead,
    NodeView,
    Snapshot,
    expected_names,
    node_workers,
    seconds,
)
from node_agent.manager.api import ManagerWorker
from node_agent.runtime.state import Phase

SCHEMA = 1
# Batch states of a node on its way into service.
STARTING = ("creating", "starting", "waitingforstarttask", "rebooting", "reimaging", "upgradingos")
# The summary's order.
HEALTHS = (
    "rendering",
    "idle",
    "failed",
    "crash-looping",
    "held",
    "unfit",
    "preempted",
    "starting",
    "offline",
    "leaving",
    "unknown",
)


@dataclass(frozen=True)
class Row:
    """One node, joined."""

    node: NodeView
    agent: AgentRead
    worker_name: str
    worker: Optional[ManagerWorker]
    task: Optional[str]  # the task its worker runs
    repair: Optional[Repair]  # what heal would do
    health: str  # one of HEALTHS


@dataclass(frozen=True)
class Status:
    """The whole pool."""

    snapshot: Snapshot
    rows: tuple[Row, ...]
    stale: tuple[Stale, ...]

    def count(self, health: str) -> int:
        """Nodes of this health."""
        return sum(r.health == health for r in self.rows)


def _health(row: Row) -> str:
    node, state = row.node, row.agent.state
    if node.state == "preempted":
        return "preempted"
    if node.state == "leavingpool":
        return "leaving"
    if row.repair is not None:
        return "failed"
    if row.task is not None:
        return "rendering"
    if state is not None and state.crash_loop:
        return "crash-looping"
    # The agent keeps the worker stopped until a platform event happens or is called
    # off: neither idle nor offline, and nothing for heal to do.
    if state is not None and state.phase == Phase.WAITING_FOR_PLATFORM:
        return "held"
    if state is not None and state.unfit is not None:
        return "unfit"
    if row.worker is not None and row.worker.status in READY:
        return "idle"
    if node.state in STARTING or node.start_task.state in (None, "running"):
        return "starting"
    if row.worker is not None:
        return "offline"
    return "unknown"


def join(snapshot: Snapshot) -> Status:
    """Every node's row, and the Manager's stale entries of this pool."""
    pool_id = snapshot.pool.id
    workers = node_workers(pool_id, snapshot.nodes, snapshot.agents, snapshot.workers or ())
    rows = []
    for node in snapshot.nodes:
        agent = snapshot.agents.get(node.id, AgentRead())
        worker = workers[node.id]
        row = Row(
            node=node,
            agent=agent,
            worker_name=expected_names(pool_id, node, agent)[-1],
            worker=worker,
            task=snapshot.busy(worker),
            repair=repair_for(node, agent),
            health="",
        )
        rows.append(replace(row, health=_health(row)))
    return Status(snapshot, tuple(rows), tuple(stale_workers(snapshot)))


def summary(status: Status) -> str:
    """One line: the nodes by health, the stale entries, the unreadable files."""
    pool, rows = status.snapshot.pool, status.rows
    dedicated = sum(r.node.dedicated for r in rows)
    counts = ", ".join(f"{status.count(h)} {h}" for h in HEALTHS if status.count(h))
    line = (
        f"pool {pool.id}: {len(rows)} nodes ({dedicated} dedicated, {len(rows) - dedicated} "
        f"Spot; target {pool.target_dedicated} + {pool.target_spot}, {pool.allocation_state})"
        + (f": {counts}" if counts else "")
    )
    if status.snapshot.workers is None:
        line += f"; Manager unknown ({status.snapshot.manager_problem})"
    else:
        line += f"; {len(status.stale)} stale worker(s) on the Manager"
    unreadable = sum(r.agent.error is not None for r in rows)
    if unreadable:
        line += f"; {unreadable} node(s) with an unreadable state file"
    return line


def _ago(stamp: Optional[str], now: float) -> str:
    when = seconds(stamp)
    if when is None:
        return "never seen"
    return f"seen {max(0, int(now - when))} s ago"


def _cells(row: Row, now: float, manager_known: bool) -> list[str]:
    start = row.node.start_task
    if start.state is None:
        start_text = "-"
    elif start.state == "completed":
        start_text = ("FAILED " if start.failed else "") + f"exit {start.exit_code}"
    else:
        start_text = start.state
    if start.retries:
        start_text += f" ({start.retries} retries)"
    state = row.agent.state
    if state is not None:
        agent_text = state.phase
        restarts = f"{state.restarts}" + (" CRASH LOOP" if state.crash_loop else "")
        last_exit = "-" if state.last_exit_code is None else str(state.last_exit_code)
    else:
        agent_text = "unreadable" if row.agent.error is not None else "-"
        restarts = last_exit = "-"
    if not manager_known:
        manager = "?"
    elif row.worker is None:
        manager = "no entry"
    else:
        manager = f"{row.worker.status or 'never signed on'}, {_ago(row.worker.last_seen, now)}"
        if row.worker.requested:
            manager += f", asked: {row.worker.requested}" + (" lazily" if row.worker.lazy else "")
    cells = [
        row.node.id,
        row.node.kind,
        row.node.state,
        start_text,
        agent_text,
        restarts,
        last_exit,
        row.worker_name,
        manager,
        row.task or "-",
        row.health,
    ]
    return [printable(c) for c in cells]


# The state file's fields ``status --json`` shows (the rest are the node's business).
AGENT_FIELDS = (
    "phase",
    "restarts",
    "crash_loop",
    "last_exit_code",
    "last_exit_reason",
    "last_exit_at",
    "worker_name",
    "stop_reason",
    "platform_event",
    "unfit",
    "updated_at",
)
HEADER = (
    "NODE",
    "KIND",
    "BATCH",
    "START TASK",
    "AGENT",
    "RESTARTS",
    "LAST EXIT",
    "WORKER",
    "MANAGER",
    "TASK",
    "HEALTH",
)


def render(status: Status, now: Optional[float] = None) -> str:
    """The table, the notes under it (unreadable files, repairs, stale entries),
    and the summary line."""
    now = time.time() if now is None else now
    known = status.snapshot.workers is not None
    table = [list(HEADER), *(_cells(r, now, known) for r in status.rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    for row in status.rows:
        if row.agent.error is not None:
            lines.append(f"unreadable: {row.node.id}: {printable(row.agent.error)}")
        if row.repair is not None:
            lines.append(f"failed: {row.node.id}: {row.repair.reason} (heal: {row.repair.action})")
        state = row.agent.state
        if row.health == "held" and state is not None:
            event = printable(state.platform_event or "a platform event")
            lines.append(f"held: {row.node.id}: the worker is stopped for {event}")
        if state is not None and state.unfit is not None:
            lines.append(f"unfit: {row.node.id}: {printable(state.unfit)}")
    for stale in status.stale:
        worker = stale.worker
        lines.append(f"stale: worker {worker.id} {printable(worker.name)}: {stale.reason}")
    lines.append(summary(status))
    return "\n".join(lines)


def document(status: Status) -> dict[str, Any]:
    """The JSON document of ``fleet status --json`` (shape: README)."""
    pool = status.snapshot.pool

    def worker(w: Optional[ManagerWorker]) -> Optional[dict[str, Any]]:
        if w is None:
            return None
        return {
            "id": w.id,
            "name": w.name,
            "status": w.status,
            "last_seen": w.last_seen,
            "requested": w.requested,
            "lazy": w.lazy,
        }

    def agent(read: AgentRead) -> Optional[dict[str, Any]]:
        state = read.state
        if state is None:
            return None
        return {key: getattr(state, key) for key in AGENT_FIELDS}

    return {
        "schema": SCHEMA,
        "pool": {
            "id": pool.id,
            "allocation_state": pool.allocation_state,
            "target_dedicated": pool.target_dedicated,
            "target_spot": pool.target_spot,
            "current_dedicated": pool.current_dedicated,
            "current_spot": pool.current_spot,
        },
        "summary": {h: status.count(h) for h in HEALTHS},
        "nodes": [
            {
                "id": r.node.id,
                "dedicated": r.node.dedicated,
                "state": r.node.state,
                "start_task": {
                    "state": r.node.start_task.state,
                    "exit_code": r.node.start_task.exit_code,
                    "failure": r.node.start_task.failure,
                    "retries": r.node.start_task.retries,
                },
                "errors": list(r.node.errors),
                "agent": agent(r.agent),
                "agent_error": r.agent.error,
                "worker_name": r.worker_name,
                "worker": worker(r.worker),
                "task": r.task,
                "health": r.health,
                "repair": None
                if r.repair is None
                else {"action": r.repair.action, "reason": r.repair.reason},
            }
            for r in status.rows
        ],
        "stale_workers": [
            {**(worker(s.worker) or {}), "reason": s.reason, "removable": s.removable}
            for s in status.stale
        ],
        "manager_problem": status.snapshot.manager_problem,
    }
