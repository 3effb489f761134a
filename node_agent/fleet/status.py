"""``fleet status``: one row per node, joining what Batch says of it, what its own
state file says, and its worker's entry on the Manager; a summary; whether some node
needs attention; as text or JSON. Pure: a snapshot in, rows and text out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from node_agent.common.redact import printable
from node_agent.fleet.agentfile import AgentView
from node_agent.fleet.cleanup import Repair, Stale, repair_for, stale_workers
from node_agent.fleet.model import (
    READY,
    AgentRead,
    NodeView,
    Snapshot,
    expected_names,
    node_workers,
)
from node_agent.fleet.times import iso, seconds
from node_agent.manager.api import ManagerWorker
from node_agent.node.layout import default_worker_name

SCHEMA = 2  # the JSON document's shape (docs/fleet.md)
# Batch states of a node on its way into service.
STARTING = ("creating", "starting", "waitingforstarttask", "rebooting", "reimaging", "upgradingos")
# Batch states of a node that is up: its agent and worker should be running.
UP = ("idle", "running")
# Seconds a new run of the start task has to write its state file before an older
# file counts as stale.
FIRST_WRITE = 120.0
# The summary's order.
HEALTHS = (
    "rendering",
    "idle",
    "failed",
    "crash-looping",
    "stale",
    "held",
    "unfit",
    "preempted",
    "starting",
    "offline",
    "leaving",
    "unknown",
)
# Healths that need the operator (exit code EXIT_ATTENTION): heal's work, a worker
# that keeps failing, an agent gone silent, a node taken off new work.
ATTENTION = ("failed", "crash-looping", "stale", "unfit")


@dataclass(frozen=True)
class Row:
    """One node, joined."""

    node: NodeView
    agent: AgentRead
    worker_name: str
    worker: Optional[ManagerWorker]
    task: Optional[str]  # the task its worker runs
    repair: Optional[Repair]  # what heal would do
    stale: Optional[str]  # why the state file no longer describes a running agent
    unknown: Optional[str]  # why its worker cannot be told apart from another node's
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

    @property
    def manager_known(self) -> bool:
        """Whether the Manager said who its workers are."""
        return self.snapshot.workers is not None

    def attention(self) -> list[str]:
        """Why the pool needs the operator (empty: it does not): nodes of an
        ATTENTION health, and a Manager that was asked and did not answer."""
        found = [f"{r.node.id}: {r.health}" for r in self.rows if r.health in ATTENTION]
        look = self.snapshot
        if look.manager_asked and look.workers is None:
            found.append(f"the Manager: {look.manager_problem}")
        return found


def stale_agent(node: NodeView, state: Optional[AgentView], now: float) -> Optional[str]:
    """Why a node's state file no longer describes a running agent (None: it may):
    node-agent is the start task, so once Batch reports the start task ended, a file
    that does not say ``stopped`` is the last word of an agent that was killed; and a
    file older than the start task's current run, once that run has had time to
    write, is an earlier run's."""
    if state is None or state.phase == "stopped":
        return None
    start = node.start_task
    if start.state == "completed":
        why = f"start task exit {start.exit_code}"
        return f"the last word of a node-agent that ended ({why}) while {state.phase}"
    if (
        start.started is not None
        and state.updated_at < start.started
        and now - start.started > FIRST_WRITE
    ):
        return "from an earlier run of the start task"
    return None


