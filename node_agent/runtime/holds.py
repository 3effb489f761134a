"""What other threads ask of the supervisor's main thread, safely: keep the worker
stopped for a platform event (``hold``, ``release``), and state changes to write
(``post``). Each request wakes the main thread, which alone starts and stops the
worker and writes the state file.

A hold either stops the worker now (SIGTERM) or says that it was asked to stop on
its own (a v3 worker told to go offline once its current task is done): either way
its next exit, whatever the code, is the agent's doing, not a failure and not the
Manager ending the worker's life. A hold placed while no worker runs and released
before the next one starts says nothing about that one's exit.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Optional

# Seconds within which an exit 0 may still be an offline of the agent's, a later one
# being the Manager's as ever: after the offline was taken back, one the worker had
# already begun (it exits within seconds); after a start, one taken at its sign-on,
# which a worker retries every 5 s while the Manager (the very one that would not
# take the offline back) cannot be reached.
TAKEN_BACK_WINDOW = 60.0
TOLD_WINDOW = 600.0


class Holds:
    """Requests to the supervisor; ``wake`` wakes its main thread."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self.reason: Optional[str] = None  # the worker is kept stopped for this
        self.terminate = False  # and must get SIGTERM now
        self.running = False  # a worker (tree) is up: ``started``, reset by the main thread
        self.signalled = False  # set by the main thread: SIGTERM sent for a hold
        self._expected: Optional[str] = None  # why the next exit is the agent's doing
        self._told: Optional[str] = None  # why the next run's exit 0 may be the agent's
        self._told_until = 0.0  # monotonic: until when that holds (early exits only)
        self._expected_until = math.inf  # monotonic: until when ``_expected`` holds
        self._posted: dict[str, Any] = {}

    def hold(self, reason: str, *, terminate: bool) -> None:
        """Keep the worker stopped for ``reason`` until ``release``; with
        ``terminate``, stop it now, else it was asked to stop on its own."""
        with self._lock:
            self.reason = self._expected = reason
            self._expected_until = math.inf
            self.terminate = self.terminate or terminate
            self._posted["platform_event"] = reason
        self._wake()

    def release(self, *, told: bool = True) -> None:
        """End the hold: the worker starts again (at once if it has stopped; one
        still winding down is left running). ``told``: whether an ``offline`` may
        still reach the worker; if not (it was set awake again), only an exit soon
        after (one already going offline) is still the agent's doing."""
        with self._lock:
            if not told:
                self._expected_until = time.monotonic() + TAKEN_BACK_WINDOW
            if self.reason is None:
                return
            self.reason, self.terminate = None, False
            self._posted["platform_event"] = None
        self._wake()

    def started(self) -> None:
        """A worker was started (by the main thread). Only a hold still in place
        concerns its exit: one placed while no worker ran and released since
        concerns no run at all."""
        with self._lock:
            self.running = True
            if self.reason is None:
                self._expected = None
            self._told_until = time.monotonic() + TOLD_WINDOW

    @property
    def held(self) -> bool:
        """Whether the worker is kept stopped and no worker process is up."""
        return self.reason is not None and not self.running

    def may_be_told_offline(self, reason: Optional[str]) -> None:
        """The worker about to start may get an ``offline`` of the agent's at its
        sign-on (one nothing wants any more, which the Manager did not let the agent
        take back): an early exit 0 of that run is the agent's doing, not the
        Manager ending the worker's life (None: it will not)."""
        with self._lock:
            self._told = reason

    def exited(self, code: int) -> Optional[str]:
        """The worker exited with ``code``: why that was the agent's doing (None: it
        was not). After a release, one that got SIGTERM for the hold still counts,
        and one that was only asked to go offline counts with exit 0 (that offline);
        otherwise its exit is judged as any other."""
        with self._lock:
            expected, self._expected = self._expected, None
            signalled, self.signalled = self.signalled, False
            told, self._told = self._told, None
            now = time.monotonic()
            if now > self._told_until:
                told = None  # a run that lasted: not the sign-on's offline
            if now > self._expected_until and not signalled:
                expected = None  # set awake long ago: this exit is the Manager's
            if self.reason is not None or signalled or code == 0:
                return expected or (told if code == 0 else None)
        return None

    def post(self, **changes: Any) -> None:
        """Change the state file (written by the main thread)."""
        with self._lock:
            self._posted.update(changes)
        self._wake()

    def take_posted(self) -> dict[str, Any]:
        """The state changes posted since the last call."""
        with self._lock:
            posted, self._posted = self._posted, {}
        return posted
