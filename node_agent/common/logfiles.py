"""The start task's stdout.txt and stderr.txt, kept under a size cap.

A node lives for days and Blender prints a line per tile or sample: a file that only
grows fills the temporary disk, and Batch then marks the node unusable (idle and
billed). So once a file passes its cap, the older part of it is compressed into
``stdout.txt.1.gz`` in the same folder (the start task's, where Batch Explorer lists
it; older ones shift to ``.2.gz`` and on, the oldest beyond ``backups`` removed) and
cut from the file, which keeps the newest output (up to ``KEEP`` bytes of it, whole
lines) where Batch Explorer shows it. Read oldest to newest, the backups and the file
hold the output without a gap: nothing of the newest ``backups`` caps' worth is lost.

The files cannot be renamed (Batch serves them by name, and the fd node-agent was
given would go on writing into the renamed one): they are cut in place, with
``ftruncate`` on that fd. How Batch's node agent opens them is not documented and
its source is not public, so what truncation relies on is checked here, at run time,
on the node itself, and the cap is kept only where it holds:

- the fd is a regular file that node-agent can find by name (``/proc/self/fd``),
  read back and write beside (else: a warning, and the file is not capped);
- every writer in this process (the pumps forwarding the worker's output, the
  agent's own log lines) writes under the file's lock, so nothing is written
  between reading the newest part back and writing it again at the start;
- the offset of the fd is moved to the new end after the cut, so writes go on
  right after the kept part whether the file was opened with O_APPEND or not
  (which one is logged once, as a fact from the node);
- a process of the agent's own tree that holds the file too (the start-up health
  report, forked with the agent's stdout and stderr) writes outside that lock, so
  the cut waits until no such process holds it.

What stays unverified: a writer outside the agent's tree with a description of its
own (Batch's node agent writing into the task's output itself: nothing documents
that it does). Its writes after a cut would land at its old offset, leaving a hole
that reads as NUL bytes; none of node-agent's own output would be lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Optional, Union

# Not through common.log, which writes through this module (its handler takes a
# file's lock).
log = logging.getLogger("node_agent.logfiles")

KEEP = 1 << 20  # bytes of the newest output a cut leaves in the file (at most)
RETRY = 1.0  # seconds between attempts at a cut that had to wait
SLOW_WARNING = 60.0  # seconds a cut may wait before it is worth a warning
_COPY = 1 << 20  # bytes read at a time while compressing


def megabytes(size: int) -> str:
    """A size as the operator reads it: ``64 MiB``, ``1.5 MiB``, ``512 KiB``."""
    if size >= 1 << 20:
        return f"{size / (1 << 20):g} MiB"
    return f"{size / (1 << 10):g} KiB"


class Output:
    """One output file descriptor and how the agent writes to it. Uncapped: a plain
    ``os.write``. ``write`` may raise ``OSError`` like ``os.write``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: Union[bytes, memoryview]) -> int:
        """Write what ``os.write`` takes of ``data``; returns how much that was."""
        return os.write(self.fd, data)

    def written(self) -> None:
        """Called by a pump after each whole chunk: where the cap is kept."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold off a cut while another writer of this process writes."""
        yield