def _health(row: Row, manager_known: bool) -> str:
    node, state = row.node, row.agent.state
    if node.state == "preempted":
        return "preempted"
    if node.state == "leavingpool":
        return "leaving"
    if row.repair is not None:
        return "failed"
    if row.task is not None:
        return "rendering"
    if row.stale is not None and node.state in UP:
        return "stale"
    if state is not None and state.crash_loop:
        return "crash-looping"
    # The agent keeps the worker stopped until a platform event happens or is called
    # off: neither idle nor offline, and nothing for heal to do.
    if state is not None and state.phase == "waiting-for-platform":
        return "held"
    if state is not None and state.unfit is not None:
        return "unfit"
    if node.state in STARTING:
        return "starting"
    if not manager_known or row.unknown is not None:
        return "unknown"  # up, but who knows whether its worker works
    if row.worker is not None and row.worker.status in READY:
        return "idle"
    if row.worker is not None:
        return "offline"
    if node.start_task.state in (None, "running"):
        return "starting"  # up, its worker not on the Manager yet
    return "unknown"


def join(snapshot: Snapshot) -> Status:
    """Every node's row, and the Manager's stale entries of this pool."""
    pool_id = snapshot.pool.id
    match = node_workers(pool_id, snapshot.nodes, snapshot.agents, snapshot.workers or ())
    known = snapshot.workers is not None
    rows = []
    for node in snapshot.nodes:
        agent = snapshot.agents.get(node.id, AgentRead())
        worker = match.of(node.id)
        row = Row(
            node=node,
            agent=agent,
            worker_name=expected_names(pool_id, node, agent)[-1],
            worker=worker,
            task=snapshot.busy(worker),
            repair=repair_for(node, agent),
            stale=stale_agent(node, agent.state, snapshot.now),
            unknown=match.unknown.get(node.id),
            health="",
        )
        rows.append(replace(row, health=_health(row, known)))
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
    if not status.manager_known:
        line += f"; Manager unknown ({status.snapshot.manager_problem})"
    else:
        line += f"; {len(status.stale)} stale worker(s) on the Manager"
    unreadable = sum(r.agent.error is not None for r in rows)
    if unreadable:
        line += f"; {unreadable} node(s) with an unreadable state file"
    attention = sum(r.health in ATTENTION for r in rows)
    if attention:
        line += f"; {attention} node(s) need attention"
    return line


def _age(seconds_old: float) -> str:
    seconds_old = max(0.0, seconds_old)
    if seconds_old < 120:
        return f"{int(seconds_old)} s"
    if seconds_old < 7200:
        return f"{int(seconds_old // 60)} min"
    return f"{seconds_old / 3600:.1f} h"


def _ago(stamp: Optional[str], now: float) -> str:
    when = seconds(stamp)
    return "never seen" if when is None else f"seen {_age(now - when)} ago"


def short_id(node_id: str) -> str:
    """A node id as the narrow table shows it: the part node-agent's worker names
    use (``tvmps_<64 hex>_p`` -> its first 12 hex digits)."""
    return default_worker_name(None, node_id, node_id)


