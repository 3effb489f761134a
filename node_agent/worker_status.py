"""The agent's one voice towards the Manager about the v3 worker's status.

Two causes may want the worker off new work: a platform event (``offline``: it
finishes its current task, signs off and exits 0) and an unfit node (``asleep``: it
finishes its current task and takes no new one, its process staying up). Each
cause says what it wants; the strongest wish is sent as a lazy status request
(offline before asleep), and ``awake`` once no cause wants anything, but only to a
worker the agent asked something of: an operator's own choice is left alone.
Requests go to the worker id of the credentials file, so a worker that registered
anew gets the request again.

Causes live in different threads (health, Scheduled Events); the Manager is asked
outside the lock, so none waits for another's request. Requests that cross leave
what the Manager holds unknown: the next wish is sent again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from node_agent.credentials import worker_id
from node_agent.manager_api import ManagerApi, set_status

STRONGEST_FIRST = ("offline", "asleep")


class StatusRequests:
    """What each cause wants of the worker's status, and what was sent."""

    def __init__(self, api: ManagerApi, credentials: Path) -> None:
        self.api = api
        self.credentials = credentials
        self._wanted: dict[str, str] = {}  # cause -> status
        # The worker asked to leave awake: set awake again once nothing is wanted.
        self._asked: Optional[str] = None
        # (worker id, status) the Manager has: not sent again.
        self._sent: Optional[tuple[str, str]] = None
        self._calls = 0  # Manager calls under way
        self._changes = 0  # calls begun and forgets so far
        self._lock = threading.Lock()

    def want(self, cause: str, status: Optional[str]) -> bool:
        """``cause`` wants the worker to go to ``status`` lazily (None: it wants
        nothing any more); the resulting request is sent if it changed. True when
        the Manager has what is wanted; False when it could not be asked (no
        credentials yet, the Manager away): the next call tries again."""
        with self._lock:
            if status is None:
                self._wanted.pop(cause, None)
            else:
                self._wanted[cause] = status
            wanted = set(self._wanted.values())
            target = next((s for s in STRONGEST_FIRST if s in wanted), None)
            current = worker_id(self.credentials)
            if current is None:
                return False
            if target is None and self._asked != current:
                return True  # nothing was asked of this worker: nothing to undo
            sending = (current, target or "awake")
            if self._sent == sending and self._calls == 0:  # (one under way may change it)
                return True
            if target is not None:
                self._asked = current
            self._changes += 1
            began = self._changes if self._calls == 0 else None
            self._calls += 1
        done = False
        try:
            done = set_status(self.api, current, sending[1], lazy=target is not None)
        finally:
            self._settle(sending, done, began)
        return done

    def forget(self) -> None:
        """The worker's entry was removed from the Manager: nothing to undo there."""
        with self._lock:
            self._sent = self._asked = None
            self._changes += 1

    def _settle(self, sending: tuple[str, str], done: bool, began: Optional[int]) -> None:
        """Record what a call to the Manager left there (``done``: it took the
        request). ``began``: the count of changes when the call began, None when
        another call was under way then."""
        with self._lock:
            self._calls -= 1
            if not done or began != self._changes:
                # A call that failed (perhaps after the Manager took it), or calls that
                # crossed (taken in either order): what the Manager holds is unknown.
                self._sent = None
            elif sending[1] == "awake":
                self._sent = self._asked = None
            else:
                self._sent = sending
