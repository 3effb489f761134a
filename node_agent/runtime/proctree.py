"""The worker's process tree: find every member, signal it, stop it, reap it.

The worker starts in a session and process group of its own, with a token in its
environment that every descendant inherits, even one that calls ``setsid`` or
double-forks. The agent is a child subreaper, so orphaned descendants are
re-parented to it (and reaped by it) rather than to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Iterable, Sequence
from typing import Callable, Optional

import psutil

from node_agent.common.log import get_logger
from node_agent.common.retry import doubling

log = get_logger("proctree")

TOKEN_VARIABLE = "NODE_AGENT_WORKER_TOKEN"  # noqa: S105 (a variable name, not a secret)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
PIDS_SHOWN = 10  # pids named in a log line; the rest are counted
LOOK_CAP = 0.5  # seconds: the longest wait between looks at leftovers that live on
_subreaper = False  # set by become_subreaper: every descendant stays the agent's


def _prctl() -> Callable[..., int]:
    """libc's ``prctl`` (Linux); raises OSError or AttributeError where there is none."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux). False where unsupported."""
    global _subreaper  # noqa: PLW0603 (a property of the whole process)
    try:
        _subreaper = _prctl()(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def parent_death_signal(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the
    thread that started it dies, however it dies (SIGKILL included), so it never
    outlives its parent. Resolved here, in the parent: the child only calls it."""
    prctl = _prctl()
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


def _has_token(process: psutil.Process, token: str) -> bool:
    try:
        return process.environ().get(TOKEN_VARIABLE) == token
    except (psutil.Error, OSError):
        return False


def tree_members(token: str, pgid: Optional[int] = None) -> list[psutil.Process]:
    """Every live process of a worker tree: any process carrying the token (even
    one left by an agent that was killed) and the members of the worker's process
    group."""
    members = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            in_group = pgid is not None and os.getpgid(process.pid) == pgid
        except OSError:
            continue
        if in_group or _has_token(process, token):
            members.append(process)
    return [p for p in members if _alive(p)]


def _has_children() -> bool:
    """Whether this process has a child, running or not yet reaped."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def worker_tree(token: str, pgid: int) -> list[psutil.Process]:
    """The live processes of this agent's worker tree (``tree_members``), found
    cheaply. The agent being a subreaper, each of them is one of its descendants
    (an orphan, a ``setsid`` daemon included, is re-parented to it): so there are
    none when the agent has no child at all (one system call, the usual answer
    after a worker's exit), and otherwise only its descendants are looked at (the
    environment read only of those outside the worker's group). Without a
    subreaper, every process is."""
    if not _subreaper:
        return tree_members(token, pgid)
    if not _has_children():
        return []
    try:
        descendants = psutil.Process().children(recursive=True)
    except psutil.Error:
        return tree_members(token, pgid)
    members = []
    for process in descendants:
        try:
            in_group = os.getpgid(process.pid) == pgid
        except OSError:
            continue
        if in_group or _has_token(process, token):
            members.append(process)
    return [p for p in members if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def send(processes: Iterable[psutil.Process], sig: signal.Signals) -> None:
    """Send a signal to each process that is still the one we found (pid reuse safe)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


# Children the agent started for its own ends (the start-up health report), by pid:
# what to call with the exit code when ``reap`` collects one. Only the main thread
# starts and reaps children.
_claimed: dict[int, Callable[[int], None]] = {}


def claim(pid: int, on_exit: Callable[[int], None]) -> None:
    """``pid`` is a child of the agent's that is not the worker's: when ``reap``
    collects it, its exit code goes to ``on_exit`` instead of the caller."""
    _claimed[pid] = on_exit


def unclaim(pid: int) -> None:
    """Its owner waits for ``pid`` itself from now on."""
    _claimed.pop(pid, None)


def reap() -> list[tuple[int, int]]:
    """Collect every exited child (``(pid, exit code)``, -N for signal N), so no
    zombie is left; returns at once when none has exited. A claimed child's exit
    goes to its owner, not into the list."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        code = os.waitstatus_to_exitcode(status)
        owner = _claimed.pop(pid, None)
        if owner is not None:
            owner(code)
        else:
            reaped.append((pid, code))


def pid_summary(pids: Sequence[int]) -> str:
    """The first few pids and how many more: one line stays short with hundreds."""
    shown = ", ".join(str(pid) for pid in pids[:PIDS_SHOWN])
    more = len(pids) - PIDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def stop_leftovers(
    token: str, pgid: int, deadline: float, wait: Callable[[float], None], poll: float
) -> None:
    """Stop what outlived the worker (an orphaned Blender, a daemon it forked):
    SIGTERM, then SIGKILL at ``deadline`` (monotonic); reap everything. ``wait(s)``
    sleeps up to ``s`` seconds and returns early when a child exits (the
    supervisor's, which SIGCHLD wakes): a leftover that obeys is seen gone at once.
    One that lives on is looked at again after ``poll`` seconds, then twice as long
    each time up to ``LOOK_CAP``: waiting out a grace costs next to nothing."""
    members = worker_tree(token, pgid)
    if members:
        log.warning(
            "stopping %d process(es) left by the worker: %s",
            len(members),
            pid_summary([p.pid for p in members]),
        )
        send(members, signal.SIGTERM)
        delays = doubling(poll, LOOK_CAP)
        looks = 0
        while members and time.monotonic() < deadline:
            looks += 1
            wait(min(delays(looks), max(0.0, deadline - time.monotonic())))
            reap()
            members = worker_tree(token, pgid)
        while members:
            send(members, signal.SIGKILL)
            wait(poll)
            reap()
            members = worker_tree(token, pgid)
    reap()
