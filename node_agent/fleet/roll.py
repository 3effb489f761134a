"""``fleet roll``'s decisions: a rolling upgrade onto the pool's application packages
as they are now. Batch deploys a pool's packages (new versions included) only when a
node joins, reboots or is reimaged ("Changes to Package references ... do not
affect Compute Nodes that are already in the Pool until they are rebooted or
reimaged", ``BatchPoolUpdateOptions``, REST API 2025-06-01), so every node that
booted before the roll began is rebooted once, a few at a time. Pure: one look at
the pool (``RollView``) and what earlier rounds remember (``RollMemory``) in, a
``RollPlan`` out.

The rules:

- A node **needs the roll** when it last booted before the roll began and this roll
  has not rebooted it yet. Nodes that joined since have the new packages.
- At most ``at_once`` nodes are **out of service** for the roll at a time. A node
  whose worker is idle goes first, then one without a worker entry, then one whose
  worker renders (it is only asked: it finishes its task first).
- **Never a render killed.** A node's worker is asked to go offline *lazily* (it
  finishes its current task and takes no new one); the node is rebooted only once
  the worker is ``offline`` (or in ``error``) and runs no task. A node whose
  worker cannot be told apart from another node's is not touched.
- A rebooted node is **back** when Batch reports it ``idle`` or ``running`` and its
  worker has signed on again (``awake`` or ``asleep``); only then is its slot given
  to the next node. One that is not back within ``timeout`` seconds **stops the
  roll**: new packages that break the start task break no more than ``at_once``
  nodes.
- Nodes Batch marks ``unusable`` or ``starttaskfailed`` are left to ``fleet heal``;
  preempted Spot nodes come back as new nodes, with the new packages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from node_agent.fleet.model import GONE, READY
from node_agent.manager.api import ManagerWorker

UP = ("idle", "running")
FAILED = ("unusable", "starttaskfailed")


@dataclass(frozen=True)
class RollNode:
    """A node of the pool, and its worker."""

    id: str
    state: str  # Batch's node state
    booted: Optional[float]  # lastBootTime (None: not known)
    worker: Optional[ManagerWorker]
    busy: bool  # its worker runs a task
    unknown: bool = False  # its worker cannot be told apart from another node's


@dataclass(frozen=True)
class RollView:
    """What a round sees."""

    now: float
    nodes: tuple[RollNode, ...]


@dataclass(frozen=True)
class RollMemory:
    """What rounds hand on: when the roll began, the nodes asked to wind down and
    rebooted (and when), and the nodes done."""

    since: float
    draining: Mapping[str, float] = field(default_factory=dict)
    rebooting: Mapping[str, float] = field(default_factory=dict)
    done: frozenset[str] = frozenset()


class RollAct(Enum):
    """What a step does."""

    DRAIN = "drain"  # ask the workers of ``nodes`` to go offline lazily
    REBOOT = "reboot"  # ``nodes``, whose workers are offline
    WAIT = "wait"


@dataclass(frozen=True)
class RollStep:
    """One action and its reason."""

    act: RollAct
    nodes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class RollPlan:
    """A round's decision: its steps, the memory once they are done, how many nodes
    still need the roll, and whether the roll is finished or stuck."""

    steps: tuple[RollStep, ...]
    memory: RollMemory
    left: int  # nodes that still need the roll (in flight included)
    finished: bool
    stuck: Optional[str] = None  # why the roll stops
    left_alone: Mapping[str, str] = field(default_factory=dict)  # node id -> why


def _order(node: RollNode) -> int:
    if node.worker is not None and not node.busy:
        return 0
    return 1 if node.worker is None else 2


def _offline(node: RollNode) -> bool:
    return not node.busy and (node.worker is None or node.worker.status in GONE)


def decide_roll(view: RollView, memory: RollMemory, at_once: int, timeout: float) -> RollPlan:
    """The round's plan (see the module docstring for the rules)."""
    by_id = {n.id: n for n in view.nodes}
    done = {i for i in memory.done if i in by_id}
    draining = {i: t for i, t in memory.draining.items() if i in by_id}
    rebooting = {i: t for i, t in memory.rebooting.items() if i in by_id}
    steps: list[RollStep] = []
    stuck = None
    for node_id, asked in list(rebooting.items()):
        node = by_id[node_id]
        worker = node.worker
        if node.state in UP and worker is not None and worker.status in READY:
            del rebooting[node_id]
            done.add(node_id)
        elif view.now - asked > timeout:
            stuck = (
                f"node {node_id} is not back {int(view.now - asked)} s after its reboot "
                f"(Batch: {node.state}; worker: {worker.status if worker else 'no entry'}): "
                "the new packages may keep its worker from starting"
            )
    reboot = []
    for node_id in list(draining):
        node = by_id[node_id]
        if node.state in UP and _offline(node) and not node.unknown:
            reboot.append(node_id)
            del draining[node_id]
            rebooting[node_id] = view.now
    left_alone: dict[str, str] = {}
    todo = []
    for node in view.nodes:
        if node.id in done or node.id in draining or node.id in rebooting:
            continue
        if node.booted is not None and node.booted >= memory.since:
            continue  # joined (or rebooted) since the roll began
        if node.state in FAILED:
            left_alone[node.id] = f"{node.state}: fleet heal replaces it"
        elif node.state == "preempted":
            left_alone[node.id] = "preempted: it comes back as a new node"
        elif node.unknown:
            left_alone[node.id] = (
                "whether its worker renders is unknown (a worker name several nodes share, "
                "or a state file fleet cannot read)"
            )
        elif node.state not in UP:
            left_alone[node.id] = f"{node.state}: later"
        else:
            todo.append(node)
    slots = 0 if stuck else max(0, at_once - len(draining) - len(rebooting))
    start = sorted(todo, key=_order)[:slots]
    drain = [n.id for n in start if not _offline(n)]
    reboot += [n.id for n in start if _offline(n)]
    for node_id in drain:
        draining[node_id] = view.now
    for node_id in reboot:
        rebooting.setdefault(node_id, view.now)
    # A lazy request someone withdrew is asked again: the worker must wind down.
    again = [
        i
        for i in draining
        if i not in drain
        and (w := by_id[i].worker) is not None
        and w.status in READY
        and w.requested != "offline"
    ]
    if drain or again:
        reason = "wind down lazily: finish the current task, take no new one"
        steps.append(RollStep(RollAct.DRAIN, tuple(drain + again), reason))
    if reboot:
        reason = "its worker is offline: the reboot deploys the pool's packages"
        steps.append(RollStep(RollAct.REBOOT, tuple(reboot), reason))
    left = len(todo) - len(start) + len(draining) + len(rebooting)
    waiting = [i for i in draining if i not in drain and i not in again]
    if waiting:
        reason = "waiting for these workers to finish their task and go offline"
        steps.append(RollStep(RollAct.WAIT, tuple(waiting), reason))
    back = [i for i in rebooting if i not in reboot]
    if back:
        reason = "waiting for these nodes to come back and their workers to sign on"
        steps.append(RollStep(RollAct.WAIT, tuple(back), reason))
    after = RollMemory(memory.since, draining, rebooting, frozenset(done))
    finished = left == 0 and stuck is None
    return RollPlan(tuple(steps), after, left, finished, stuck, left_alone)
