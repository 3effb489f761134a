"""One round of ``fleet scale``: look at the pool and the Manager, decide
(``scaling.decide``), and print the plan or carry it out, logging every action with
its reason. What rounds hand on (``scaling.Memory``) is kept in a small JSON file,
so a scaler run from a timer (``--once``) or restarted as a service carries on
where it stopped. A thin edge."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from node_agent.common import fsutil
from node_agent.common.log import get_logger
from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.demand import assess
from node_agent.fleet.flamenco import cancel_request, take_offline_lazily
from node_agent.fleet.model import GONE, READY, NodeView, Snapshot, node_workers
from node_agent.fleet.observe import snapshot
from node_agent.fleet.scaling import (
    DOWN,
    Act,
    Bounds,
    Memory,
    Plan,
    ScaleView,
    SpotNode,
    Step,
    decide,
)
from node_agent.fleet.times import iso, seconds
from node_agent.manager.api import ManagerApi

log = get_logger("fleet")

# A memory holds a line or two per Spot node: a pool of thousands fits in far less.
MAX_MEMORY_BYTES = 1 << 20
# Nodes whose state file is worth reading for their worker's name: nodes that are
# up (a custom ``worker_name`` is only known from there).
_NO_FILES = ("creating", "starting", "preempted", "leavingpool")


@dataclass(frozen=True)
class ScaleSettings:
    """The command line's choices for a round."""

    bounds: Bounds
    state_path: str  # the state file's path on the nodes
    memory_file: Path  # what rounds hand on
    apply: bool


