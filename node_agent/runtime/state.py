"""The agent's state file: what ``node-agent status`` reads, what a new agent reads
to find a worker left behind by one that was killed.

Written atomically on every change, so a reader never sees half a document; not
fsynced: it describes live processes, which a crash of the machine takes with it,
and a file lost that way is a problem reported and rewritten at the next start (an
fsync, twice per start and exit of the worker, cost more than the rest of a
restart). Read as advice, never trusted: every field is checked, and a file that does not hold a
valid state is reported (``StateProblem``) so callers can warn and carry on.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import time
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Callable, Optional

import psutil

from node_agent.common import fsutil
from node_agent.common.log import get_logger
from node_agent.common.redact import REDACTED, is_secret

log = get_logger("state")

STATE_FILE = "state.json"
# 2: times are RFC 3339 UTC text (``2025-01-31T23:59:59.123456Z``); 1 (node-agent
# 0.1.0 before that): Unix seconds. Both are read: nodes run older packages.
STATE_SCHEMA = 2
READ_SCHEMAS = (1, 2)
MAX_STATE_BYTES = 1 << 20  # a real one is under 2 KiB
WRITE_RETRY = 2.0  # seconds between attempts to write the state while that fails


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
    """One snapshot of the agent (the JSON document's fields, documented in docs/state-file.md)."""

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
    gave_up: bool = False
    platform_event: Optional[str] = None  # the event the worker is stopping or stopped for
    unfit: Optional[str] = None  # why the node is unfit for new work (disk, memory)
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The document written to disk (every field a plain value: no deep copy),
        every time as RFC 3339 UTC text to the microsecond."""
        document: dict[str, Any] = {"schema": STATE_SCHEMA}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            document[name] = utc_text(value) if name in TIME_FIELDS and value is not None else value
        return document


_FIELD_NAMES = tuple(field.name for field in fields(AgentState))
# Every float is a time (Unix seconds in the model).
TIME_FIELDS = frozenset(f.name for f in fields(AgentState) if "float" in str(f.type))
_UTC_TEXT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z")


def utc_text(when: float) -> str:
    """Unix seconds as RFC 3339 UTC text to the microsecond (``...T23:59:59.123456Z``)."""
    micros = round(when * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:06d}Z"


def utc_seconds(text: str) -> float:
    """``utc_text``'s text (or RFC 3339 UTC text with fewer digits) as Unix seconds;
    ``ValueError`` for anything else."""
    match = _UTC_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(text)
    whole = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    micros = int((match.group(2) or "0").ljust(6, "0"))
    return (whole * 1_000_000 + micros) / 1_000_000


def _to_the_microsecond(state: AgentState) -> AgentState:
    """The state with its times as the file holds them, so that what is read back
    equals what was written."""
    changes: dict[str, Any] = {
        name: utc_seconds(utc_text(getattr(state, name)))
        for name in TIME_FIELDS
        if getattr(state, name) is not None
    }
    return replace(state, **changes)


def write_state(path: str, state: AgentState) -> AgentState:
    """Stamp and write the state atomically; returns what was written."""
    state = _to_the_microsecond(replace(state, updated_at=time.time()))
    # One line: the C encoder (an indented document takes the pure-Python one, three
    # times the CPU of the rest of the write, at every start and exit).
    data = json.dumps(state.to_json(), sort_keys=True).encode() + b"\n"
    fsutil.atomic_write(path, data, 0o644, durable=False)
    return state


class StateKeeper:
    """The agent's current state and its file, kept in step. A write that fails (a
    full disk, a read-only remount) is logged once and retried every
    ``WRITE_RETRY`` seconds (``retry_in``/``retry``): supervision never stops over
    the state file, and the file tells the truth again once it can be written."""

    def __init__(self, path: str, state: AgentState) -> None:
        self.path = path
        self.state = state
        self._retry_at: Optional[float] = None  # set while writes fail
        self._write()

    def update(self, **changes: Any) -> None:
        """Change the state and write it."""
        self.state = replace(self.state, **changes)
        self._write()

    def retry_in(self) -> Optional[float]:
        """Seconds until the next attempt at a write that failed; None when the file
        is up to date."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def retry(self) -> None:
        """Write again if a write failed and its retry is due."""
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            self._write()

    def _write(self) -> None:
        try:
            self.state = write_state(self.path, self.state)
        except OSError as exc:
            if self._retry_at is None:
                log.warning(
                    "cannot write the state file %s (%s): supervision goes on, and "
                    "node-agent status shows old news until it can be written again "
                    "(retried every %.0f s)",
                    self.path,
                    exc.strerror,
                    WRITE_RETRY,
                )
            self._retry_at = time.monotonic() + WRITE_RETRY
            return
        if self._retry_at is not None:
            log.info("the state file %s is written again", self.path)
            self._retry_at = None


