"""Read a release published as a zip into a ``Tree``, as ``archives`` reads a tar:
Unix symlinks in it (as Info-ZIP stores them) too.

A zip says up front what it holds, so everything it declares is checked before
any byte is kept, and every problem named at once: the count of entries and their
declared sizes against the caps, encryption, compression methods Python cannot
read (Deflate64, which Windows Explorer writes for large files), and names that
are not UTF-8. A name without the zip's UTF-8 flag is taken as UTF-8 when its
bytes are (many tools write UTF-8 without setting the flag); any other is refused
rather than guessed (``zipfile`` would read it as IBM code page 437, making
``café`` of ``caf\\xe9`` a ``cafΘ``). Each member is read to its end, so its CRC
is checked.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Optional

from archives import (
    MAX_BYTES,
    MAX_ENTRIES,
    MAX_TARGET,
    ArchiveError,
    Entry,
    Kind,
    Meter,
    Store,
    Tree,
    brief,
    kept_file,
)

ENCRYPTED = 0x1
UTF8 = 0x800
READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
METHODS = {9: "Deflate64 (as Windows Explorer writes large zips)", 6: "Implode", 1: "Shrink"}
UNZIP_IT = "unzip it (unzip, 7z) and pass the folder it unpacks to"


def member_name(info: zipfile.ZipInfo) -> Optional[str]:
    """The member's name as UTF-8 text; None when its bytes are not UTF-8."""
    if info.flag_bits & UTF8:
        return info.filename  # zipfile decoded it as UTF-8 already
    raw = info.orig_filename.encode("cp437")  # the bytes zipfile decoded as cp437
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def declared_problems(path: Path, infos: list[zipfile.ZipInfo]) -> list[str]:
    """What the zip's directory declares that cannot be built, every problem."""
    problems = []
    if len(infos) > MAX_ENTRIES:
        problems.append(f"{path}: {len(infos):,} entries, far more than any release")
    declared = sum(info.file_size for info in infos)
    if declared > MAX_BYTES:
        problems.append(
            f"{path}: its files would unpack to {declared:,} bytes, more than the "
            f"{MAX_BYTES >> 30} GiB a release may hold"
        )
    for info in infos:
        shown = brief(info.orig_filename)
        if member_name(info) is None:
            raw = info.orig_filename.encode("cp437")
            problems.append(
                f"{path}: the file name {raw!r} is not UTF-8, and a zip holds UTF-8 names: "
                f"{UNZIP_IT}, after renaming the file"
            )
        if info.flag_bits & ENCRYPTED:
            problems.append(f"{path}: {shown} is encrypted: unzip it with its password")
        elif info.compress_type not in READABLE:
            method = METHODS.get(info.compress_type, f"method {info.compress_type}")
            problems.append(
                f"{path}: {shown} is compressed with {method}, which Python cannot read: {UNZIP_IT}"
            )
        if _is_link(info) and info.file_size > MAX_TARGET:
            problems.append(
                f"{path}: {shown} is a symlink to a path of {info.file_size:,} bytes, "
                "longer than any system allows"
            )
    return problems


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def read_zip(path: Path, store: Store, meter: Optional[Meter] = None) -> Tree:
    """A zip archive's entries; ``meter`` is told the bytes unpacked so far, of
    all its files declare."""
    tree = Tree(str(path))
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            problems = declared_problems(path, infos)
            if problems:
                raise ArchiveError("\n".join(problems))
            total = sum(info.file_size for info in infos)
            done = 0
            for info in infos:
                name = member_name(info)
                assert name is not None  # checked above
                unix = info.external_attr >> 16 if info.create_system == 3 else 0
                if _is_link(info):
                    target = archive.read(info).decode("utf-8", "surrogateescape")
                    tree.add(name, Entry(Kind.LINK, target=target))
                elif name.endswith("/"):
                    tree.add(name, Entry(Kind.DIR, mode=stat.S_IMODE(unix) or 0o755))
                else:
                    kept_at = tree.admit(name, Kind.FILE, info.file_size)
                    with archive.open(info) as data:
                        kept = store.keep(data)
                    mode = stat.S_IMODE(unix) or 0o644
                    tree.put(kept_at, kept_file(kept, mode, info.file_size))
                done += info.file_size
                if meter is not None:
                    meter(done, total)
    except UnicodeDecodeError as exc:  # a name flagged UTF-8 that is not
        raise ArchiveError(
            f"{path}: the file name {exc.object!r} is marked as UTF-8 but is not: {UNZIP_IT}, "
            "after renaming the file"
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError, NotImplementedError) as exc:
        raise ArchiveError(
            f"{path}: cannot be read as a zip archive ({exc}); it is damaged or truncated: "
            "download it again"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the disk, not the data
            raise
        raise ArchiveError(f"{path}: a damaged zip ({exc}): download it again") from None
    return tree
