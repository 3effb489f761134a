"""The worker process as the agent starts it, and a worker left behind.

``worker_spec`` decides (pure) the command line, working dir and environment of
the Flamenco Worker for the planned flavour; ``stop_stale_worker`` stops a worker
tree that an agent killed without warning (SIGKILL, OOM) left running.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import psutil

from node_agent.bootstrap import Plan
from node_agent.common.log import get_logger
from node_agent.config.settings import Settings
from node_agent.node.flavour import Flavour
from node_agent.runtime import proctree
from node_agent.runtime.state import AgentState

log = get_logger("worker")

_HIDDEN_FROM_WORKER = ("FLAMENCO_REGISTRATION_SECRET",)


@dataclass(frozen=True)
class WorkerSpec:
    """How to start the worker: command, working dir, environment."""

    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]


def worker_spec(plan: Plan, settings: Settings, environ: Mapping[str, str]) -> WorkerSpec:
    """The worker's command line and environment for the planned flavour (pure).

    The shared dir is first on ``PATH`` (Batch puts it last; the tools must win), the
    data dir is stable (``FLAMENCO_HOME`` for v3, ``HOME`` for v2) so credentials
    survive restarts and reboots; ``worker_args`` come last.
    """
    env = {k: v for k, v in environ.items() if k not in _HIDDEN_FROM_WORKER}
    shared = plan.layout.shared_dir
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != shared]
    env["PATH"] = os.pathsep.join([shared, *path])
    argv: tuple[str, ...] = (plan.worker_executable,)
    if plan.flavour.flavour is Flavour.V2:
        env["HOME"] = plan.layout.worker_home
    else:
        env["FLAMENCO_HOME"] = plan.layout.worker_home
        env["FLAMENCO_WORKER_NAME"] = plan.worker_name
        # Its log writer colours every line unless NO_COLOR is set: stdout.txt is
        # read in Batch Explorer, not a terminal.
        env["NO_COLOR"] = "1"
        argv += ("-restart-exit-code", str(settings.restart_exit_code))
    argv += settings.worker_args
    return WorkerSpec(argv=argv, cwd=plan.layout.worker_dir, env=tuple(sorted(env.items())))


def stop_stale_worker(previous: Optional[AgentState], grace: float) -> None:
    """Stop a worker tree left running by an agent that was killed (SIGKILL, OOM):
    every process carrying its token; SIGTERM, then SIGKILL after ``grace``. Only
    the token counts, never a pid from the state file: a state file is advice, and
    one naming some other process must not get that process killed."""
    if previous is None or previous.worker_token is None:
        return
    members = proctree.tree_members(previous.worker_token)
    if not members:
        return
    log.warning(
        "a worker left by a previous agent (pid %s) is still running: stopping %d "
        "process(es) of its tree",
        previous.worker_pid,
        len({p.pid for p in members}),
    )
    proctree.send(members, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace)
    proctree.send(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)
