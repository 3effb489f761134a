"""The agent's state file: what ``node-agent status`` reads, what a new agent reads
to find a worker left behind by one that was killed.

Written atomically on every change, so a reader never sees half a document.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

import psutil

from node_agent import fsutil

STATE_FILE = "state.json"
STATE_SCHEMA = 1


class Phase:
    """The agent's phases, as written to the state file."""

    STARTING = "starting"
    WAITING_FOR_MANAGER = "waiting-for-manager"
    WAITING_FOR_STORAGE = "waiting-for-storage"
    WAITING_FOR_PLATFORM = "waiting-for-platform"  # the worker stopped for an event
    RUNNING = "running"
    BACKING_OFF = "backing-off"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class AgentState:
    """One snapshot of the agent (the JSON document's fields, documented in README)."""

    agent_pid: int
    agent_create_time: float
    phase: str
    started_at: float
    flavour: str
    worker_name: str
    worker_executable: str
    worker_dir: str
    config_path: str
    worker_pid: Optional[int] = None
    worker_create_time: Optional[float] = None
    worker_token: Optional[str] = None
    worker_started_at: Optional[float] = None
    restarts: int = 0
    consecutive_failures: int = 0
    crash_loop: bool = False
    next_start_at: Optional[float] = None
    last_exit_code: Optional[int] = None
    last_exit_reason: Optional[str] = None
    last_exit_at: Optional[float] = None
    stop_reason: Optional[str] = None
    platform_event: Optional[str] = None  # the event the worker is stopping or stopped for
    unfit: Optional[str] = None  # why the node is unfit for new work (disk, memory)
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The document written to disk."""
        return {"schema": STATE_SCHEMA, **asdict(self)}


def write_state(path: str, state: AgentState) -> AgentState:
    """Stamp and write the state atomically; returns what was written."""
    state = replace(state, updated_at=time.time())
    data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    fsutil.atomic_write(path, data, 0o644)
    return state


def read_state(path: str) -> Optional[AgentState]:
    """The last state written, or None when there is none or it is unreadable."""
    raw = fsutil.read_regular_file(path)
    return None if raw is None else parse_state(raw)


def parse_state(raw: bytes) -> Optional[AgentState]:
    """A state document (fields a newer agent added are ignored); None when it is
    not one."""
    try:
        document = json.loads(raw)
        known = {f.name for f in fields(AgentState)}
        return AgentState(**{k: v for k, v in document.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        return None


def process_alive(pid: Optional[int], create_time: Optional[float]) -> bool:
    """Whether ``pid`` is still the process that was started at ``create_time`` (a
    reused pid is not mistaken for it)."""
    if pid is None or create_time is None:
        return False
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - create_time) < 0.01
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def own_create_time() -> float:
    """This process's start time as psutil reports it."""
    return psutil.Process(os.getpid()).create_time()
