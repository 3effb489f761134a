"""A node's own files as fleet reads them through Batch's file API: the agent's state
file (``<shared>/.node-agent/state.json``, docs/state-file.md) and the list of worker
ids its worker has held (``worker-ids`` beside it). Pure: bytes in, a view or a
``NotAStateFile`` out.

Only the fields fleet shows or decides on are read, each checked; fields fleet does
not know are ignored, so a newer agent's file reads too. The nodes of one pool may
run different node-agent packages, so both forms of the state file's times are
read: Unix seconds (older packages) and ISO 8601 text (newer ones).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from node_agent.fleet.times import seconds

# A worker id as the Manager gives them (a UUID) and node-agent records them.
_WORKER_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


class NotAStateFile(ValueError):
    """The bytes are not a node-agent state file; the message says why."""


@dataclass(frozen=True)
class AgentView:
    """What a node's agent last wrote of itself."""

    phase: str
    worker_name: str
    updated_at: float  # Unix time of the last write
    started_at: Optional[float] = None
    restarts: int = 0
    crash_loop: bool = False
    last_exit_code: Optional[int] = None
    last_exit_reason: Optional[str] = None
    last_exit_at: Optional[float] = None
    stop_reason: Optional[str] = None
    platform_event: Optional[str] = None  # the event the worker is held for
    unfit: Optional[str] = None  # why the node takes no new work (disk, memory)


def _time(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) and value >= 0 else None
    return seconds(value) if isinstance(value, str) else None


def _count(value: Any) -> Optional[int]:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return value if whole and value >= 0 else None


def _code(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _flag(value: Any) -> Optional[bool]:
    return value if isinstance(value, bool) else None


# field: (how it is read, whether it must be there, what it must hold)
_FIELDS: dict[str, tuple[Callable[[Any], Any], bool, str]] = {
    "phase": (_text, True, "text"),
    "worker_name": (_text, True, "text"),
    "updated_at": (_time, True, "a time"),
    "started_at": (_time, False, "a time"),
    "restarts": (_count, False, "a whole number, 0 or more"),
    "crash_loop": (_flag, False, "true or false"),
    "last_exit_code": (_code, False, "a whole number"),
    "last_exit_reason": (_text, False, "text"),
    "last_exit_at": (_time, False, "a time"),
    "stop_reason": (_text, False, "text"),
    "platform_event": (_text, False, "text"),
    "unfit": (_text, False, "text"),
}


def parse_agent(raw: bytes) -> AgentView:
    """A state file's view; ``NotAStateFile`` naming every bad field."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise NotAStateFile(f"is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise NotAStateFile("is not a JSON object")
    schema = document.get("schema")
    problems = []
    if not (isinstance(schema, int) and not isinstance(schema, bool) and schema >= 1):
        problems.append(f"schema: expected 1 or newer, found {json.dumps(schema)[:40]}")
    values: dict[str, Any] = {}
    for name, (read, required, expected) in _FIELDS.items():
        value = document.get(name)
        if value is None:
            if required:
                problems.append(f"{name}: missing")
            continue
        converted = read(value)
        if converted is None:
            problems.append(f"{name}: expected {expected}, found {json.dumps(value)[:40]}")
        else:
            values[name] = converted
    if problems:
        raise NotAStateFile("does not hold a valid state: " + "; ".join(problems))
    return AgentView(**values)


def parse_worker_ids(raw: bytes) -> frozenset[str]:
    """The ids in a ``worker-ids`` file (one a line; anything else is skipped)."""
    lines = raw.decode("ascii", "replace").split()
    return frozenset(line for line in lines if _WORKER_ID.fullmatch(line))
