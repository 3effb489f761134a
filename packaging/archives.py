"""Read what an operator downloaded into a ``Tree``: every entry of a release
archive (``.tar.xz``, ``.tar.gz``, ``.tar.bz2``, ``.tar``, ``.zip``) or a folder,
by its path inside.

Downloads are untrusted. Nothing is ever written at a path the archive chose: a
regular file's bytes go to the store the caller gives (numbered files in a
staging folder, or a ``packer.Packer`` that deflates them for the zip), and the
tree records where. An entry named with ``..`` or an absolute path is refused
(path traversal), as is one that lies inside what the archive made a file or a
symlink (writing through a link). Symlinks are recorded, never created; the
package builder resolves them. Sizes are checked against the caps before any
byte is kept (a 400-byte archive can declare a 40 GiB sparse file), and so are
the count of entries and how deep they nest (deeper than a real release, and
deep enough to exhaust the recursion of naive code). Every compressed stream is
read to its very end, so its checksums are checked, and a tar must end with its
end-of-archive marker (one cut at a member boundary would otherwise read as a
smaller release). Zips are read by ``zipread``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, BinaryIO, Callable, Optional, Protocol, Union

CHUNK = 1 << 20
# What a release may hold, far above what real ones need (Blender 4.2: about
# 10,000 entries, 1.1 GB, 15 levels deep); past these, an archive is refused.
MAX_BYTES = 16 << 30  # its files' bytes, all together
MAX_ENTRIES = 200_000
MAX_DEPTH = 128  # folders within folders
MAX_TARGET = 4096  # a symlink's target (PATH_MAX)
MAX_READ = 16 << 20  # one read of a tar's headers (pax records, long names: a few kB)
MAX_TRAILER = 16 << 20  # what may follow a tar's end-of-archive marker (record padding)
# Told how far reading has got: (done, total), in the units of the reader's choice.
Meter = Callable[[int, int], None]


class ArchiveError(Exception):
    """Bad input: the message says what and how to fix it."""


class Kind(Enum):
    """What an entry is."""

    FILE = "file"
    DIR = "folder"
    LINK = "symlink"


@dataclass(frozen=True)
class Entry:
    """One entry: a file (its ``size`` bytes at ``source``, or deflated by a
    packer as its file number ``packed``), a folder, or a symlink."""

    kind: Kind
    source: Optional[Path] = None
    mode: int = 0o644
    target: str = ""  # a symlink's target, as stored
    size: int = 0
    packed: Optional[int] = None

    @property
    def is_dir(self) -> bool:
        """Whether this is a folder."""
        return self.kind is Kind.DIR


FOLDER = Entry(Kind.DIR, mode=0o755)


def brief(name: str) -> str:
    """A name for a message: a very long one is cut in its middle."""
    return name if len(name) <= 160 else f"{name[:70]}...({len(name)} characters)...{name[-70:]}"


def inside_name(name: str, origin: str) -> str:
    """``name`` as a clean relative path ("" for the top), or ``ArchiveError`` when
    it would land outside (absolute, or with ``..``)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ArchiveError(
            f"{origin}: the entry {brief(name)!r} would be written outside the archive's "
            "folder (an absolute path or '..'); not extracting it: use the release as "
            "published by its project"
        )
    return "/".join(parts)


class Store(Protocol):
    """Where a reader keeps a file's bytes: ``keep`` reads ``data`` to its end and
    returns where they are (a ``Path``) or the packer's number for them."""

    def keep(self, data: IO[bytes]) -> Union[Path, int]: ...


