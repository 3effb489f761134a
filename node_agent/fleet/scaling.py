"""``fleet scale``'s decisions: how many Spot nodes the queue needs, and how to get
there without killing a render. Pure: one look at the pool (``ScaleView``), the
bounds, and what earlier rounds remember (``Memory``) in; a ``Plan`` out.

The rules:

- **Target.** The demand (``demand.Demand``: the tasks the Manager would hand this
  pool's workers, and those they run) needs ``ceil(tasks / per_node)`` nodes. The
  dedicated nodes that can work meet that first; the Spot target is the rest, plus
  the Spot nodes that failed (until heal replaces them) and those whose idle
  workers may take none of the waiting tasks (a new node's worker would), never
  below ``minimum`` nor above ``maximum`` (bounds on Spot nodes). Dedicated nodes
  are left as they are.
- **Growing** resizes the pool to the target (only while Batch accepts a resize:
  allocation state ``steady``).
- **Shrinking** takes out only nodes that run no task and have run none for
  ``idle_minutes`` (each node's idle time counts from the first round that saw it
  idle), or once the pool has had more nodes than needed for ``idle_minutes`` any
  node that runs out of work (the queue is draining, not between two jobs of a
  burst), and never more than the surplus: first nodes that cannot work anyway
  (preempted, unusable, start task failed, worker offline or in error, still being
  created), then nodes whose idle workers it took offline lazily in an earlier
  round, once those workers are ``offline``. Idle workers (``awake`` or ``asleep``,
  no task, no pending request) are asked to go offline lazily: they would finish a
  task, take no new one, and sign off. Nodes are removed by id (Batch's Remove
  Nodes), never by a resize down, in which Batch would choose.
- **Changing course.** When the queue needs nodes again, a lazy stop still pending
  is withdrawn, and a node whose worker already went offline for it is rebooted
  (its start task starts the worker again) unless it is still to be removed.
- A node whose worker runs a task is never removed, rebooted or taken offline, and
  a node whose worker cannot be told apart from another node's (a worker name
  several nodes share, without the ids that tell them apart) is never acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from node_agent.fleet.model import GONE, READY
from node_agent.manager.api import ManagerWorker

# Batch states of a node that runs no worker.
DOWN = ("preempted", "unusable", "starttaskfailed")
FAILED = ("unusable", "starttaskfailed")
# Batch states of a node whose start task has not begun: no worker yet.
NOT_YET = ("creating", "starting")


@dataclass(frozen=True)
class Bounds:
    """The operator's limits (checked by the command line)."""

    minimum: int
    maximum: int
    per_node: int = 1  # tasks one node takes
    idle_minutes: float = 10.0  # how long a surplus lasts before nodes go


@dataclass(frozen=True)
class SpotNode:
    """A Spot node of the pool (not one leaving it), and its worker."""

    id: str
    state: str  # Batch's node state
    worker: Optional[ManagerWorker]  # its current entry on the Manager
    busy: bool  # its worker runs a task
    start_failed: bool = False  # its start task failed: node-agent is not running
    unfit: bool = False  # its worker is idle but may take none of the waiting tasks

    @property
    def failed(self) -> bool:
        """Whether it failed (unusable, start task failed): it takes no work until
        heal replaces it (a preempted node comes back by itself)."""
        return self.state in FAILED or self.start_failed

    @property
    def down(self) -> bool:
        """Whether the node runs no worker: preempted, unusable, start task failed."""
        return self.state in DOWN or self.start_failed


@dataclass(frozen=True)
class ScaleView:
    """What a round sees."""

    now: float
    target: int  # the pool's targetLowPriorityNodes
    steady: bool  # Batch accepts a resize or removal now
    auto_scale: bool  # the pool scales by a formula
    demand: int  # tasks for this pool's workers: waiting or running
    nodes: tuple[SpotNode, ...]
    dedicated: int = 0  # dedicated nodes that can work (they meet demand first)
    held: Mapping[str, int] = field(default_factory=dict)  # queued tasks not counted: why


