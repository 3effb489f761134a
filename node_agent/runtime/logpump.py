"""Forward a child's output stream to ours: byte-exact, line-flushed, bounded.

Each pump is a thread that copies one pipe to one file descriptor with plain
``os.read``/``os.write``: whatever was read is written at once (nothing waits in a
buffer, so nothing is lost with a preempted node), in chunks of at most 64 KiB
(a 10 MB line needs no more memory than a short one). At EOF (every holder of the
pipe's write end gone) a last line without a newline gets one, so it is never glued
to the next run's first line. A stalled reader of our output blocks only the pump
thread; the main thread goes on handling signals and stopping the worker.

A failed write is a fault to live through, never the end of the worker's log: on a
full disk (ENOSPC, EDQUOT, also EIO or EFBIG) the chunk is dropped and counted, the
pump keeps reading (the worker never blocks on a full pipe) and keeps trying with
the next chunk, and says how much was lost once a write succeeds again. A
non-blocking output (EAGAIN) is waited on. Only a closed reader (EPIPE, EBADF)
ends the writing for good; the pump then drains without writing.

It writes through ``common.logfiles``, which keeps the start task's stdout.txt and
stderr.txt under their cap: after a chunk that takes a file past it, the pump that
wrote it cuts the file (the worker waits on its pipe meanwhile, about a second per
64 MiB compressed; nothing is lost).
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from typing import Callable, Optional

from node_agent.common import logfiles
from node_agent.common.log import get_logger, rfc3339

log = get_logger("logpump")

CHUNK = 64 * 1024


def utc_stamp() -> bytes:
    """An RFC 3339 UTC timestamp with milliseconds and a trailing space (the same
    form as the agent's own lines)."""
    return rfc3339(time.time()).encode() + b" "


_GONE = (errno.EPIPE, errno.EBADF)  # nobody will ever read what we write


class Pump:
    """Copies ``source`` (a pipe's read end, closed at EOF) to ``sink``."""

    def __init__(
        self,
        source: int,
        sink: int,
        name: str,
        stamp: Optional[Callable[[], bytes]] = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.output = logfiles.output(sink)
        self.name = name
        self.stamp = stamp
        self.error: Optional[OSError] = None  # the error that ended writing for good
        self.lost = 0  # bytes dropped since writing last failed
        self._failure: Optional[str] = None  # why writing is failing now
        self._emit = self._write
        self._at_line_start = True
        self._thread = threading.Thread(target=self._run, name=f"pump-{name}", daemon=True)

    def start(self) -> Pump:
        """Start copying in the background."""
        self._thread.start()
        return self

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until EOF was forwarded; False if still running after ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _prefixed(self, chunk: bytes) -> bytes:
        assert self.stamp is not None
        prefix = self.stamp()
        # One stamp per chunk: every line in it was read at the same moment.
        ends_line = chunk.endswith(b"\n")
        body = chunk[:-1] if ends_line else chunk
        out = body.replace(b"\n", b"\n" + prefix)
        if self._at_line_start:
            out = prefix + out
        return out + b"\n" if ends_line else out

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.output.write(view) :]
            except BlockingIOError:
                select.select([], [self.sink], [])
            except OSError as exc:
                self._failed(exc, len(view))
                return
        self.output.written()

    def _failed(self, exc: OSError, unwritten: int) -> None:
        if exc.errno in _GONE:
            self.error = exc
            self._emit = self._discard
            return
        if self._failure is None:
            self._failure = exc.strerror or str(exc)
            log.warning(
                "cannot write the worker's %s (%s): dropping its output until writing works again",
                self.name,
                self._failure,
            )
            self._emit = self._write_after_failure
        self.lost += unwritten

    def _write_after_failure(self, data: bytes) -> None:
        lost = self.lost
        self._write(data)
        if self.lost == lost and self.error is None:
            log.warning(
                "writing the worker's %s works again; %d bytes of it could not be "
                "written (%s) and are lost",
                self.name,
                lost,
                self._failure,
            )
            self._failure, self.lost = None, 0
            self._emit = self._write

    def _discard(self, data: bytes) -> None:
        pass

    def _run(self) -> None:
        try:
            while True:
                chunk = os.read(self.source, CHUNK)
                if not chunk:
                    break
                self._emit(self._prefixed(chunk) if self.stamp else chunk)
                self._at_line_start = chunk.endswith(b"\n")
            if not self._at_line_start:
                self._emit(b"\n")
        finally:
            os.close(self.source)
