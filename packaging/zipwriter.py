"""The zip writer every package builder uses: the same files give the same bytes.

Entries are written sorted by name, each with a fixed timestamp and a Unix mode
(0755 for executables, 0644 for the rest, so the start task's user can read every
file whoever extracted it), deflated, with no directory entries and no symlinks
(Batch's packages have none). Each file's bytes were deflated beforehand by a
``packer.Packer`` (while the release was still being read); this module lays
those deflated bytes out as a zip, which Python's ``zipfile`` cannot do (it
compresses as it writes, one file after another). The layout is the one
``zipfile`` writes (PKWARE's APPNOTE: local headers, central directory, zip64
records where sizes, offsets or the count need them).

The zip is written under a fresh name in ``out``'s folder, opened so that it can
never be a file or link already there, and renamed into place: nothing is ever
written through a link, and a failed or interrupted build leaves no partial zip.
``output_folder`` removes the folders a builder made for it should the build fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple, Optional

CHUNK = 1 << 20
ZIP64_LIMIT = (1 << 31) - 1  # as zipfile: past this, sizes and offsets go to zip64
MAX_COUNT = 0xFFFF  # entries an end record can count
DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest a zip can hold
DOS_TIME = 0
DEFLATED = 8
UTF8_FLAG = 0x800
UNIX = 3
VERSION = 20  # what a reader needs for deflate; 45 with zip64 records
VERSION_ZIP64 = 45


class Packed(NamedTuple):
    """A file's bytes, deflated (raw, as a zip holds them) at ``offset`` in ``file``."""

    file: Path
    offset: int
    length: int  # deflated
    crc: int
    size: int  # as the file is


class Member(NamedTuple):
    """A file for the zip: its deflated bytes, and whether it is executable."""

    packed: Packed
    executable: bool


class UnwritableNames(ValueError):
    """Names a zip cannot hold; ``names`` shows each escaped."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"file names that are not UTF-8: {', '.join(names)}")


def shown(name: str) -> str:
    """A name as the file system has its bytes (``b'\\xffname'``), for messages."""
    try:
        return repr(os.fsencode(name))
    except UnicodeEncodeError:
        return ascii(name)


def unwritable(names: Sequence[str]) -> list[str]:
    """The names a zip cannot hold (not UTF-8 text: Python keeps such names' bytes
    as surrogate escapes), each shown by its bytes."""
    found = []
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            found.append(shown(name))
    return found


@contextlib.contextmanager
def output_folder(folder: Path) -> Iterator[None]:
    """Make ``folder`` and its missing parents; should the block fail (or be
    interrupted), remove again every one of them it made that is empty."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for made in missing:  # the deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


@contextlib.contextmanager
def fresh_file(out: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file beside ``out``, under a name of its own: created with ``O_EXCL``
    and ``O_NOFOLLOW``, so never a file or link that was there. Removed unless the
    caller renamed it into place."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, flags, 0o666)  # the umask decides, as for any file
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _local_header(name: bytes, member: Member) -> bytes:
    packed = member.packed
    flags = UTF8_FLAG if not name.isascii() else 0
    length, size, extra, version = packed.length, packed.size, b"", VERSION
    if size > ZIP64_LIMIT or length > ZIP64_LIMIT:
        extra = struct.pack("<HHQQ", 1, 16, size, length)
        length = size = 0xFFFFFFFF
        version = VERSION_ZIP64
    head = struct.pack(
        "<4sHHHHHLLLHH",
        b"PK\x03\x04",
        version,
        flags,
        DEFLATED,
        DOS_TIME,
        DOS_DATE,
        packed.crc,
        length,
        size,
        len(name),
        len(extra),
    )
    return head + name + extra


def _central_header(name: bytes, member: Member, offset: int) -> bytes:
    packed = member.packed
    flags = UTF8_FLAG if not name.isascii() else 0
    wide: list[int] = []
    length, size = packed.length, packed.size
    if size > ZIP64_LIMIT or length > ZIP64_LIMIT:
        wide += [size, length]
        length = size = 0xFFFFFFFF
    if offset > ZIP64_LIMIT:
        wide.append(offset)
        offset = 0xFFFFFFFF
    extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
    version = VERSION_ZIP64 if wide else VERSION
    mode = 0o755 if member.executable else 0o644
    head = struct.pack(
        "<4sBBHHHHHLLLHHHHHLL",
        b"PK\x01\x02",
        version,
        UNIX,
        version,
        flags,
        DEFLATED,
        DOS_TIME,
        DOS_DATE,
        packed.crc,
        length,
        size,
        len(name),
        len(extra),
        0,  # comment
        0,  # disk
        0,  # internal attributes
        (stat.S_IFREG | mode) << 16,
        offset,
    )
    return head + name + extra


def _end_records(count: int, start: int, end: int) -> bytes:
    """The end of central directory record, after zip64's where it needs them."""
    size = end - start
    records = b""
    if count >= MAX_COUNT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
        records += struct.pack(
            "<4sQHHLLQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, start
        )
        records += struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
        count, size, start = min(count, MAX_COUNT), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
    return records + struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, count, count, size, start, 0)


def write_zip(
    out: Path, members: Mapping[str, Member], progress: Optional[Callable[[int], None]] = None
) -> None:
    """Write ``members`` (archive name -> member) to ``out``, in an existing folder:
    sorted entries, fixed timestamps, Unix modes; the same members, the same bytes.
    ``progress`` is told the deflated bytes copied so far. ``UnwritableNames``
    (nothing written) when names are not UTF-8."""
    names = sorted(members)
    refused = unwritable(names)
    if refused:
        raise UnwritableNames(refused)
    sources: dict[Path, BinaryIO] = {}
    with contextlib.ExitStack() as stack, fresh_file(out) as (zipped, temp):
        offsets = []
        position = copied = 0
        for name in names:
            member = members[name]
            packed = member.packed
            source = sources.get(packed.file)
            if source is None:
                source = sources[packed.file] = stack.enter_context(packed.file.open("rb"))
            offsets.append(position)
            header = _local_header(name.encode("utf-8"), member)
            zipped.write(header)
            source.seek(packed.offset)
            left = packed.length
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"{packed.file}: shorter than the data packed into it")
                zipped.write(chunk)
                left -= len(chunk)
                copied += len(chunk)
                if progress is not None:
                    progress(copied)
            position += len(header) + packed.length
        start = position
        for name, offset in zip(names, offsets):
            central = _central_header(name.encode("utf-8"), members[name], offset)
            zipped.write(central)
            position += len(central)
        zipped.write(_end_records(len(names), start, position))
        zipped.flush()
        os.replace(temp, out)
