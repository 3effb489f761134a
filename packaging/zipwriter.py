"""The zip writer every package builder uses: the same files give the same bytes.

Entries are written sorted by name, each with a fixed timestamp and a Unix mode
(0755 for executables, 0644 for the rest, so the start task's user can read every
file whoever extracted it), deflated at level 9, no directory entries and no
symlinks (Batch's packages have none). Files are streamed, never read whole into
memory (a Blender release has files of several hundred MB). The zip is written
under a temporary name and renamed into place, and ``output_folder`` removes the
folders a builder made for it, so a failed build leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
CHUNK = 1 << 20


class Source(NamedTuple):
    """Where an entry's bytes come from, and whether it is executable."""

    path: Path
    executable: bool


class UnwritableNames(ValueError):
    """Names a zip cannot hold; ``names`` shows each escaped."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"file names that are not UTF-8: {', '.join(names)}")


def _shown(name: str) -> str:
    try:
        return repr(os.fsencode(name))  # the bytes as the file system has them
    except UnicodeEncodeError:
        return ascii(name)


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


def write_zip(out: Path, files: Mapping[str, Source]) -> None:
    """Write ``files`` (archive name -> source) to ``out``, in an existing folder:
    sorted entries, fixed timestamps, Unix modes; the same files, the same bytes.
    ``UnwritableNames`` (nothing written) when names are not UTF-8 text: a zip
    stores UTF-8, and Python keeps such names' bytes as surrogate escapes."""
    unwritable = []
    for name in sorted(files):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            unwritable.append(_shown(name))
    if unwritable:
        raise UnwritableNames(unwritable)
    temp = out.with_name(out.name + ".tmp")
    try:
        with zipfile.ZipFile(temp, "w") as archive:
            for name in sorted(files):
                source = files[name]
                mode = 0o755 if source.executable else 0o644
                info = zipfile.ZipInfo(name, date_time=EPOCH)
                info.create_system = 3  # Unix: external_attr holds the mode
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                # ZipInfo's level attribute: what writestr(compresslevel=9) sets.
                info._compresslevel = 9  # type: ignore[attr-defined]
                info.file_size = source.path.stat().st_size  # decides zip64 up front
                with source.path.open("rb") as data, archive.open(info, "w") as entry:
                    shutil.copyfileobj(data, entry, CHUNK)
        temp.replace(out)
    finally:
        temp.unlink(missing_ok=True)
