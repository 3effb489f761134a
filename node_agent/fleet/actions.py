"""What each ``node-agent fleet`` command does: look (``observe``), decide (the pure
modules), print the plan or the outcome as text or JSON, and with ``--apply`` act.
Thin. Every JSON document has ``schema``, ``command``, ``at`` (ISO 8601 UTC) and
``pool``; times in it are ISO 8601 UTC."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Optional

from node_agent.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNHEALTHY, RuntimeFailure
from node_agent.common.log import get_logger
from node_agent.common.redact import printable
from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.cleanup import Repair, heal, stale_workers
from node_agent.fleet.looping import pause, repeat
from node_agent.fleet.observe import snapshot
from node_agent.fleet.scaler import ScaleSettings, describe, run_round
from node_agent.fleet.scaling import Memory
from node_agent.fleet.status import document, join, render, worker_document
from node_agent.fleet.times import iso
from node_agent.manager.api import ManagerApi, delete_worker

log = get_logger("fleet")
REPORT_SCHEMA = 1  # prune, heal, scale and roll documents
STEADY_POLL = 5.0  # seconds between looks at a pool that is resizing


def emit(document_: dict[str, Any]) -> None:
    """One JSON document, one line, on stdout."""
    print(json.dumps(document_, sort_keys=True), flush=True)


def report(command: str, pool_id: str, **fields: Any) -> dict[str, Any]:
    """The fields every report of prune, heal, scale and roll has, and ``fields``."""
    return {
        "schema": REPORT_SCHEMA,
        "command": command,
        "at": iso(time.time()),
        "pool": pool_id,
        **fields,
    }


def cmd_status(args: argparse.Namespace, batch: BatchService, api: Optional[ManagerApi]) -> int:
    """Print the pool's nodes, joined with their files and the Manager; exit 6 when
    some node needs attention (without ``--watch``)."""

    def show() -> bool:
        status = join(snapshot(batch, api, args.state_path))
        if args.json:
            emit(document(status))
        else:
            print(render(status, wide=args.wide) + ("\n" if args.watch else ""), flush=True)
        return not status.attention()

    if args.watch is not None:
        return repeat(args.watch, show, BatchFailure)
    return EXIT_OK if show() else EXIT_UNHEALTHY


def cmd_prune(args: argparse.Namespace, batch: BatchService, api: Optional[ManagerApi]) -> int:
    """List (and with --apply remove) the Manager's stale entries of this pool."""
    assert api is not None
    look = snapshot(batch, api, args.state_path, queue_too=False)
    if look.workers is None:
        raise RuntimeFailure(f"cannot prune: {look.manager_problem}")
    stale, entries, failed = stale_workers(look), [], 0
    for entry in stale:
        worker = entry.worker
        what = f"worker {worker.id} {printable(worker.name)} ({worker.status or 'never signed on'})"
        removed: Optional[bool] = None
        if not entry.removable:
            line = f"leave {what}: {entry.reason}"
        elif not args.apply:
            line = f"would remove {what}: {entry.reason}"
        else:
            removed = delete_worker(api, worker.id, entry.reason)
            failed += not removed
            line = f"{'removed' if removed else 'could not remove'} {what}: {entry.reason}"
        entries.append(
            {
                **(worker_document(worker) or {}),
                "reason": entry.reason,
                "removable": entry.removable,
                "removed": removed,
            }
        )
        if not args.json and not (args.apply and entry.removable):
            print(line)
    removable = sum(s.removable for s in stale)
    if args.json:
        emit(report("prune", look.pool.id, applied=args.apply, stale=entries))
    else:
        done = "removed" if args.apply else "to remove (--apply removes them)"
        print(
            f"pool {look.pool.id}: {len(stale)} stale worker entries, {removable - failed} {done}"
        )
    return EXIT_FAILURE if failed else EXIT_OK


def wait_steady(batch: BatchService, seconds: float) -> bool:
    """Wait until the pool is ``steady`` (Batch takes a removal or a resize only
    then), at most ``seconds``; whether it is."""
    deadline = time.monotonic() + seconds
    while not batch.pool().steady:
        if time.monotonic() >= deadline:
            return False
        pause(min(STEADY_POLL, max(0.0, deadline - time.monotonic())))
    return True


