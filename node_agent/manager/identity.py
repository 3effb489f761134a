"""One node, one worker entry on the Manager, carrying the operator's tags (v3).

A v3 worker whose sign-on gets any HTTP error answer (a deleted worker's 403, the
Manager's 500, a proxy's 502) registers as a new worker and leaves its old entry on
the Manager, under the same name. And a newly registered worker has no tags, so
tagged jobs never reach it. So after every worker start, ``IdentityKeeper`` watches
the worker's credentials file in a thread of its own, at a falling rate (2 s, 4 s,
... up to a minute, for a bounded number of looks), and:

- when the credentials appeared or changed (a new registration), applies
  ``worker_tags`` through the Manager's API: a tag the Manager does not have is
  reported once, and nothing is created;
- once the Manager shows the current worker signed on, removes the other entries
  with this worker's name that are ``offline``, ``error`` or never signed on (status
  ``""``): never the current one, never another name (so never another node's
  worker); under an operator's ``worker_name``, which other nodes may share, only
  entries whose ids this node's worker has held (``worker_ids``). Entries the
  Manager still shows as live (a worker killed without signing off stays ``awake``
  until the Manager times it out to ``error`` after a minute) are looked at again
  a few minutes later.

Then it sleeps until the next worker start: nothing at all at rest.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from node_agent.common.errors import unexpected
from node_agent.common.log import get_logger
from node_agent.common.retry import doubling
from node_agent.manager.api import (
    ManagerApi,
    ManagerWorker,
    WorkerTag,
    delete_worker,
    get_worker,
    list_tags,
    list_workers,
    set_tags,
)
from node_agent.manager.credentials import worker_id
from node_agent.manager.worker_ids import WorkerIds

log = get_logger("identity")

FIRST_LOOK = 2.0  # seconds after a worker start
LOOK_CAP = 60.0  # seconds: the longest wait between looks
MAX_LOOKS = 20  # per worker start (about 15 minutes), then wait for the next start
RECHECKS = (150.0, 360.0)  # seconds: looks again at same-name entries still live
# Statuses of entries that are not a running worker: these may be removed.
REMOVABLE = ("offline", "error", "")


def duplicates(
    workers: Sequence[ManagerWorker],
    name: str,
    current: str,
    held: Optional[frozenset[str]] = None,
) -> tuple[list[ManagerWorker], list[ManagerWorker]]:
    """This node's other entries (never ``current``): those to remove, and those the
    Manager still shows as live (pure). An entry is this node's when it is named
    ``name`` and, with ``held`` (a name other nodes may share), its id is in it."""
    others = [
        w for w in workers if w.name == name and w.id != current and (held is None or w.id in held)
    ]
    return (
        [w for w in others if w.status in REMOVABLE],
        [w for w in others if w.status not in REMOVABLE],
    )


def match_tags(known: Sequence[WorkerTag], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ids of the wanted tag names the Manager has, and the names it has not
    (pure; names match exactly)."""
    by_name = {tag.name: tag.id for tag in known}
    return [by_name[n] for n in wanted if n in by_name], [n for n in wanted if n not in by_name]