@dataclass
class Tree:
    """Every entry of an archive, by clean relative path; "" is the top."""

    origin: str  # what the tree was read from, for messages
    entries: dict[str, Entry] = field(default_factory=lambda: {"": FOLDER})
    bytes: int = 0  # of its files, all together

    def admit(self, name: str, kind: Kind, size: int = 0) -> str:
        """The clean path of an entry about to be added, after every check made
        before anything of it is kept: ``ArchiveError`` for a name outside the
        archive, inside a file or symlink, nested too deep, one entry too many,
        or a file whose size passes the caps."""
        path = inside_name(name, self.origin)
        parts = path.split("/")
        if len(parts) > MAX_DEPTH:
            raise ArchiveError(
                f"{self.origin}: {brief(path)} lies {len(parts)} folders deep, more than "
                f"{MAX_DEPTH}: no real release nests so deep; refused"
            )
        if len(self.entries) >= MAX_ENTRIES:
            raise ArchiveError(
                f"{self.origin}: more than {MAX_ENTRIES:,} entries (at {brief(path)}), far "
                "more than any release; refused"
            )
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            above = self.entries.get(parent, FOLDER)
            if above.kind is not Kind.DIR:
                raise ArchiveError(
                    f"{self.origin}: {brief(path)} lies inside {brief(parent)}, which the "
                    f"archive makes a {above.kind.value}; extracting it would write through "
                    "it: not a release as published"
                )
        existing = self.entries.get(path)
        if existing is not None and existing.is_dir and kind is not Kind.DIR:
            raise ArchiveError(
                f"{self.origin}: {brief(path)} is both a folder and a {kind.value}; "
                "not a release as published"
            )
        if size > MAX_BYTES - self.bytes:
            raise ArchiveError(
                f"{self.origin}: {brief(path)} is a file of {size:,} bytes, which with the "
                f"{self.bytes:,} bytes of the files before it passes the {MAX_BYTES >> 30} GiB "
                "a release may hold: refused before unpacking it (an archive can declare a "
                "file far larger than itself)"
            )
        self.bytes += size
        return path

    def put(self, path: str, entry: Entry) -> None:
        """Record an entry ``admit`` let in (its missing folders too)."""
        if not path:
            return
        parts = path.split("/")
        for depth in range(1, len(parts)):
            self.entries.setdefault("/".join(parts[:depth]), FOLDER)
        if entry.is_dir and path in self.entries:
            return
        self.entries[path] = entry

    def add(self, name: str, entry: Entry) -> None:
        """``admit`` and ``put`` an entry whose bytes, if any, are kept already."""
        self.put(self.admit(name, entry.kind, entry.size if entry.kind is Kind.FILE else 0), entry)

    def children(self) -> dict[str, list[str]]:
        """Folder path -> the names in it, sorted."""
        found: dict[str, list[str]] = {path: [] for path, e in self.entries.items() if e.is_dir}
        for path in sorted(self.entries):
            if path:
                parent, _, name = path.rpartition("/")
                found[parent].append(name)
        return found


def kept_file(kept: Union[Path, int], mode: int, size: int) -> Entry:
    """The entry of a file whose bytes a ``Store`` kept."""
    if isinstance(kept, Path):
        return Entry(Kind.FILE, kept, mode, size=size)
    return Entry(Kind.FILE, mode=mode, size=size, packed=kept)


class Staging:
    """Numbered files in one folder: where an archive's bytes are kept as they are."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def store(self, data: IO[bytes]) -> Path:
        """Copy a stream into the next numbered file; its path."""
        self.count += 1
        path = self.folder / f"{self.count:07d}"
        with path.open("xb") as out:
            shutil.copyfileobj(data, out, CHUNK)
        return path

    def keep(self, data: IO[bytes]) -> Path:
        """``store``, as a ``Store``."""
        return self.store(data)


def read_folder(path: Path) -> Tree:
    """A folder's entries; its files stay where they are (nothing is copied).
    Walked without recursion, so that no nesting makes it fail."""
    tree = Tree(str(path))
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(path / relative if relative else path) as listing:
            found = sorted(listing, key=lambda item: item.name)
        for item in found:
            name = f"{relative}/{item.name}" if relative else item.name
            st = item.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                tree.add(name, Entry(Kind.LINK, target=os.readlink(item.path)))
            elif stat.S_ISDIR(st.st_mode):
                tree.add(name, Entry(Kind.DIR, mode=mode))
                pending.append(name)
            elif stat.S_ISREG(st.st_mode):
                tree.add(name, Entry(Kind.FILE, Path(item.path), mode, size=st.st_size))
            else:
                raise ArchiveError(
                    f"{item.path}: a device file or pipe; a package holds only files"
                )
    return tree


class _Guarded:
    """A tar's decompressed stream, as ``tarfile`` reads it: remembers the last
    block read (where the archive ended), and refuses a read of more than
    ``MAX_READ`` (a header claiming gigabytes would be read into memory)."""

    def __init__(
        self,
        stream: Union[BinaryIO, io.BufferedIOBase],
        origin: str,
        after_read: Callable[[], None],
    ) -> None:
        self.stream = stream
        self.origin = origin
        self.after_read = after_read
        self.last = b""

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise ArchiveError(
                f"{self.origin}: a tar header of {size:,} bytes at offset {self.tell():,} "
                "(a real one has a few kB): not a release as published"
            )
        self.last = self.stream.read(size)
        self.after_read()
        return self.last

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def decompressed(raw: BinaryIO, head: bytes) -> Optional[io.BufferedIOBase]:
    """``raw`` decompressed as its first bytes ``head`` say (None: not compressed)."""
    if head.startswith(XZ_MAGIC):
        return lzma.LZMAFile(raw)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw)
    if head.startswith(BZIP2_MAGIC):
        return bz2.BZ2File(raw)
    return None


def read_tar(path: Path, staging: Store, origin: str = "", meter: Optional[Meter] = None) -> Tree:
    """A tar archive's entries (compressed with xz, gzip or bzip2, or not), read to
    the end of its compressed stream; ``meter`` is told the archive's bytes read."""
    tree = Tree(origin or str(path))
    total = path.stat().st_size
    try:
        with path.open("rb") as raw:
            head = raw.read(8)
            raw.seek(0)
            if head.startswith(ZSTD_MAGIC):
                raise ArchiveError(
                    f"{tree.origin}: zstd-compressed, which Python cannot read: unpack it "
                    "(tar -xf, with zstd installed) and pass the folder"
                )
            with decompressed(raw, head) or raw as stream:
                # Told after every read (a chunk of a large file too): how much of
                # the archive itself has been read.
                guarded = _Guarded(
                    stream, tree.origin, lambda: meter(raw.tell(), total) if meter else None
                )
                with tarfile.open(fileobj=guarded, mode="r:") as archive:  # type: ignore[call-overload]
                    for member in archive:
                        _add_member(tree, archive, member, staging)
                    _read_to_the_end(guarded, tree.origin)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(_damaged(tree.origin, exc)) from None
    except OSError as exc:
        if exc.errno is not None:  # the disk, not the data
            raise
        raise ArchiveError(_damaged(tree.origin, exc)) from None
    return tree


