"""Deflate files for a zip while the caller goes on reading: ``Packer``.

A release's archive is read in one thread (its decompression is sequential), and
each file's bytes are handed, chunk by chunk, to a thread of the packer's own that
deflates them into one file, where the zip writer later copies them from. The two
run at once (``lzma``, ``zlib`` and file I/O release the GIL), so building takes
about as long as the slower of decompressing and deflating, not their sum; and
the unpacked release never touches the disk (only its deflated bytes do, about a
zip's size). The threads share nothing but the queues between them: chunks go
one way (a bounded queue, so memory stays a few MiB whatever the release), the
packer's failure (a full disk) the other.

Deflate level 6, zlib's default and ``zip``'s: on shared libraries level 9 takes
2.4 times as long for 0.5 % less (libLLVM-15, measured), and the nodes download
the package once.
"""

from __future__ import annotations

import queue
import threading
import zlib
from pathlib import Path
from types import TracebackType
from typing import IO, Optional, Union

from zipwriter import Packed

CHUNK = 1 << 20
LEVEL = 6
QUEUED = 8  # chunks in flight: the memory the pipeline holds, about 8 MiB

# What the reader sends the packer thread: a chunk of the current file, the end
# of the current file, or the end of it all.
_END_FILE = b""
_STOP = None
Message = Optional[bytes]


class PackingFailed(Exception):
    """The packer could not write its file; ``error`` says why."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.error = error
        super().__init__(f"{path}: {error.strerror or error}")


class Packer:
    """Deflates files into ``path`` (a new file) in a thread of its own. ``keep``
    returns a number for each file; ``finish`` returns the ``Packed`` records, by
    number. Use it as a context manager: leaving it stops the thread in any case."""

    def __init__(self, path: Path, level: int = LEVEL) -> None:
        self.path = path
        self.level = level
        self.count = 0
        self._chunks: queue.Queue[Message] = queue.Queue(QUEUED)
        self._results: queue.Queue[Union[list[Packed], OSError]] = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._done: Optional[list[Packed]] = None

    def __enter__(self) -> Packer:
        out = self.path.open("xb")  # the thread owns it from here on
        self._thread = threading.Thread(target=self._run, args=(out,), name="packer", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        error: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        if self._thread is not None and self._thread.is_alive():
            # Stop it without deflating what is queued.
            while True:
                try:
                    self._chunks.get_nowait()
                except queue.Empty:
                    break
            self._chunks.put(_STOP)
            self._thread.join()

    def _send(self, message: Message) -> None:
        self._chunks.put(message)
        if not self._results.empty():  # only a failure comes before the end
            self.finish()

    def keep(self, data: IO[bytes]) -> int:
        """Queue the bytes of ``data`` (read to its end) for deflating; the file's
        number. ``PackingFailed`` when the packer could not write."""
        number = self.count
        self.count += 1
        while True:
            chunk = data.read(CHUNK)
            if not chunk:
                break
            self._send(chunk)
        self._send(_END_FILE)
        return number

    def pack_file(self, path: Path) -> int:
        """``keep`` the file at ``path``."""
        with path.open("rb") as data:
            return self.keep(data)

    def finish(self) -> list[Packed]:
        """Wait for every file to be deflated; the records, by number.
        ``PackingFailed`` when the packer could not write."""
        if self._done is None:
            assert self._thread is not None, "finish() outside the with block"
            self._chunks.put(_STOP)
            self._thread.join()
            result = self._results.get()
            if isinstance(result, OSError):
                raise PackingFailed(self.path, result)
            self._done = result
        return self._done

    def _run(self, out: IO[bytes]) -> None:
        try:
            with out:
                records = self._deflate(out)
        except OSError as error:
            self._results.put(error)
            while self._chunks.get() is not _STOP:
                pass  # drained, so that the reader never blocks
            return
        self._results.put(records)

    def _deflate(self, out: IO[bytes]) -> list[Packed]:
        records: list[Packed] = []
        offset = length = size = crc = 0
        deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        while True:
            message = self._chunks.get()
            if message is _STOP:
                return records
            if message:
                crc = zlib.crc32(message, crc)
                size += len(message)
                deflated = deflater.compress(message)
            else:
                deflated = deflater.flush()
            out.write(deflated)
            length += len(deflated)
            if not message:
                records.append(Packed(self.path, offset, length, crc, size))
                offset += length
                length = size = crc = 0
                deflater = zlib.compressobj(self.level, zlib.DEFLATED, -15)