class IdentityKeeper:
    """Tags new registrations and removes stale same-name entries; see the module."""

    def __init__(
        self,
        api: ManagerApi,
        credentials: Path,
        name: str,
        tags: Sequence[str],
        *,
        first_look: float = FIRST_LOOK,
        rechecks: Sequence[float] = RECHECKS,
        ids: Optional[WorkerIds] = None,
    ) -> None:
        self.api = api
        self.credentials = credentials
        self.name = name
        self.ids = ids  # a name other nodes may share: only these ids are this node's
        self.tags = tuple(tags)
        self.first_look = first_look
        self.rechecks = tuple(rechecks)
        # Credentials present before the first start are not a new registration.
        self.tagged_for = worker_id(credentials)
        if ids is not None and self.tagged_for is not None:
            ids.remember(self.tagged_for)
        self.cleaned_for: Optional[str] = None
        self._pending: list[float] = []  # delays of the rechecks still to do
        self._recheck = False  # whether the next look is a recheck
        self._reported: set[str] = set()  # tag names reported missing
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="identity", daemon=True)

    def start(self) -> IdentityKeeper:
        """Start the (idle) thread."""
        self._thread.start()
        return self

    def worker_started(self) -> None:
        """A worker was just started: watch for its registration and sign-on. Under a
        shared name, the id it starts with is recorded at once: a worker whose sign-on
        fails registers anew and may exit before any look sees that id."""
        if self.ids is not None:
            started_with = worker_id(self.credentials)
            if started_with is not None:
                self.ids.remember(started_with)
        self._wake.set()

    def stop(self) -> None:
        """End the thread (a Manager call in progress finishes on its own)."""
        self._stopped.set()
        self._wake.set()
        self._thread.join(self.api.timeout + 1)

    def _run(self) -> None:
        timeout: Optional[float] = None
        looks = 0
        while True:
            kicked = self._wake.wait(timeout)
            if self._stopped.is_set():
                return
            if kicked:
                self._wake.clear()
                looks, timeout = 0, self.first_look
                continue
            looks += 1
            try:
                timeout = self._look(looks)
            except Exception as exc:  # noqa: BLE001 (a bug must not end the keeping)
                log.error("looking after the worker's identity failed (%s)", unexpected(exc))
                timeout = doubling(self.first_look, LOOK_CAP)(looks + 1)

    def _look(self, looks: int) -> Optional[float]:
        """One look; the wait before the next (None: nothing left to do)."""
        retry = doubling(self.first_look, LOOK_CAP)(looks + 1) if looks < MAX_LOOKS else None
        recheck, self._recheck = self._recheck, False
        current = worker_id(self.credentials)
        if current is None:
            return retry
        if self.ids is not None:
            self.ids.remember(current)
        if current != self.tagged_for:
            log.info("the worker registered at the Manager as %s (%s)", current, self.name)
            if not self._tag(current):
                return retry
            self.tagged_for = current
        if current != self.cleaned_for:
            me = get_worker(self.api, current)
            if me is None or me.status in REMOVABLE:
                if retry is None:
                    log.warning(
                        "worker %s has not signed on at the Manager; stale entries named "
                        "%r are looked at again after the next worker start",
                        current,
                        self.name,
                    )
                return retry
            live = self._remove_stale(current)
            if live is None:
                return retry
            self.cleaned_for = current
            self._pending = list(self.rechecks) if live else []
        elif recheck and not self._remove_stale(current):
            self._pending = []
        if not self._pending:
            return None
        self._recheck = True
        return self._pending.pop(0)

    def _remove_stale(self, current: str) -> Optional[list[ManagerWorker]]:
        """Remove this name's stale entries; the live ones left (None: no listing)."""
        workers = list_workers(self.api)
        if workers is None:
            return None
        held = None if self.ids is None else self.ids.held()
        remove, live = duplicates(workers, self.name, current, held)
        for stale in remove:
            delete_worker(
                self.api,
                stale.id,
                f"a stale entry named {self.name!r} ({stale.status or 'never signed on'}); "
                f"this node's worker is {current}",
            )
        if live:
            log.info(
                "not removing %d other entr%s named %r that the Manager shows as %s "
                "(only offline, error or never signed on ones are removed)",
                len(live),
                "y" if len(live) == 1 else "ies",
                self.name,
                ", ".join(sorted({w.status for w in live})),
            )
        return live

    def _tag(self, current: str) -> bool:
        """Apply ``worker_tags`` to a new registration; False to try again later."""
        if not self.tags:
            return True
        known = list_tags(self.api)
        if known is None:
            return False
        ids, missing = match_tags(known, self.tags)
        for name in missing:
            if name not in self._reported:
                self._reported.add(name)
                log.warning(
                    "worker_tags: the Manager has no tag %r (it has: %s); create it in the "
                    "Manager's web interface (node-agent creates no tags)",
                    name,
                    ", ".join(repr(t.name) for t in known) or "none",
                )
        if not ids:
            return True
        if not set_tags(self.api, current, ids):
            return False
        log.info(
            "tagged worker %s: %s",
            current,
            ", ".join(n for n in self.tags if n not in missing),
        )
        return True
