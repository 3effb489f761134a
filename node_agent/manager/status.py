"""The agent's one voice towards the Manager about the v3 worker's status.

Two causes may want the worker off new work: a platform event (``offline``: it
finishes its current task, signs off and exits 0) and an unfit node (``asleep``: it
finishes its current task and takes no new one, its process staying up). Each
cause says what it wants; the strongest wish is sent as a lazy status request
(offline before asleep), and ``awake`` once no cause wants anything, but only to a
worker the agent asked something of: an operator's own choice is left alone.
Requests go to the worker id of the credentials file, so a worker that registered
anew gets the request again.

A request is sent once per worker run. A worker that starts again (killed without
signing off, say) signs on, and the Manager answers its sign-on with ``awake`` unless
a request is pending: so at every start what the Manager has is forgotten, and the
next wish is sent again once the worker has signed on. Until then the Manager may
still show the status of the run before, and asking for that very status would only
cancel a pending request: so after a start the worker's entry is looked at first.

Causes live in different threads (health, Scheduled Events); the Manager is asked
outside the lock, so none waits for another's request. Requests that cross leave
what the Manager holds unknown: the next wish is sent again.

A request stays pending on the Manager until the worker takes it, even across its
restarts and the node's reboots, and a worker signing on gets it: an ``offline``
nothing wants any more would end its life (exit 0, and supervision with it), an
``asleep`` keep it idle. So the worker asked is recorded in the agent's dir
(``status-asked``) until it is set awake again, and before every worker start a
request of the agent's that no cause wants any more is replaced by ``awake``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from node_agent.common.fsutil import Unsuitable, atomic_write, read_regular_file
from node_agent.common.log import get_logger
from node_agent.manager.api import ManagerApi, get_worker, set_status
from node_agent.manager.credentials import worker_id

log = get_logger("worker_status")

STRONGEST_FIRST = ("offline", "asleep")


class StatusRequests:
    """What each cause wants of the worker's status, and what was sent."""

    def __init__(self, api: ManagerApi, credentials: Path, asked_file: Optional[Path]) -> None:
        self.api = api
        self.credentials = credentials
        self.asked_file = asked_file  # where ``_asked`` outlives the agent (None: nowhere)
        self._wanted: dict[str, str] = {}  # cause -> status
        # The worker asked to leave awake: set awake again once nothing is wanted.
        self._asked: Optional[str] = self._load()
        # (worker id, status) the Manager has for this worker run: not sent again.
        self._sent: Optional[tuple[str, str]] = None
        self._started = False  # a worker started: the Manager may show the run before
        self._calls = 0  # Manager calls under way
        self._changes = 0  # calls begun, worker starts and forgets so far
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()  # taken before ``_lock``, never after

    def want(self, cause: str, status: Optional[str]) -> bool:
        """``cause`` wants the worker to go to ``status`` lazily (None: it wants
        nothing any more); the resulting request is sent if it changed. True when
        the Manager has what is wanted; False when it could not be asked (no
        credentials yet, the Manager away) or the Manager may still show the run
        before: the next call tries again."""
        with self._lock:
            if status is None:
                self._wanted.pop(cause, None)
            else:
                self._wanted[cause] = status
        return self._push()

    def before_start(self) -> bool:
        """Before a worker starts: a request of the agent's pending on the Manager
        (of the run before, the node before its reboot) is replaced by what the
        causes want now (``awake`` when nothing), so that the worker never gets an
        older wish at its sign-on. False when the Manager did not take it: an older
        ``offline`` may still reach the worker."""
        with self._lock:
            if self._asked is None or worker_id(self.credentials) != self._asked:
                return True  # nothing asked, or of an entry this worker no longer signs on as
            self._sent = None  # whatever was thought sent: the wish of now, again
            before = self._changes
        # No worker runs: what is asked now simply replaces what is pending (the
        # start that follows makes the next wish look at the Manager again).
        taken = self._push(look_first=False)
        with self._lock:
            crossed = self._changes > before + 1  # a cause spoke, or a call crossed
        if crossed:  # its wish goes after ours
            taken = self._push(look_first=False)
        if not taken:
            log.warning(
                "could not set worker %s's status before its start: an offline or "
                "asleep the agent asked for earlier may still reach it at its sign-on",
                self._asked,
            )
        return taken

    def _push(self, look_first: bool = True) -> bool:
        """Send what the causes want now, unless the Manager has it (as ``want``);
        after a worker start, look at its entry first (unless ``look_first`` is
        off)."""
        with self._lock:
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
            check = look_first and self._started and target is not None
            self._changes += 1
            began = self._changes if self._calls == 0 else None
            self._calls += 1
        if target is not None:  # before the request: a pending one is never unrecorded
            self._sync_record()
        kept: Optional[bool] = None
        try:
            kept = self._ask(sending, check)
        finally:
            self._settle(sending, kept, began)
        return kept is True

    def worker_started(self) -> None:
        """A worker was just started: what the Manager has may have changed."""
        with self._lock:
            self._sent = None
            self._started = True
            self._changes += 1

    def forget(self) -> None:
        """The worker's entry was removed from the Manager: nothing to undo there."""
        with self._lock:
            self._sent = self._asked = None
            self._changes += 1
        self._sync_record()

    def _load(self) -> Optional[str]:
        if self.asked_file is None:
            return None
        try:
            data = read_regular_file(str(self.asked_file), 1024)
        except (OSError, Unsuitable):
            return None
        text = data.decode("ascii", "replace").strip() if data else ""
        return text or None

    def _sync_record(self) -> None:
        """Make the record say who is asked now (no file: nobody). Threads write it
        in turn, each what holds when it writes, so the last write tells the last
        change. A failure is logged: the record only matters across a restart of
        the agent."""
        if self.asked_file is None:
            return
        with self._record_lock:
            with self._lock:
                asked = self._asked
            try:
                if asked is None:
                    self.asked_file.unlink(missing_ok=True)
                else:
                    atomic_write(str(self.asked_file), f"{asked}\n".encode(), 0o644)
            except OSError as exc:
                log.warning("cannot record the worker asked in %s: %s", self.asked_file, exc)

    def _ask(self, sending: tuple[str, str], check: bool) -> Optional[bool]:
        """Ask the Manager for ``sending`` (with ``check``: look at the worker's entry
        first). True when it has it for this worker run; False when it was asked or
        has it, but the next call must look again; None when it could not be asked."""
        current, status = sending
        if check:
            found = get_worker(self.api, current)
            if found is None:
                return None
            if found.requested == status:
                return True  # the worker gets it at sign-on or at its next request
            if found.status == status:
                # Perhaps the status of the run before, which this worker's sign-on
                # replaces: asked for once the Manager shows otherwise. Asking now only
                # cancels another request pending, which must not reach the worker.
                if found.requested and not set_status(self.api, current, status, lazy=True):
                    return None
                return False
        if not set_status(self.api, current, status, lazy=status != "awake"):
            return None
        return True

    def _settle(self, sending: tuple[str, str], kept: Optional[bool], began: Optional[int]) -> None:
        """Record what a call to the Manager left there (``kept``: as ``_ask``
        returned). ``began``: the count of changes when the call began, None when
        another call was under way then."""
        cleared = False
        with self._lock:
            self._calls -= 1
            if kept is None or began != self._changes:
                # A call that failed (perhaps after the Manager took it), calls that
                # crossed (taken in either order), or a worker started meanwhile:
                # what the Manager holds is unknown.
                self._sent = None
            elif kept and sending[1] == "awake":
                self._sent = self._asked = None
                cleared = True
            elif kept:
                self._sent = sending
                self._started = False
        if cleared:
            self._sync_record()