def _repair(batch: BatchService, repairs: list[Repair], args: argparse.Namespace) -> dict[str, Any]:
    """Reboot and remove as ``repairs`` say, then resize the pool back; what was done
    (node id -> error or None, the targets resized to, a problem)."""
    outcome: dict[str, Optional[str]] = {}
    for repair in repairs:
        if repair.action == "reboot":
            try:
                batch.reboot(repair.node_id)
                log.info("heal: reboot %s: %s", repair.node_id, repair.reason)
                outcome[repair.node_id] = None
            except BatchFailure as exc:
                log.error("heal: %s", exc)
                outcome[repair.node_id] = str(exc)
    removals = [r.node_id for r in repairs if r.action == "remove"]
    resized = problem = None
    if removals:
        if not wait_steady(batch, args.wait):
            problem = f"the pool did not become steady within {args.wait:g} s (--wait)"
            outcome.update({node_id: problem for node_id in removals})
            return {"outcome": outcome, "resized_to": None, "problem": problem}
        before = batch.pool()
        try:
            batch.remove(removals)
            for repair in repairs:
                if repair.action == "remove":
                    log.info("heal: remove %s: %s", repair.node_id, repair.reason)
            outcome.update({node_id: None for node_id in removals})
        except BatchFailure as exc:
            log.error("heal: %s", exc)
            outcome.update({node_id: str(exc) for node_id in removals})
            return {"outcome": outcome, "resized_to": None, "problem": str(exc)}
        if args.replace and not before.auto_scale:
            targets = (before.target_dedicated, before.target_spot)
            if not wait_steady(batch, args.wait):
                problem = (
                    f"nodes removed, but the pool did not become steady within {args.wait:g} s: "
                    f"resize it back to {targets[0]} dedicated + {targets[1]} Spot nodes"
                )
            else:
                try:
                    batch.resize(*targets)
                    log.info("heal: resize the pool back to %d + %d nodes", *targets)
                    resized = {"dedicated": targets[0], "spot": targets[1]}
                except BatchFailure as exc:
                    log.error("heal: %s", exc)
                    problem = str(exc)
    return {"outcome": outcome, "resized_to": resized, "problem": problem}


def cmd_heal(args: argparse.Namespace, batch: BatchService, api: Optional[ManagerApi]) -> int:
    """List (and with --apply reboot, or remove and replace) the pool's failed nodes."""
    look = snapshot(batch, api, args.state_path)
    repairs, skipped = heal(look)
    done: dict[str, Any] = {"outcome": {}, "resized_to": None, "problem": None}
    if args.apply and repairs:
        done = _repair(batch, repairs, args)
    outcome = done["outcome"]
    failed = sum(outcome.get(r.node_id) is not None for r in repairs) if args.apply else 0
    if args.json:
        emit(
            report(
                "heal",
                look.pool.id,
                applied=args.apply,
                repairs=[
                    {
                        "node": r.node_id,
                        "action": r.action,
                        "reason": r.reason,
                        "error": outcome.get(r.node_id),
                    }
                    for r in repairs
                ],
                skipped=[{"node": s.node_id, "reason": s.reason} for s in skipped],
                resized_to=done["resized_to"],
                problem=done["problem"],
            )
        )
    else:
        for skip in skipped:
            print(f"leave {skip.node_id}: {skip.reason}")
        for repair in repairs:
            if not args.apply:
                print(f"would {repair.action} {repair.node_id}: {repair.reason}")
        if not args.apply and any(r.action == "remove" for r in repairs) and args.replace:
            print("then resize the pool back to its targets (Batch allocates fresh nodes)")
        verb = "repaired" if args.apply else "to repair (--apply repairs them)"
        print(
            f"pool {look.pool.id}: {len(repairs) + len(skipped)} failed node(s), "
            f"{len(repairs) - failed} {verb}"
        )
        if done["problem"]:
            print(f"problem: {done['problem']}")
    return EXIT_FAILURE if failed or done["problem"] else EXIT_OK


def cmd_scale(
    args: argparse.Namespace,
    batch: BatchService,
    api: Optional[ManagerApi],
    settings: ScaleSettings,
    memory: Memory,
) -> int:
    """Follow the queue with the pool's Spot nodes, within bounds."""
    assert api is not None

    def one_round() -> bool:
        nonlocal memory
        result = run_round(batch, api, settings, memory)
        memory = result.memory
        steps = result.plan.steps if result.plan is not None else ()
        if args.json:
            view = result.view
            emit(
                report(
                    "scale",
                    batch.pool_id,
                    applied=settings.apply,
                    ok=result.ok,
                    problem=result.why,
                    desired=result.plan.desired if result.plan is not None else None,
                    target=view.target if view is not None else None,
                    demand=view.demand if view is not None else None,
                    dedicated=view.dedicated if view is not None else None,
                    held=dict(view.held) if view is not None else {},
                    steps=[
                        {
                            "act": s.act.value,
                            "nodes": list(s.nodes),
                            "target": s.target,
                            "reason": s.reason,
                            "failed": sorted(set(s.nodes) & result.failed),
                        }
                        for s in steps
                    ],
                )
            )
        elif not settings.apply:
            for step in steps:
                print(f"would {describe(step)}" if step.nodes or step.target else describe(step))
        return result.ok

    if args.every is not None:
        return repeat(args.every, one_round, BatchFailure)
    return EXIT_OK if one_round() else EXIT_FAILURE