def default_memory_file(pool_id: str) -> Path:
    """``$XDG_STATE_HOME/node-agent/fleet-scale-<pool>.json`` (``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "node-agent" / f"fleet-scale-{pool_id}.json"


class MemoryUnusable(ValueError):
    """The memory file's path names no file to keep a memory in (a folder, a FIFO, a
    device, a huge file) or one that cannot be read; the message says which."""


def load_memory(path: Path) -> Memory:
    """The memory of earlier rounds: none when the file is not there yet, or (said)
    when what it holds is not a memory. ``MemoryUnusable`` when the path is no place
    for one: reading never hangs on a FIFO nor runs on through a device."""
    try:
        raw = fsutil.read_bounded(str(path), MAX_MEMORY_BYTES)
    except FileNotFoundError:
        return Memory()
    except fsutil.Unsuitable as exc:
        raise MemoryUnusable(f"{path} {exc}") from None
    except OSError as exc:
        raise MemoryUnusable(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = json.loads(raw)
        unused = {str(k): _when(v) for k, v in document.get("unused_since", {}).items()}
        surplus = document.get("surplus_since")
        return Memory(
            unused,
            frozenset(str(i) for i in document.get("draining", ())),
            None if surplus is None else _when(surplus),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("scale: %s is unreadable (%s); starting afresh", path, exc)
        return Memory()


def _when(value: Any) -> float:
    """A time in a memory file: ISO 8601, or Unix seconds (files of older fleets)."""
    if isinstance(value, str):
        found = seconds(value)
        if found is None:
            raise ValueError(f"{value!r} is not an ISO 8601 time")
        return found
    return float(value)


def save_memory(path: Path, memory: Memory) -> None:
    """Write the memory atomically (times in ISO 8601 UTC)."""
    document = {
        "schema": 1,
        "unused_since": {k: iso(v) for k, v in sorted(memory.unused_since.items())},
        "draining": sorted(memory.draining),
        "surplus_since": iso(memory.surplus_since),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write(str(path), json.dumps(document, indent=2).encode() + b"\n", 0o644)


def spot_view(look: Snapshot, now: float) -> ScaleView:
    """What ``decide`` needs from a snapshot: the demand on this pool's workers, the
    dedicated nodes that meet it first, and the Spot nodes and their workers."""
    queue = look.queue
    assert queue is not None and look.workers is not None
    match = node_workers(look.pool.id, look.nodes, look.agents, look.workers)
    running = queue.running
    live = [n for n in look.nodes if n.state != "leavingpool"]
    idle = {
        w.id: w.status in READY and w.id not in running and not w.requested
        for n in live
        if (w := match.of(n.id)) is not None
    }
    demand = assess(queue, idle)

    def can_work(node: NodeView) -> bool:
        worker = match.of(node.id)
        down = node.state in DOWN or node.start_task.failed
        gone = worker is not None and worker.status in GONE and worker.id not in running
        return not (down or gone or (worker is not None and worker.id in demand.unfit))

    nodes = tuple(
        SpotNode(
            n.id,
            n.state,
            worker,
            worker is not None and worker.id in running,
            n.start_task.failed,
            worker is not None and worker.id in demand.unfit,
        )
        for n in live
        if not n.dedicated
        for worker in (match.of(n.id),)
    )
    dedicated = sum(can_work(n) for n in live if n.dedicated)
    pool = look.pool
    return ScaleView(
        now,
        pool.target_spot,
        pool.steady,
        pool.auto_scale,
        demand.total,
        nodes,
        dedicated,
        demand.held,
    )


def describe(step: Step) -> str:
    """A step as the plan and the log say it."""
    if step.act is Act.RESIZE:
        return f"resize the pool to {step.target} Spot node(s): {step.reason}"
    if step.act in (Act.WAIT, Act.KEEP):
        return f"{step.act.value}: {step.reason}"
    what = {
        Act.REMOVE: "remove",
        Act.DRAIN: "take offline lazily the worker(s) of",
        Act.UNDRAIN: "withdraw the lazy stop of the worker(s) of",
        Act.REBOOT: "reboot",
    }[step.act]
    return f"{what} {len(step.nodes)} node(s) {', '.join(step.nodes)}: {step.reason}"


def _carry_out(
    step: Step, view: ScaleView, dedicated: int, batch: BatchService, api: ManagerApi
) -> set[str]:
    """Do one step; the nodes it could not be done for. Raises ``BatchFailure`` when
    Batch refuses a resize or a removal."""
    if step.act is Act.RESIZE:
        assert step.target is not None
        batch.resize(dedicated, step.target)
    elif step.act is Act.REMOVE:
        batch.remove(step.nodes)
    elif step.act is Act.REBOOT:
        failed = set()
        for node_id in step.nodes:
            try:
                batch.reboot(node_id)
            except BatchFailure as exc:
                log.error("scale: %s", exc)
                failed.add(node_id)
        return failed
    elif step.act in (Act.DRAIN, Act.UNDRAIN):
        change = take_offline_lazily if step.act is Act.DRAIN else cancel_request
        workers = {n.id: n.worker for n in view.nodes}
        return {i for i in step.nodes if (w := workers[i]) is None or not change(api, w)}
    return set()


@dataclass(frozen=True)
class Round:
    """What a round did."""

    plan: Optional[Plan]  # None: the Manager did not say enough to decide
    memory: Memory  # for the next round
    ok: bool  # every step was done (or, without --apply, the plan was made)
    view: Optional[ScaleView] = None  # what the round saw
    failed: frozenset[str] = frozenset()  # nodes a step could not be done for
    why: Optional[str] = None  # why no plan


def run_round(
    batch: BatchService,
    api: ManagerApi,
    settings: ScaleSettings,
    memory: Memory,
    now: Optional[float] = None,
) -> Round:
    """One round. Raises ``BatchFailure`` when Batch cannot be asked at all."""

    def worth_reading(node: NodeView) -> bool:
        return node.state not in _NO_FILES

    look = snapshot(batch, api, settings.state_path, worth_reading, detail=True)
    if look.workers is None or look.queue is None:
        log.warning("scale: no decision this round: %s", look.manager_problem)
        return Round(None, memory, False, why=look.manager_problem)
    view = spot_view(look, time.time() if now is None else now)
    plan = decide(view, settings.bounds, memory)
    if not settings.apply:
        return Round(plan, plan.memory, True, view)
    draining, ok, not_done = set(plan.memory.draining), True, set()
    for step in plan.steps:
        log.info("scale: %s", describe(step))
        try:
            failed = _carry_out(step, view, look.pool.target_dedicated, batch, api)
        except BatchFailure as exc:
            log.error("scale: %s", exc)
            failed, ok = set(step.nodes), False
        ok = ok and not failed
        not_done |= failed
        # A change that did not happen is not remembered as done.
        if step.act is Act.DRAIN:
            draining -= failed
        elif step.act in (Act.UNDRAIN, Act.REBOOT, Act.REMOVE):
            draining |= failed & memory.draining
    after = Memory(plan.memory.unused_since, frozenset(draining), plan.memory.surplus_since)
    try:
        save_memory(settings.memory_file, after)
    except OSError as exc:
        # The actions are done: a loop (--every) carries the memory on in this process.
        log.error("scale: cannot keep what this round did in %s: %s", settings.memory_file, exc)
        ok = False
    return Round(plan, after, ok, view, frozenset(not_done))
