"""Forward a child's output stream to ours: byte-exact, line-flushed, bounded.

Each pump is a thread that copies one pipe to one file descriptor with plain
``os.read``/``os.write``: whatever was read is written at once (nothing waits in a
buffer, so nothing is lost with a preempted node), in chunks of at most 64 KiB
(a 10 MB line needs no more memory than a short one). At EOF (every holder of the
pipe's write end gone) a last line without a newline gets one, so it is never glued
to the next run's first line. A stalled reader of our output blocks only the pump
thread; the main thread goes on handling signals and stopping the worker.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

CHUNK = 64 * 1024


def utc_stamp() -> bytes:
    """An RFC 3339 UTC timestamp with milliseconds and a trailing space."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode() + (
        b".%03dZ " % int(now % 1 * 1000)
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
        self.stamp = stamp
        self.error: Optional[OSError] = None
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

    def _emit(self, data: bytes) -> None:
        if self.error is None:
            try:
                _write_all(self.sink, data)
            except OSError as exc:
                # Our own output is gone (closed pipe, EIO): keep draining so the
                # worker never blocks on a full pipe, but stop writing.
                self.error = exc

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
