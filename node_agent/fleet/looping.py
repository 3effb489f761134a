"""Signals and repetition for fleet's commands. SIGTERM and SIGINT end what a command
is doing at once, even a call waiting for a slow Batch or Manager: the handler raises
``Stopped`` in the main thread, which interrupts the call (the other threads fleet
starts are daemons, left behind). A loop (``status --watch``, ``scale --every``,
``roll --apply``) ends there with exit 0; every file fleet keeps is written
atomically, so an interrupted write leaves the old one."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Callable, Optional

from node_agent.common.log import get_logger

log = get_logger("fleet")


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException: no ``except Exception`` keeps a
    command going past it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: Optional[FrameType]) -> None:
    raise Stopped(signum)


def stop_on_signals() -> None:
    """From now on SIGTERM and SIGINT raise ``Stopped`` in the main thread."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise)


def pause(seconds: float) -> None:
    """Wait ``seconds`` (a signal ends it with ``Stopped``)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def repeat(every: float, work: Callable[[], bool], failure: type[Exception]) -> int:
    """``work`` every ``every`` seconds until SIGTERM or SIGINT (exit 0); a round that
    raises ``failure`` is logged and the next one comes."""
    try:
        while True:
            try:
                work()
            except failure as exc:
                log.error("%s; trying again in %g s", exc, every)
            pause(every)
    except Stopped as exc:
        log.info("stopped by %s", exc)
        return 0