class CappedOutput(Output):
    """A regular file kept under ``cap`` bytes (see the module's docstring)."""

    def __init__(self, fd: int, path: str, cap: int, backups: int) -> None:
        super().__init__(fd)
        self.path = path
        self.cap = cap
        self.backups = backups
        self.keep = min(KEEP, cap // 4)
        self.size = os.fstat(fd).st_size  # known size: what was there plus our writes
        self._lock = threading.RLock()  # held by every write, and by the cut's last step
        self._cutting = threading.Lock()  # one cut at a time (another pump writes on)
        self._retry_at = 0.0
        self._waiting_since: Optional[float] = None
        self._warned = False

    def new_lock(self) -> None:
        """Free locks, for a forked child (``_after_fork``)."""
        self._lock = threading.RLock()
        self._cutting = threading.Lock()

    def write(self, data: Union[bytes, memoryview]) -> int:
        with self._lock:
            count = os.write(self.fd, data)
            self.size += count
            return count

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def written(self) -> None:
        if self.size <= self.cap or time.monotonic() < self._retry_at:
            return
        if not self._cutting.acquire(blocking=False):
            return  # another pump is cutting it
        try:
            if self.size > self.cap:  # not just cut by the other one
                self._cut()
        finally:
            self._cutting.release()

    def _cut(self) -> None:
        holders = _other_holders(os.fstat(self.fd))
        if holders:
            self._wait(holders)
            return
        self._waiting_since = None
        try:
            reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._failed(f"cannot read it back ({exc.strerror})")
            return
        try:
            size = os.fstat(reader).st_size
            cut = _line_start(reader, max(0, size - self.keep), size)
            self._compress(reader, cut)
            lost = self._keep_newest(reader, cut)
        except OSError as exc:
            self._failed(f"{exc.strerror or exc}")
            return
        finally:
            os.close(reader)
        if lost:
            log.warning(
                "%s: %d bytes of its newest output could not be written back after "
                "it was cut, and are lost",
                self.path,
                lost,
            )

    def _compress(self, reader: int, cut: int) -> None:
        """Bytes ``[0, cut)`` into a new ``.1.gz``, on disk before anything is cut."""
        folder, name = os.path.split(self.path)
        part = os.path.join(folder, f".{name}.gz.part")
        with open(part, "wb") as raw:
            with gzip.GzipFile(filename=name, mode="wb", fileobj=raw) as packed:
                offset = 0
                while offset < cut:
                    chunk = os.pread(reader, min(_COPY, cut - offset), offset)
                    if not chunk:
                        break
                    packed.write(chunk)
                    offset += len(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        for number in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.backup(number), self.backup(number + 1))
        os.replace(part, self.backup(1))

    def _keep_newest(self, reader: int, cut: int) -> int:
        """Cut the file to what came after ``cut``; returns the bytes lost doing it."""
        with self._lock:  # no writer of ours between reading it back and writing it
            size = os.fstat(reader).st_size
            newest = b""
            while len(newest) < size - cut:
                chunk = os.pread(reader, size - cut - len(newest), cut + len(newest))
                if not chunk:
                    break
                newest += chunk
            os.ftruncate(self.fd, 0)
            with contextlib.suppress(OSError):  # O_APPEND or not: write on from the start
                os.lseek(self.fd, 0, os.SEEK_SET)
            view = memoryview(newest)
            try:
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:
                pass
            self.size = len(newest) - len(view)
            return len(view)

    def backup(self, number: int) -> str:
        """The path of backup ``number`` (1: the newest)."""
        return f"{self.path}.{number}.gz"

    def _wait(self, holders: list[str]) -> None:
        now = time.monotonic()
        self._retry_at = now + RETRY
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > SLOW_WARNING and not self._warned:
            self._warned = True
            log.warning(
                "%s is past its cap of %s but %s holds it too: it is cut once that process lets go",
                self.path,
                megabytes(self.cap),
                ", ".join(holders),
            )

    def _failed(self, why: str) -> None:
        self._retry_at = time.monotonic() + 60 * RETRY
        if not self._warned:
            self._warned = True
            log.warning(
                "%s is past its cap of %s and cannot be cut: %s (tried again every "
                "minute; nothing of it is lost meanwhile)",
                self.path,
                megabytes(self.cap),
                why,
            )


def _line_start(reader: int, start: int, end: int) -> int:
    """The first line start at or after ``start`` (``start`` when the window
    ``[start, end)`` holds no line break: a line longer than it is cut mid-line)."""
    if start == 0:
        return 0
    window = os.pread(reader, end - start + 1, start - 1)
    newline = window.find(b"\n")
    return start if newline < 0 else start - 1 + newline + 1


def _other_holders(target: os.stat_result) -> list[str]:
    """The processes of this one's tree (its own excepted) that hold the file."""
    import psutil  # noqa: PLC0415 (only when a file is cut: `--version` stays light)

    found: list[str] = []
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            entries = os.listdir(f"/proc/{child.pid}/fd")
        except OSError:
            continue
        for entry in entries:
            try:
                held = os.stat(f"/proc/{child.pid}/fd/{entry}")
            except OSError:
                continue
            if (held.st_dev, held.st_ino) == (target.st_dev, target.st_ino):
                found.append(f"process {child.pid}")
                break
    return found


_outputs: dict[int, Output] = {}


def _after_fork() -> None:
    # A process forked while a writer held a lock (the start-up report) would get
    # it held by a thread it does not have: it starts with free ones.
    for capped in _outputs.values():
        if isinstance(capped, CappedOutput):
            capped.new_lock()


os.register_at_fork(after_in_child=_after_fork)


def configure(cap: Optional[int], backups: int) -> list[str]:
    """Cap the files this process's stdout and stderr are (``None``: no cap); returns
    lines that say what was done, for the log."""
    _outputs.clear()
    if cap is None:
        return ["stdout and stderr: not capped (log_max_size is off)"]
    said = []
    by_file: dict[tuple[int, int], CappedOutput] = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue  # a pipe, a terminal: whoever reads it keeps it bounded
        shared = by_file.get((info.st_dev, info.st_ino))
        if shared is not None:  # 2>&1: one file, one lock, one cap
            _outputs[fd] = shared
            continue
        path, problem = _usable(fd, info)
        if problem:
            said.append(f"{name}: not capped: {problem}")
            continue
        output = CappedOutput(fd, path, cap, backups)
        by_file[(info.st_dev, info.st_ino)] = _outputs[fd] = output
        appending = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        said.append(
            f"{name}: {path} capped at {megabytes(cap)}, {backups} compressed "
            f"backup(s) beside it (opened for {'appending' if appending else 'writing'})"
        )
    return said


def _usable(fd: int, info: os.stat_result) -> tuple[str, Optional[str]]:
    """The file's path, and why it cannot be capped (None when it can)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        found = os.stat(path)
    except OSError:
        return "", "its path cannot be found (no /proc, or the file was removed)"
    if (found.st_dev, found.st_ino) != (info.st_dev, info.st_ino):
        return path, f"{path} is no longer the file this process writes"
    if not os.access(path, os.R_OK):
        return path, f"{path} cannot be read back (compressing it needs that)"
    if not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
        return path, f"no backup can be written beside it in {os.path.dirname(path)}"
    return path, None


def output(fd: int) -> Output:
    """How to write to ``fd``: capped if ``configure`` capped its file."""
    return _outputs.get(fd) or Output(fd)


def locked(fd: int) -> contextlib.AbstractContextManager[None]:
    """Hold off a cut of ``fd``'s file while writing to it another way (the log)."""
    return output(fd).locked()