def _damaged(origin: str, exc: BaseException) -> str:
    return (
        f"{origin}: cannot be read as a tar archive ({exc}); it is damaged or truncated: "
        "download it again"
    )


def _add_member(
    tree: Tree, archive: tarfile.TarFile, member: tarfile.TarInfo, store: Store
) -> None:
    mode = member.mode & 0o7777
    if member.isdir():
        tree.add(member.name, Entry(Kind.DIR, mode=mode))
    elif member.isreg():
        path = tree.admit(member.name, Kind.FILE, member.size)  # before any byte is kept
        data = archive.extractfile(member)
        assert data is not None  # a regular member always has data
        tree.put(path, kept_file(store.keep(data), mode, member.size))
    elif member.issym():
        if len(member.linkname) > MAX_TARGET:
            raise ArchiveError(
                f"{tree.origin}: {brief(member.name)} is a symlink to a path of "
                f"{len(member.linkname):,} characters, longer than any system allows"
            )
        tree.add(member.name, Entry(Kind.LINK, target=member.linkname))
    elif member.islnk():
        linked = tree.entries.get(inside_name(member.linkname, tree.origin))
        if linked is None or linked.kind is not Kind.FILE:
            raise ArchiveError(
                f"{tree.origin}: {brief(member.name)} is a hard link to "
                f"{brief(member.linkname)}, which is not a file earlier in the archive"
            )
        tree.add(member.name, linked)
    else:
        raise ArchiveError(
            f"{tree.origin}: {brief(member.name)} is a device file or pipe; a package "
            "holds only files"
        )


def _read_to_the_end(guarded: _Guarded, origin: str) -> None:
    """Check that the tar ended at its end-of-archive marker (``tarfile`` takes a
    missing or damaged header for the end), and read the rest of its stream, so
    that the decompressor checks its checksums (``tarfile`` stops at the marker,
    before a gzip trailer's CRC)."""
    if guarded.last != bytes(tarfile.BLOCKSIZE):
        raise ArchiveError(
            f"{origin}: ends without the end-of-archive marker, at {guarded.tell():,} "
            "bytes: it is truncated or damaged; download it again"
        )
    after = 0
    while True:
        chunk = guarded.read(CHUNK)
        if not chunk:
            return
        after += len(chunk)
        if after > MAX_TRAILER:
            raise ArchiveError(
                f"{origin}: more than {MAX_TRAILER >> 20} MiB follow the end of the tar "
                "archive: not a release as published"
            )