@dataclass(frozen=True)
class Memory:
    """What rounds hand on: since when each node has been unused (idle, or unable to
    work), the nodes whose workers this scaler asked to go offline, and since when
    the pool has had more nodes than needed (None: it has not)."""

    unused_since: Mapping[str, float] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()
    surplus_since: Optional[float] = None


class Act(Enum):
    """What a step does."""

    RESIZE = "resize"  # the pool to ``target`` Spot nodes
    REMOVE = "remove"  # exactly ``nodes`` from the pool
    DRAIN = "drain"  # ask the workers of ``nodes`` to go offline lazily
    UNDRAIN = "undrain"  # withdraw that request
    REBOOT = "reboot"  # ``nodes``, whose workers went offline for a scale-in
    WAIT = "wait"  # nothing can be done now
    KEEP = "keep"  # nothing needs doing


@dataclass(frozen=True)
class Step:
    """One action and its reason."""

    act: Act
    reason: str
    nodes: tuple[str, ...] = ()
    target: Optional[int] = None


@dataclass(frozen=True)
class Plan:
    """A round's decision: the target, the steps, and the memory once they are done."""

    desired: int
    steps: tuple[Step, ...]
    memory: Memory


def out_of_service(node: SpotNode) -> bool:
    """Whether a node runs no task and will take none: it is down, or its worker is
    offline, in error or never signed on."""
    if node.busy:
        return False
    return node.down or (node.worker is not None and node.worker.status in GONE)


def removable(node: SpotNode) -> bool:
    """Whether a node can go without taking anything down: out of service, or its
    start task has not even begun."""
    return out_of_service(node) or (not node.busy and node.worker is None and node.state in NOT_YET)


def idle(node: SpotNode) -> bool:
    """Whether a node's worker is ready for work but runs none, with no request."""
    worker = node.worker
    return (
        not node.busy
        and worker is not None
        and worker.status in READY
        and not worker.requested
        and not node.down
    )


def _ids(nodes: list[SpotNode]) -> tuple[str, ...]:
    return tuple(n.id for n in nodes)


def _drain_order(node: SpotNode) -> int:
    """Unfit workers go first (they can take none of the work), then asleep ones
    (they were taking no work anyway), then awake ones."""
    if node.unfit:
        return 0
    return 1 if node.worker is not None and node.worker.status == "asleep" else 2


def _one_per_worker(nodes: list[SpotNode]) -> list[SpotNode]:
    """Never two requests to one worker (a worker is one node's)."""
    seen: set[str] = set()
    kept = []
    for node in nodes:
        if node.worker is not None and node.worker.id not in seen:
            seen.add(node.worker.id)
            kept.append(node)
    return kept


def _why(view: ScaleView, bounds: Bounds, needed: int, unfit: int) -> str:
    why = f"{view.demand} task(s) waiting or running need {needed} node(s)"
    why += f" at {bounds.per_node} per node"
    if view.dedicated:
        why += f", {min(needed, view.dedicated)} of them dedicated"
    if unfit:
        why += f"; {unfit} Spot node(s) failed or may take none of the waiting tasks"
    held = ", ".join(f"{count} {reason}" for reason, count in sorted(view.held.items()))
    if held:
        why += f"; not counted: {held}"
    return f"{why}; Spot bounds {bounds.minimum}..{bounds.maximum}"


