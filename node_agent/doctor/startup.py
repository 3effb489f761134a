"""The start-up health report (``node-agent doctor``, once, into stderr.txt), run
beside the worker, never before it.

Its checks run tools (``blender --version`` and friends) that can take seconds,
and the worker must not wait for them, nor a stop signal for the report. So the
report runs in a child process of its own, forked before the agent starts any
thread, while the agent goes on to start the worker.

Why a process and not a thread: the agent is a child subreaper that reaps every
child with ``waitpid(-1)``. A tool that ``subprocess.run`` started in a thread of
the agent would be the agent's child, and the supervisor could collect its exit
status first; ``subprocess`` then gets ECHILD and takes the exit for 0, so a
``blender --version`` that fails would be reported fine. Run in a process of its
own, the report's tools are that process's children, waited for by it alone. The
agent reaps only the report process itself, which it claims (``proctree.claim``) so
that its exit is never taken for the worker's.

The report process leads a process group of its own, runs at a lower priority (a
render and the worker's start come first), dies with the agent (parent-death
signal), and takes its group with it when it is done: a tool that hangs past its
check's time limit is not left behind. When supervision ends first (a stop signal),
the agent kills that group at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Callable, Optional

from node_agent.common.log import get_logger, log_lines
from node_agent.config.settings import Settings
from node_agent.runtime import proctree
from node_agent.runtime.stopsignals import IGNORED_SIGNALS, STOP_SIGNALS

log = get_logger("health_report")

CHECK_LIMIT = 15.0  # seconds the report's checks may take
NICENESS = 10  # the report yields the CPU to the worker and the render


def report(environ: Mapping[str, str], settings: Settings) -> None:
    """Run every check and log the report, in this process."""
    from node_agent import doctor  # noqa: PLC0415 (off the worker's start path)

    rows = doctor.run_checks(environ, limit=CHECK_LIMIT, settings=settings)
    failed = sum(r.status is doctor.Status.FAILED for r in rows)
    heading = "health report (node-agent doctor): " + (
        "all checks passed" if not failed else f"{failed} check(s) failed"
    )
    lines = [f"  {line}" for line in doctor.render(rows).splitlines()]
    log_lines(log, logging.INFO, [heading, *lines])


class StartupReport:
    """The report's process, as the agent sees it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exit_code: Optional[int] = None  # set once reaped

    def _exited(self, code: int) -> None:
        self.exit_code = code

    def stop(self) -> None:
        """End the report now if it is still running (its whole group), and reap it."""
        if self.exit_code is not None:
            return
        proctree.unclaim(self.pid)
        # Not reaped yet, so its pid (and group id) cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.exit_code = -int(signal.SIGKILL)


def start(
    environ: Mapping[str, str], settings: Settings, *, close: Callable[[], None]
) -> Optional[StartupReport]:
    """Fork the report's process (call before any thread starts); ``close`` runs in
    it first (the node's lock is the agent's alone). None when it cannot be forked:
    the agent goes on without a report."""
    arm = proctree.parent_death_signal(signal.SIGKILL)
    try:
        pid = os.fork()
    except OSError as exc:
        log.warning("no start-up health report: cannot start it (%s)", exc.strerror)
        return None
    if pid == 0:  # pragma: no cover (the child; its output is what tests look at)
        _child(environ, settings, close, arm)
    with contextlib.suppress(OSError):  # its own group before anyone signals it
        os.setpgid(pid, pid)
    started = StartupReport(pid)
    proctree.claim(pid, started._exited)
    return started


def _child(
    environ: Mapping[str, str],
    settings: Settings,
    close: Callable[[], None],
    arm: Callable[[], None],
) -> None:
    """The report's process: never returns into the agent's code."""
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        for sig in (*STOP_SIGNALS, *IGNORED_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        arm()
        os.nice(NICENESS)
        close()
        report(environ, settings)
        code = 0
    except Exception as exc:  # noqa: BLE001 (the worker runs on: say it, never a traceback)
        log.warning("the start-up health report failed: %r", exc)
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        # Its tools still running (past their limit) go with it; only ever its own
        # group, never the agent's.
        if os.getpgrp() == os.getpid():
            with contextlib.suppress(OSError):
                os.killpg(0, signal.SIGKILL)
        os._exit(code)