def _cells(row: Row, now: float, manager_known: bool, wide: bool) -> list[str]:
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
        if row.stale is not None:
            agent_text = f"stale: {state.phase}, {_age(now - state.updated_at)} old"
        restarts = f"{state.restarts}" + (" CRASH LOOP" if state.crash_loop else "")
        last_exit = "-" if state.last_exit_code is None else str(state.last_exit_code)
    else:
        agent_text = "unreadable" if row.agent.error is not None else "-"
        restarts = last_exit = "-"
    if not manager_known or row.unknown is not None:
        manager = "?"
    elif row.worker is None:
        manager = "no entry"
    else:
        manager = f"{row.worker.status or 'never signed on'}, {_ago(row.worker.last_seen, now)}"
        if row.worker.requested:
            manager += f", asked: {row.worker.requested}" + (" lazily" if row.worker.lazy else "")
    cells = [
        row.node.id if wide else short_id(row.node.id),
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


def render(status: Status, now: Optional[float] = None, wide: bool = False) -> str:
    """The table, the notes under it (unreadable files, repairs, stale agents and
    entries), and the summary line. ``wide``: whole node ids."""
    now = status.snapshot.now if now is None else now
    known = status.manager_known
    table = [list(HEADER), *(_cells(r, now, known, wide) for r in status.rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    for row in status.rows:
        node_id = row.node.id if wide else short_id(row.node.id)
        if row.agent.error is not None:
            lines.append(f"unreadable: {node_id}: {printable(row.agent.error)}")
        if row.repair is not None:
            lines.append(f"failed: {node_id}: {row.repair.reason} (heal: {row.repair.action})")
        if row.stale is not None:
            lines.append(f"stale: {node_id}: its state file is {row.stale}")
        if row.unknown is not None:
            lines.append(f"unknown: {node_id}: {printable(row.unknown)}")
        state = row.agent.state
        if row.health == "held" and state is not None:
            event = printable(state.platform_event or "a platform event")
            lines.append(f"held: {node_id}: the worker is stopped for {event}")
        if state is not None and state.unfit is not None:
            lines.append(f"unfit: {node_id}: {printable(state.unfit)}")
    for stale in status.stale:
        worker = stale.worker
        lines.append(f"stale: worker {worker.id} {printable(worker.name)}: {stale.reason}")
    lines.append(summary(status))
    return "\n".join(lines)


def worker_document(w: Optional[ManagerWorker]) -> Optional[dict[str, Any]]:
    """A worker entry in fleet's JSON."""
    if w is None:
        return None
    return {
        "id": w.id,
        "name": w.name,
        "status": w.status,
        "last_seen": iso(seconds(w.last_seen)),
        "requested": w.requested,
        "lazy": w.lazy,
    }


def _agent(read: AgentRead, stale: Optional[str]) -> Optional[dict[str, Any]]:
    state = read.state
    if state is None:
        return None
    return {
        "phase": state.phase,
        "restarts": state.restarts,
        "crash_loop": state.crash_loop,
        "last_exit_code": state.last_exit_code,
        "last_exit_reason": state.last_exit_reason,
        "last_exit_at": iso(state.last_exit_at),
        "worker_name": state.worker_name,
        "stop_reason": state.stop_reason,
        "platform_event": state.platform_event,
        "unfit": state.unfit,
        "started_at": iso(state.started_at),
        "updated_at": iso(state.updated_at),
        "stale": stale,
    }


def document(status: Status) -> dict[str, Any]:
    """The JSON document of ``fleet status --json`` (shape: docs/fleet.md)."""
    pool = status.snapshot.pool
    return {
        "schema": SCHEMA,
        "at": iso(status.snapshot.now),
        "pool": {
            "id": pool.id,
            "allocation_state": pool.allocation_state,
            "target_dedicated": pool.target_dedicated,
            "target_spot": pool.target_spot,
            "current_dedicated": pool.current_dedicated,
            "current_spot": pool.current_spot,
            "auto_scale": pool.auto_scale,
        },
        "summary": {h: status.count(h) for h in HEALTHS},
        "attention": status.attention(),
        "nodes": [
            {
                "id": r.node.id,
                "short_id": short_id(r.node.id),
                "dedicated": r.node.dedicated,
                "state": r.node.state,
                "last_boot": iso(r.node.booted),
                "start_task": {
                    "state": r.node.start_task.state,
                    "exit_code": r.node.start_task.exit_code,
                    "failure": r.node.start_task.failure,
                    "retries": r.node.start_task.retries,
                    "started_at": iso(r.node.start_task.started),
                },
                "errors": list(r.node.errors),
                "agent": _agent(r.agent, r.stale),
                "agent_error": r.agent.error,
                "worker_name": r.worker_name,
                "worker": worker_document(r.worker),
                "worker_unknown": r.unknown,
                "task": r.task,
                "health": r.health,
                "repair": None
                if r.repair is None
                else {"action": r.repair.action, "reason": r.repair.reason},
            }
            for r in status.rows
        ],
        "stale_workers": [
            {**(worker_document(s.worker) or {}), "reason": s.reason, "removable": s.removable}
            for s in status.stale
        ],
        "manager_problem": status.snapshot.manager_problem,
    }
