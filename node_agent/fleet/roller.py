"""``fleet roll``'s edge: the pool's package references changed (or left as they are),
rounds of looking, deciding (``roll.decide_roll``) and acting, and what rounds hand
on, kept in a small JSON file so an interrupted roll carries on where it stopped.
A thin edge."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from node_agent.common import fsutil
from node_agent.common.errors import Problem
from node_agent.common.log import get_logger
from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.flamenco import take_offline_lazily
from node_agent.fleet.model import PackageRef, PoolView, Snapshot, node_workers
from node_agent.fleet.observe import snapshot
from node_agent.fleet.roll import RollAct, RollMemory, RollNode, RollPlan, RollView, decide_roll
from node_agent.fleet.times import iso, seconds
from node_agent.manager.api import ManagerApi
from node_agent.node.packages import PREFIX, flatten

log = get_logger("fleet")

MAX_MEMORY_BYTES = 1 << 20


class RollUnusable(ValueError):
    """The roll's file cannot be used; the message says why."""


def default_roll_file(pool_id: str) -> Path:
    """``$XDG_STATE_HOME/node-agent/fleet-roll-<pool>.json`` (``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "node-agent" / f"fleet-roll-{pool_id}.json"


def load_roll(path: Path) -> Optional[RollMemory]:
    """The roll under way (None: none); ``RollUnusable`` when the file is no roll."""
    try:
        raw = fsutil.read_bounded(str(path), MAX_MEMORY_BYTES)
    except FileNotFoundError:
        return None
    except fsutil.Unsuitable as exc:
        raise RollUnusable(f"{path} {exc}") from None
    except OSError as exc:
        raise RollUnusable(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = json.loads(raw)
        since = seconds(document["since"])
        draining = {str(k): seconds(v) for k, v in document.get("draining", {}).items()}
        rebooting = {str(k): seconds(v) for k, v in document.get("rebooting", {}).items()}
        done = frozenset(str(i) for i in document.get("done", ()))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise RollUnusable(f"{path} is not a roll's file ({exc})") from None
    times = [since, *draining.values(), *rebooting.values()]
    if any(t is None for t in times):
        raise RollUnusable(f"{path} is not a roll's file (a time is not ISO 8601)")
    return RollMemory(
        float(since or 0),
        {k: float(v or 0) for k, v in draining.items()},
        {k: float(v or 0) for k, v in rebooting.items()},
        done,
    )


def save_roll(path: Path, memory: RollMemory) -> None:
    """Write the roll's file atomically."""
    document = {
        "schema": 1,
        "since": iso(memory.since),
        "draining": {k: iso(v) for k, v in sorted(memory.draining.items())},
        "rebooting": {k: iso(v) for k, v in sorted(memory.rebooting.items())},
        "done": sorted(memory.done),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write(str(path), json.dumps(document, indent=2).encode() + b"\n", 0o644)


_PACKAGE = re.compile(r"([^=\s]+)(?:=(\S*))?")


def parse_packages(values: Sequence[str]) -> tuple[dict[str, Optional[str]], list[Problem]]:
    """``--package ID=VERSION`` (``ID`` alone: the application's default version)."""
    found: dict[str, Optional[str]] = {}
    problems = []
    for value in values:
        match = _PACKAGE.fullmatch(value)
        if match is None:
            problems.append(Problem("--package", f"{value!r}: expected ID=VERSION or ID"))
            continue
        found[match.group(1)] = match.group(2) or None
    return found, problems


def new_references(
    pool: PoolView, wanted: dict[str, Optional[str]]
) -> tuple[tuple[PackageRef, ...], list[Problem], list[str]]:
    """The pool's references with the versions ``wanted``; the problems (a package
    the pool does not reference) and warnings (a start task that names a package by
    the variable Batch sets only for a reference without a version)."""
    problems, warnings = [], []
    names = {r.name for r in pool.references}
    for name in wanted:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            why = f"{name}: pool {pool.id} references no such application ({known})"
            problems.append(Problem("--package", why))
    refs = tuple(
        PackageRef(r.application_id, wanted[r.name]) if r.name in wanted else r
        for r in pool.references
    )
    for name, version in wanted.items():
        variable = f"{PREFIX}{flatten(name)}"
        if version and re.search(rf"\$\{{?{re.escape(variable)}\b", pool.start_command, re.I):
            warnings.append(
                f"the start task uses ${variable}, which Batch sets only for a package "
                f"referenced without a version; with {name} pinned to {version} it may not "
                "start (the roll stops after the first nodes if so)"
            )
    return refs, problems, warnings


def roll_view(look: Snapshot, now: float) -> RollView:
    """What ``decide_roll`` needs from a snapshot."""
    assert look.workers is not None and look.queue is not None
    match = node_workers(look.pool.id, look.nodes, look.agents, look.workers)
    running = look.queue.running
    nodes = []
    for node in look.nodes:
        worker = match.of(node.id)
        agent = look.agents.get(node.id)
        # With no entry found and no state file read, its worker's name is unknown:
        # it may be rendering under a name fleet cannot see.
        blind = worker is None and (agent is None or agent.state is None)
        blind = blind and node.start_task.state == "running"
        nodes.append(
            RollNode(
                node.id,
                node.state,
                node.booted,
                worker,
                worker is not None and worker.id in running,
                node.id in match.unknown or blind,
            )
        )
    return RollView(now, tuple(nodes))


@dataclass(frozen=True)
class RollSettings:
    """The command line's choices for a round."""

    state_path: str  # the state file's path on the nodes
    at_once: int  # nodes out of service for the roll at a time
    timeout: float  # seconds a rebooted node has to come back with its worker
    apply: bool


@dataclass(frozen=True)
class RollRound:
    """What a round did."""

    plan: Optional[RollPlan]  # None: the Manager did not say enough to decide
    memory: RollMemory
    ok: bool


def roll_round(
    batch: BatchService, api: ManagerApi, settings: RollSettings, memory: RollMemory, now: float
) -> RollRound:
    """One round. Raises ``BatchFailure`` when Batch cannot be asked at all."""
    look = snapshot(batch, api, settings.state_path)
    if look.workers is None or look.queue is None:
        log.warning("roll: nothing done this round: %s", look.manager_problem)
        return RollRound(None, memory, False)
    plan = decide_roll(roll_view(look, now), memory, settings.at_once, settings.timeout)
    if not settings.apply:
        return RollRound(plan, plan.memory, True)
    match = node_workers(look.pool.id, look.nodes, look.agents, look.workers)
    draining, rebooting = dict(plan.memory.draining), dict(plan.memory.rebooting)
    ok = True
    for step in plan.steps:
        if step.act is RollAct.WAIT:
            continue
        log.info("roll: %s %s: %s", step.act.value, ", ".join(step.nodes), step.reason)
        for node_id in step.nodes:
            if step.act is RollAct.DRAIN:
                worker = match.of(node_id)
                if worker is None or not take_offline_lazily(api, worker):
                    ok = False
            else:
                try:
                    batch.reboot(node_id)
                except BatchFailure as exc:
                    log.error("roll: %s", exc)
                    # Not rebooted: asked again next round (its worker stays offline).
                    rebooting.pop(node_id, None)
                    draining[node_id] = memory.draining.get(node_id, now)
                    ok = False
    after = RollMemory(plan.memory.since, draining, rebooting, plan.memory.done)
    return RollRound(plan, after, ok)
