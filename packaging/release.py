"""A release as the operator downloaded it: what it is, how large it unpacks (as
far as its format says so before it is read), and reading it into a ``Tree``.

The unpacked size lets a builder say up front how much disk it needs, and refuse
at once what passes the caps. An ``.xz`` file's index records it exactly (the
xz file format, section 4: each block's unpadded and uncompressed sizes, found
from the stream footer at the file's end); a zip's central directory declares
each file's; a gzip trailer holds it modulo 4 GiB (RFC 1952, ISIZE), taken only
where it is plausible (no smaller than the compressed data); a ``.tar.bz2`` says
nothing.
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from archives import (
    BZIP2_MAGIC,
    GZIP_MAGIC,
    XZ_MAGIC,
    ZSTD_MAGIC,
    ArchiveError,
    Meter,
    Store,
    Tree,
    read_folder,
    read_tar,
)
from zipread import read_zip

XZ_FOOTER = 12


@dataclass(frozen=True)
class Download:
    """A release as given: its kind (``folder``, ``zip``, ``tar.xz``, ...), its
    size as downloaded, and its unpacked size where its format says it."""

    path: Path
    kind: str
    size: int
    unpacked: Optional[int]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An xz multibyte integer at ``at``: its value and where the next begins."""
    value = shift = 0
    for index in range(at, min(at + 9, len(data))):
        value |= (data[index] & 0x7F) << shift
        if not data[index] & 0x80:
            return value, index + 1
        shift += 7
    raise ValueError("a damaged multibyte integer")


def xz_unpacked(path: Path) -> Optional[int]:
    """The uncompressed size of every stream of an ``.xz`` file, from their
    indexes; None when they cannot be read (the reader will say why)."""
    total = 0
    try:
        with path.open("rb") as xz:
            end = xz.seek(0, 2)
            while end > 0:
                xz.seek(end - 4)
                if xz.read(4) == bytes(4):  # stream padding
                    end -= 4
                    continue
                xz.seek(end - XZ_FOOTER)
                footer = xz.read(XZ_FOOTER)
                if footer[10:] != b"YZ":
                    return None
                index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
                index_at = end - XZ_FOOTER - index_size
                if index_at < XZ_FOOTER or index_size > 64 << 20:
                    return None
                xz.seek(index_at)
                index = xz.read(index_size)
                if index[:1] != b"\x00":
                    return None
                records, at = _varint(index, 1)
                blocks = 0
                for _ in range(records):
                    unpadded, at = _varint(index, at)
                    uncompressed, at = _varint(index, at)
                    blocks += (unpadded + 3) // 4 * 4
                    total += uncompressed
                end = index_at - blocks - XZ_FOOTER  # the stream's header
                xz.seek(max(end, 0))
                if end < 0 or xz.read(6) != XZ_MAGIC:
                    return None
    except (OSError, ValueError):
        return None
    return total


def gzip_unpacked(path: Path) -> Optional[int]:
    """A gzip file's size unpacked, from its trailer, where that is plausible."""
    try:
        with path.open("rb") as gz:
            size = gz.seek(0, 2)
            gz.seek(max(size - 4, 0))
            isize = int.from_bytes(gz.read(4), "little")
    except OSError:
        return None
    # Deflate never grows data by more than a few bytes a block: a smaller ISIZE
    # wrapped past 4 GiB, or belongs to the last of several members.
    return isize if isize >= size * 0.99 - 64 else None


def inspect(path: Path) -> Download:
    """What ``path`` is; ``ArchiveError`` when it is none of the forms a release
    comes in."""
    if path.is_dir():
        return Download(path, "folder", 0, None)
    if not path.is_file():
        what = "neither a file nor a folder" if path.exists() else "no such file or folder"
        raise ArchiveError(f"{path}: {what}")
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
    if head.startswith(XZ_MAGIC):
        return Download(path, "tar.xz", size, xz_unpacked(path))
    if head.startswith(GZIP_MAGIC):
        return Download(path, "tar.gz", size, gzip_unpacked(path))
    if head.startswith(BZIP2_MAGIC):
        return Download(path, "tar.bz2", size, None)
    if head.startswith(ZSTD_MAGIC):
        return Download(path, "tar.zst", size, None)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, UnicodeDecodeError, ValueError):
            declared = None  # the reader will say what is wrong
        return Download(path, "zip", size, declared)
    if tarfile.is_tarfile(path):
        return Download(path, "tar", size, size)
    raise ArchiveError(
        f"{path}: neither a tar archive (.tar.xz, .tar.gz, .tar.bz2, .tar) nor a .zip; "
        "pass the release as downloaded, or the folder it unpacks to"
    )


def read_release(download: Download, store: Store, meter: Optional[Meter] = None) -> Tree:
    """The release's entries, its files' bytes kept by ``store``."""
    if download.kind == "folder":
        return read_folder(download.path)
    if download.kind == "zip":
        return read_zip(download.path, store, meter)
    return read_tar(download.path, store, meter=meter)