def decide(view: ScaleView, bounds: Bounds, memory: Memory) -> Plan:
    """The round's plan (see the module docstring for the rules)."""
    needed = -(-view.demand // bounds.per_node)
    unfit = sum(n.unfit or n.failed for n in view.nodes)
    spot_needed = max(0, needed - view.dedicated) + unfit
    desired = min(max(spot_needed, bounds.minimum), bounds.maximum)
    why = _why(view, bounds, needed, unfit)
    if view.auto_scale:
        reason = "the pool scales by an autoscale formula; fleet scale leaves it alone"
        return Plan(desired, (Step(Act.WAIT, reason),), memory)
    draining = [n for n in view.nodes if n.id in memory.draining]
    drained = [n for n in draining if out_of_service(n)]
    # A node whose worker can no longer be found is not waited for.
    lost = [n for n in draining if not out_of_service(n) and n.worker is None]
    pending = [n for n in draining if not out_of_service(n) and n.worker is not None]
    others = [n for n in view.nodes if n.id not in memory.draining]
    since = {
        n.id: memory.unused_since.get(n.id, view.now) for n in others if removable(n) or idle(n)
    }
    limit = bounds.idle_minutes * 60
    surplus = max(0, view.target - desired)
    surplus_since = None
    if surplus:
        surplus_since = view.now if memory.surplus_since is None else memory.surplus_since
    # A surplus that lasted the idle time is no burst between two jobs: a node that
    # runs out of work after that goes at once, not idle_minutes later.
    lasting = surplus_since is not None and view.now - surplus_since >= limit
    ripe = [n for n in others if n.id in since and (lasting or view.now - since[n.id] >= limit)]

    remove = drained[:surplus]
    revive = drained[surplus:]  # offline for a scale-in that needs fewer nodes now
    budget = surplus - len(remove)
    spare = [n for n in ripe if removable(n)][:budget]
    remove += spare
    budget -= len(spare)
    kept, undrain = pending[:budget], pending[budget:]
    budget -= len(kept)
    drain = _one_per_worker(sorted((n for n in ripe if idle(n)), key=_drain_order))[:budget]
    reboot = [n for n in revive if n.state in ("idle", "running")]

    steps = []
    if remove and view.steady:
        reason = f"they run no task; {surplus} node(s) more than needed ({why})"
        steps.append(Step(Act.REMOVE, reason, _ids(remove)))
    elif remove:
        steps.append(Step(Act.WAIT, f"pool is not steady: removing {len(remove)} node(s) later"))
    if drain:
        minutes = f"{bounds.idle_minutes:g} min"
        reason = f"idle for {minutes} or more; {surplus} node(s) more than needed ({why})"
        steps.append(Step(Act.DRAIN, reason, _ids(drain)))
    if undrain:
        steps.append(Step(Act.UNDRAIN, f"the queue needs them again ({why})", _ids(undrain)))
    if reboot:
        reason = f"their workers went offline for a scale-in the queue no longer wants ({why})"
        steps.append(Step(Act.REBOOT, reason, _ids(reboot)))
    if desired > view.target:
        if view.steady:
            steps.append(Step(Act.RESIZE, f"grow: {why}", target=desired))
        else:
            steps.append(Step(Act.WAIT, f"pool is not steady: growing to {desired} later"))
    if surplus and not (remove or drain):
        if kept:
            reason = f"waiting for the workers of {len(kept)} node(s) to go offline"
        elif since:
            starts = [*since.values(), *([surplus_since] if surplus_since is not None else [])]
            first = min(limit - (view.now - t) for t in starts) / 60
            reason = f"none unused for {bounds.idle_minutes:g} min yet (next in {first:.1f} min)"
        else:
            reason = "each runs a task or is not idle"
        steps.append(Step(Act.WAIT, f"{surplus} node(s) more than needed ({why}); {reason}"))
    if not steps:
        steps.append(Step(Act.KEEP, f"{view.target} Spot node(s), as needed ({why})"))

    gone = set(_ids(remove)) if view.steady else set()
    left_draining = (
        {n.id for n in draining} - gone - set(_ids(revive)) - set(_ids(undrain)) - set(_ids(lost))
    )
    draining_after = frozenset(left_draining | set(_ids(drain)))
    # A node drained now keeps its time: should the Manager refuse, it is ripe still.
    unused = {i: t for i, t in since.items() if i not in gone}
    # A surplus this round's removals end is over: the next one starts its own clock.
    surplus_after = surplus_since if surplus > len(gone) else None
    return Plan(desired, tuple(steps), Memory(unused, draining_after, surplus_after))
