"""Ctrl-C and SIGTERM for the package builders: the build stops, everything it
made is removed on the way out (its ``with`` blocks and ``finally`` clauses run),
and the command says so in one line and exits 128 + the signal's number.

Both signals become ``Stopped``, raised in the main thread where the build runs;
it derives from ``BaseException`` so that no ``except Exception`` swallows it.
Only the first signal stops the build: one sent while it cleans up is ignored, so
that the clean-up is never cut short.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The build was stopped by ``signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


@contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Stopped`` (the first of them)."""
    stopped: list[int] = []

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        if not stopped:
            stopped.append(signum)
            raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def report(prog: str, stop: Stopped, what: str) -> int:
    """Say that ``prog`` was stopped (and that ``what`` is left behind); the exit code."""
    print(f"{prog}: stopped by {stop.name}; {what}", file=sys.stderr)
    return 128 + stop.signum
