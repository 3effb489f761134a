"""Which signals stop the agent, which it ignores, and catching them from the very
start of ``run`` (the supervisor takes them over once it runs)."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# Signals that would kill the agent by default and mean nothing to it: noted, ignored
# (by a handler, not SIG_IGN, which the worker would inherit across exec).
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def hold() -> list[str]:
    """From the very start of ``run`` until the supervisor takes over: a stop signal
    is noted in the list returned (then honoured: supervision ends before the
    worker starts, and says so) instead of killing the agent without a word."""
    received: list[str] = []

    def note(signum: int, _frame: object) -> None:
        if signum in STOP_SIGNALS:
            received.append(signal.Signals(signum).name)

    for sig in (*STOP_SIGNALS, *IGNORED_SIGNALS):
        signal.signal(sig, note)
    return received
