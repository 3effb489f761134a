"""The worker ids this node's v3 worker has held, kept in the agent's dir on the
node (``<shared>/.node-agent/worker-ids``, one id a line, newest last).

With node-agent's own worker name (``<pool>-<short node id>``) an entry of that name
on the Manager is this node's. An operator's ``worker_name`` may be the same on
every node of a pool; then an entry is this node's only if its id is listed here,
and nothing else of that name is ever removed. The file lives as long as the
node's disk: a reimaged node starts a new list, and its old entries are left to the
operator (``fleet prune`` leaves a name several nodes share alone too).
"""

from __future__ import annotations

import re
from typing import Optional

from node_agent.common.fsutil import Unsuitable, atomic_write, read_regular_file
from node_agent.common.log import get_logger

log = get_logger("worker_ids")

KEEP = 64  # ids kept: a node re-registers a handful of times in its life, not more
LIMIT = 64 * 1024  # bytes: far more than KEEP ids take
_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


class WorkerIds:
    """The ids this node's worker has held, read from and written to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._failed: Optional[str] = None  # why the last write failed (logged once)

    def held(self) -> frozenset[str]:
        """Every id listed (nothing when the file is missing or unreadable)."""
        return frozenset(self._read())

    def remember(self, worker_id: str) -> None:
        """List ``worker_id`` (a write that fails is logged once and tried again at
        the next call: the id is still in use, so nothing is lost meanwhile)."""
        ids = self._read()
        if worker_id in ids or not _ID.fullmatch(worker_id):
            return
        ids = [*ids, worker_id][-KEEP:]
        try:
            atomic_write(self.path, "".join(f"{i}\n" for i in ids).encode(), 0o644)
        except OSError as exc:
            text = exc.strerror or str(exc)
            if self._failed != text:
                log.warning("cannot record worker id %s in %s: %s", worker_id, self.path, text)
            self._failed = text
            return
        self._failed = None

    def _read(self) -> list[str]:
        try:
            data = read_regular_file(self.path, LIMIT)
        except (OSError, Unsuitable) as exc:
            log.warning("cannot read %s (%s): no earlier worker ids known", self.path, exc)
            return []
        if data is None:
            return []
        lines = data.decode("ascii", "replace").split()
        return [line for line in lines if _ID.fullmatch(line)]