class StateProblem(Exception):
    """The state file is there but cannot be used; the message says why."""


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0


def _time_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        utc_seconds(value)
    except ValueError:
        return False
    return True


# What each field type must hold, by the dataclass's annotation (and a few by name).
_TYPE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_whole, "a whole number"),
    "float": (_seconds, "a number of seconds, 0 or more"),  # schema 1's times
    "str": (lambda v: isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}
_NAME_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "agent_pid": (lambda v: _whole(v) and v > 0, "a process id"),
    "worker_pid": (lambda v: _whole(v) and v > 0, "a process id"),
    "worker_token": (lambda v: isinstance(v, str) and v != "", "a non-empty token"),
    "restarts": (lambda v: _whole(v) and v >= 0, "a whole number, 0 or more"),
    "consecutive_failures": (lambda v: _whole(v) and v >= 0, "a whole number, 0 or more"),
}


def _found(name: str, value: Any) -> str:
    if is_secret(name):
        return REDACTED
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_document(document: Any) -> AgentState:
    if not isinstance(document, dict):
        raise StateProblem(f"holds {_found('', document)}, not a state (a JSON object)")
    problems = []
    schema = document.get("schema")
    if schema not in READ_SCHEMAS or isinstance(schema, bool):
        expected = " or ".join(map(str, READ_SCHEMAS))
        problems.append(f"schema: expected {expected}, found {_found('', schema)}")
    text_times = schema != 1
    values: dict[str, Any] = {}
    for field in fields(AgentState):
        if field.name not in document:
            if field.default is MISSING:
                problems.append(f"{field.name}: missing")
            continue
        value = document[field.name]
        optional = str(field.type).startswith("Optional[")
        if value is None and optional:
            values[field.name] = None
            continue
        kind = str(field.type)[len("Optional[") : -1] if optional else str(field.type)
        check, expected = _NAME_CHECKS.get(field.name, _TYPE_CHECKS[kind])
        if kind == "float" and text_times:
            check, expected = _time_text, "an RFC 3339 UTC time (2025-01-31T23:59:59.123456Z)"
        if not check(value):
            problems.append(f"{field.name}: expected {expected}, found {_found(field.name, value)}")
            continue
        if kind == "float":
            value = utc_seconds(value) if text_times else float(value)
        values[field.name] = value
    if problems:
        raise StateProblem("does not hold a valid state: " + "; ".join(problems))
    return AgentState(**values)


def read_state(path: str) -> Optional[AgentState]:
    """The last state written; None when there is none. ``StateProblem`` when the
    file cannot be read or does not hold a valid state."""
    try:
        raw = fsutil.read_regular_file(path, MAX_STATE_BYTES)
    except OSError as exc:
        raise StateProblem(f"cannot be read: {exc.strerror}") from None
    except fsutil.Unsuitable as exc:
        raise StateProblem(str(exc)) from None
    if raw is None:
        if os.path.lexists(path):
            raise StateProblem("is a symlink or some other non-file")
        return None
    return parse_state(raw)


def parse_state(raw: bytes) -> AgentState:
    """A state document (fields a newer agent added are ignored); ``StateProblem``
    naming every bad field when it is not one."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StateProblem(f"is not valid JSON ({exc})") from None
    return _from_document(document)


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
