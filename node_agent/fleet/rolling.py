"""``fleet roll``'s command: the pool's package references changed if asked, then
rounds (``roller.roll_round``) until every node runs the pool's packages, the roll is
stuck, or a signal stops it (a later ``fleet roll --apply`` carries on). Thin."""

from __future__ import annotations

import argparse
import time
from typing import Any, Optional

from node_agent.common.errors import EXIT_FAILURE, EXIT_OK, InvalidInput, Problem
from node_agent.common.log import get_logger
from node_agent.fleet.actions import emit, report
from node_agent.fleet.batch import BatchFailure, BatchService
from node_agent.fleet.looping import Stopped, pause
from node_agent.fleet.roll import RollAct, RollMemory, RollPlan
from node_agent.fleet.roller import (
    RollSettings,
    new_references,
    parse_packages,
    roll_round,
    save_roll,
)
from node_agent.fleet.times import iso
from node_agent.manager.api import ManagerApi

log = get_logger("fleet")


def _roll_report(plan: RollPlan, settings: RollSettings, pool_id: str, ok: bool) -> dict[str, Any]:
    return report(
        "roll",
        pool_id,
        applied=settings.apply,
        ok=ok,
        since=iso(plan.memory.since),
        steps=[
            {"act": s.act.value, "nodes": list(s.nodes), "reason": s.reason} for s in plan.steps
        ],
        left=plan.left,
        in_flight=sorted([*plan.memory.draining, *plan.memory.rebooting]),
        done=sorted(plan.memory.done),
        left_alone=dict(plan.left_alone),
        finished=plan.finished,
        stuck=plan.stuck,
    )


def _roll_text(plan: RollPlan, settings: RollSettings) -> None:
    verb = "would " if not settings.apply else ""
    for step in plan.steps:
        nodes = ", ".join(step.nodes)
        if step.act is RollAct.WAIT:
            print(f"wait: {nodes}: {step.reason}")
        elif step.act is RollAct.DRAIN:
            print(f"{verb}take offline lazily the worker(s) of {nodes}: {step.reason}")
        else:
            print(f"{verb}reboot {nodes}: {step.reason}")
    for node_id, why in sorted(plan.left_alone.items()):
        print(f"leave {node_id}: {why}")
    if plan.stuck:
        print(f"stuck: {plan.stuck}")
    print(
        "roll finished: every node runs the pool's packages"
        if plan.finished
        else f"{plan.left} node(s) still to roll, at most {settings.at_once} at a time"
    )


def cmd_roll(
    args: argparse.Namespace,
    batch: BatchService,
    api: Optional[ManagerApi],
    settings: RollSettings,
    memory: Optional[RollMemory],
) -> int:
    """Change the pool's package references if asked, then roll every node onto
    them, a few at a time (without --apply: the first round's plan)."""
    assert api is not None
    pool = batch.pool()
    wanted, _ = parse_packages(args.package)
    references, problems, warnings = new_references(pool, wanted)
    if problems:
        raise InvalidInput("invalid input for fleet roll", problems)
    for warning in warnings:
        log.warning("roll: %s", warning)
    change = references != pool.references
    if memory is not None and change:
        why = (
            f"a roll is under way since {iso(memory.since)} ({args.roll_file}): carry it on "
            "without --package, or remove that file to begin another"
        )
        raise InvalidInput("invalid input for fleet roll", [Problem("--package", why)])
    if change:
        shown = ", ".join(f"{r.name} {r.version or '(default version)'}" for r in references)
        print(f"{'' if settings.apply else 'would '}set the pool's packages: {shown}", flush=True)
    if memory is None:
        memory = RollMemory(time.time())
        if settings.apply:
            if change:
                batch.set_references(references)
                log.info("roll: the pool's package references are now %s", shown)
            save_roll(args.roll_file, memory)

    def one_round() -> tuple[bool, Optional[RollPlan]]:
        nonlocal memory
        assert memory is not None
        result = roll_round(batch, api, settings, memory, time.time())
        plan = result.plan
        if plan is not None:
            if args.json:
                emit(_roll_report(plan, settings, pool.id, result.ok))
            else:
                _roll_text(plan, settings)
        if settings.apply:
            memory = result.memory
            if plan is not None and plan.finished:
                args.roll_file.unlink(missing_ok=True)
            else:
                save_roll(args.roll_file, memory)
        return result.ok, plan

    if not settings.apply:
        ok, plan = one_round()
        return EXIT_OK if ok and plan is not None else EXIT_FAILURE
    try:
        while True:
            try:
                _, plan = one_round()
            except BatchFailure as exc:
                log.error("%s; trying again in %g s", exc, args.every)
                plan = None
            if plan is not None and plan.finished:
                return EXIT_OK
            if plan is not None and plan.stuck:
                log.error("roll: stopped: %s; fix it, then run roll --apply again", plan.stuck)
                return EXIT_FAILURE
            pause(args.every)
    except Stopped as exc:
        log.info("roll: stopped by %s; fleet roll --apply carries on", exc)
        return EXIT_OK
