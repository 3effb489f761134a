"""Checks of the node's own state: the worker's config and credentials, disk and
memory, the agent's state file."""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

import psutil
import yaml

from node_agent.bootstrap.survey import unwritable
from node_agent.common.redact import describe_yaml_error
from node_agent.doctor.context import NEEDS_ENV, Context
from node_agent.doctor.report import Row, Status
from node_agent.node.flavour import Flavour
from node_agent.node.layout import V2_CONFIG, V3_CONFIG
from node_agent.runtime.health import MEMORY_FLOOR, disk_floor, size
from node_agent.runtime.state import STATE_FILE, StateProblem, process_alive, read_state


def check_worker_config(ctx: Context) -> list[Row]:
    """The worker config parses; credentials present or not (never shown)."""
    layout, flavour = ctx.layout, ctx.flavour
    if layout is None or flavour is None:
        return [Row("worker config", Status.SKIPPED, NEEDS_ENV)]
    v2 = flavour is Flavour.V2
    config = Path(layout.worker_dir, V2_CONFIG if v2 else V3_CONFIG)
    rows = []
    if not config.exists():
        rows.append(
            Row(
                "worker config",
                Status.WARNING,
                f"{config} does not exist yet",
                "node-agent run (or bootstrap) writes it",
            )
        )
    else:
        try:
            if v2:
                configparser.ConfigParser().read_string(config.read_text(encoding="utf-8"))
            elif not isinstance(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, dict):
                raise ValueError("not a mapping")
            rows.append(Row("worker config", Status.OK, f"{config} ({flavour.value})"))
        except (OSError, ValueError, yaml.YAMLError, configparser.Error) as exc:
            why = describe_yaml_error(exc) if isinstance(exc, yaml.YAMLError) else str(exc)
            rows.append(
                Row(
                    "worker config",
                    Status.FAILED,
                    f"{config} cannot be parsed: {why.splitlines()[0]}",
                    "delete it: node-agent rewrites it at the next start",
                )
            )
    credentials = Path(layout.credentials(flavour))
    if credentials.exists():
        rows.append(Row("credentials", Status.OK, f"present in {credentials} (not shown)"))
    else:
        rows.append(
            Row(
                "credentials",
                Status.OK,
                "none yet: the worker registers with the Manager at its first start",
            )
        )
    return rows


def check_shared_dir(ctx: Context) -> list[Row]:
    """node-agent can write in the shared dir (its state, the worker's config)."""
    if ctx.layout is None:
        return [Row("shared dir", Status.SKIPPED, NEEDS_ENV)]
    problem = unwritable(ctx.layout.shared_dir)
    if problem is None:
        return [Row("shared dir", Status.OK, f"{ctx.layout.shared_dir} is writable")]
    where, _, fix = problem.partition("; ")
    return [Row("shared dir", Status.FAILED, where, fix or "check the node's disk")]


def check_resources(ctx: Context) -> list[Row]:
    """Free disk on the node root against Batch's DiskFull threshold; free memory."""
    rows = []
    if ctx.env is None:
        rows.append(Row("disk", Status.SKIPPED, NEEDS_ENV))
    else:
        floor = disk_floor(ctx.env)  # Batch marks the node DiskFull below this
        try:
            free = shutil.disk_usage(ctx.env.node.root_dir).free
        except OSError as exc:
            rows.append(
                Row(
                    "disk",
                    Status.FAILED,
                    f"{ctx.env.node.root_dir}: {exc.strerror}",
                    "check AZ_BATCH_NODE_ROOT_DIR",
                )
            )
        else:
            status = (
                Status.OK
                if free >= 2 * floor
                else (Status.WARNING if free >= floor else Status.FAILED)
            )
            rows.append(
                Row(
                    "disk",
                    status,
                    f"{size(free)} free on {ctx.env.node.root_dir} (DiskFull below {size(floor)})",
                    None
                    if status is Status.OK
                    else "free space (old job outputs, caches) or use a VM size with a "
                    "larger temporary disk",
                )
            )
    available = psutil.virtual_memory().available
    rows.append(
        Row(
            "memory",
            Status.OK if available >= MEMORY_FLOOR else Status.WARNING,
            f"{size(available)} available",
            None if available >= MEMORY_FLOOR else "use a VM size with more memory",
        )
    )
    return rows


def check_agent(ctx: Context) -> list[Row]:
    """The agent's state: running, restarts, last exit."""
    if ctx.layout is None:
        return [Row("agent", Status.SKIPPED, NEEDS_ENV)]
    path = os.path.join(ctx.layout.agent_dir, STATE_FILE)
    try:
        state = read_state(path)
    except StateProblem as exc:
        return [
            Row(
                "agent",
                Status.WARNING,
                f"the state file {path} {exc}",
                "node-agent rewrites it at its next start; if no agent runs, restart the node",
            )
        ]
    if state is None:
        return [
            Row(
                "agent",
                Status.WARNING,
                "has not run on this node",
                "node-agent run is the pool's start task: check startTask.commandLine",
            )
        ]
    running = process_alive(state.agent_pid, state.agent_create_time)
    last = (
        ""
        if state.last_exit_code is None
        else f", last exit {state.last_exit_code} ({state.last_exit_reason})"
    )
    found = (
        f"{'running' if running else 'not running'}, phase {state.phase}, "
        f"{state.restarts} restart(s){last}"
    )
    if state.gave_up and not running:
        return [
            Row(
                "agent",
                Status.FAILED,
                f"{found}, {state.stop_reason}",
                "fix what the worker's output in stdout.txt/stderr.txt shows, then restart "
                "the node (the start task runs again)",
            )
        ]
    if state.crash_loop:
        return [
            Row(
                "agent",
                Status.FAILED,
                found + ", CRASH LOOP",
                "read the worker's output in stdout.txt/stderr.txt for why it keeps exiting",
            )
        ]
    return [
        Row(
            "agent",
            Status.OK if running else Status.WARNING,
            found,
            None
            if running
            else "the start task is not running: see its exit in "
            "Batch Explorer, or restart the node",
        )
    ]
