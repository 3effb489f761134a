"""Read what an operator downloaded into a ``Tree``: every entry of a release
archive (``.tar.xz``, ``.tar.gz``, ``.tar.bz2``, ``.zip``), a folder, or the data
of a ``.deb``, by its path inside.

Nothing is ever written at a path the archive chose: a regular file's bytes go to
a numbered file in the staging dir, and the tree records where. An entry named
with ``..`` or an absolute path is refused (path traversal), as is one that lies
inside what the archive made a file or a symlink (writing through a link).
Symlinks are recorded, never created; the package builder resolves them.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Optional

CHUNK = 1 << 20


class ArchiveError(Exception):
    """Bad input: the message says what and how to fix it."""


class Kind(Enum):
    """What an entry is."""

    FILE = "file"
    DIR = "folder"
    LINK = "symlink"


@dataclass(frozen=True)
class Entry:
    """One entry: a file (its ``size`` bytes at ``source``), a folder, or a symlink."""

    kind: Kind
    source: Optional[Path] = None
    mode: int = 0o644
    target: str = ""  # a symlink's target, as stored
    size: int = 0

    @property
    def is_dir(self) -> bool:
        """Whether this is a folder."""
        return self.kind is Kind.DIR


FOLDER = Entry(Kind.DIR, mode=0o755)


def inside_name(name: str, origin: str) -> str:
    """``name`` as a clean relative path ("" for the top), or ``ArchiveError`` when
    it would land outside (absolute, or with ``..``)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ArchiveError(
            f"{origin}: the entry {name!r} would be written outside the archive's folder "
            "(an absolute path or '..'); not extracting it: use the release as "
            "published by its project"
        )
    return "/".join(parts)


@dataclass
class Tree:
    """Every entry of an archive, by clean relative path; "" is the top."""

    origin: str  # what the tree was read from, for messages
    entries: dict[str, Entry] = field(default_factory=lambda: {"": FOLDER})

    def add(self, name: str, entry: Entry) -> None:
        """Record an entry; refuses names outside the archive and entries inside
        a file or a symlink."""
        path = inside_name(name, self.origin)
        if not path:
            return
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            above = self.entries.setdefault(parent, FOLDER)
            if above.kind is not Kind.DIR:
                raise ArchiveError(
                    f"{self.origin}: {path} lies inside {parent}, which the archive "
                    f"makes a {above.kind.value}; extracting it would write through "
                    "it: not a release as published"
                )
        existing = self.entries.get(path)
        if existing is not None and existing.kind is Kind.DIR:
            if entry.kind is Kind.DIR:
                return
            raise ArchiveError(
                f"{self.origin}: {path} is both a folder and a {entry.kind.value}; "
                "not a release as published"
            )
        self.entries[path] = entry

    def children(self) -> dict[str, list[str]]:
        """Folder path -> the names in it, sorted."""
        found: dict[str, list[str]] = {path: [] for path, e in self.entries.items() if e.is_dir}
        for path in sorted(self.entries):
            if path:
                parent, _, name = path.rpartition("/")
                found[parent].append(name)
        return found


class Staging:
    """Numbered files in one folder: where the archive's bytes are kept."""

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


def _raise(error: OSError) -> None:
    raise error


def read_folder(path: Path) -> Tree:
    """A folder's entries; its files stay where they are (nothing is copied)."""
    tree = Tree(str(path))
    for root, dirs, files in os.walk(path, onerror=_raise):  # never follows symlinks
        for name in sorted(dirs + files):
            full = Path(root, name)
            relative = full.relative_to(path).as_posix()
            st = full.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                tree.add(relative, Entry(Kind.LINK, target=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                tree.add(relative, Entry(Kind.DIR, mode=mode))
            elif stat.S_ISREG(st.st_mode):
                tree.add(relative, Entry(Kind.FILE, full, mode, size=st.st_size))
            else:
                raise ArchiveError(f"{full}: a device file or pipe; a package holds only files")
    return tree


def read_tar(path: Path, staging: Staging, origin: str = "") -> Tree:
    """A tar archive's entries (any compression tarfile knows: xz, gz, bz2, none)."""
    tree = Tree(origin or str(path))
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isdir():
                    tree.add(member.name, Entry(Kind.DIR, mode=member.mode & 0o7777))
                elif member.isreg():
                    inside_name(member.name, tree.origin)  # refused before anything is kept
                    data = archive.extractfile(member)
                    assert data is not None  # a regular member always has data
                    source = staging.store(data)
                    tree.add(
                        member.name,
                        Entry(Kind.FILE, source, member.mode & 0o7777, size=member.size),
                    )
                elif member.issym():
                    tree.add(member.name, Entry(Kind.LINK, target=member.linkname))
                elif member.islnk():
                    linked = tree.entries.get(inside_name(member.linkname, tree.origin))
                    if linked is None or linked.kind is not Kind.FILE:
                        raise ArchiveError(
                            f"{tree.origin}: {member.name} is a hard link to {member.linkname}, "
                            "which is not a file earlier in the archive"
                        )
                    tree.add(member.name, linked)
                else:
                    raise ArchiveError(
                        f"{tree.origin}: {member.name} is a device file or pipe; a package "
                        "holds only files"
                    )
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(
            f"{tree.origin}: cannot be read as a tar archive ({exc}); it may be truncated: "
            "download it again"
        ) from None
    return tree


def read_zip(path: Path, staging: Staging) -> Tree:
    """A zip archive's entries; Unix symlinks in it (as Info-ZIP stores them) too."""
    tree = Tree(str(path))
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                unix = info.external_attr >> 16 if info.create_system == 3 else 0
                if stat.S_ISLNK(unix):
                    target = archive.read(info).decode("utf-8", "surrogateescape")
                    tree.add(info.filename, Entry(Kind.LINK, target=target))
                elif info.is_dir():
                    tree.add(info.filename, Entry(Kind.DIR, mode=stat.S_IMODE(unix) or 0o755))
                else:
                    with archive.open(info) as data:
                        source = staging.store(data)
                    mode = stat.S_IMODE(unix) or 0o644
                    tree.add(info.filename, Entry(Kind.FILE, source, mode, size=info.file_size))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(
            f"{path}: cannot be read as a zip archive ({exc}); download it again"
        ) from None
    return tree


def read_release(path: Path, staging: Staging) -> Tree:
    """A release as downloaded: a tar archive, a zip, or an unpacked folder."""
    if path.is_dir():
        return read_folder(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file or folder")
    if zipfile.is_zipfile(path):
        return read_zip(path, staging)
    if tarfile.is_tarfile(path):
        return read_tar(path, staging)
    raise ArchiveError(
        f"{path}: neither a tar archive (.tar.xz, .tar.gz, .tar.bz2) nor a .zip; pass "
        "the release as downloaded, or the folder it unpacks to"
    )
