"""The system libraries a tool package bundles (``build-tool --libs``): the shared
libraries that ``.deb`` files install or that lie in a folder, and the reading of
a ``.deb`` itself (its ``data.tar.*``, without dpkg).
"""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from archives import CHUNK, ArchiveError, Staging, Tree, read_folder, read_tar

# A shared library where a .deb installs it (/usr/lib/<multiarch>/libX.so.6), or
# at the top of a folder of libraries.
LIBRARY = re.compile(
    r"(?:(?:usr/)?lib(?:32|64)?(?:/[a-z0-9_]+-linux-gnu[a-z0-9_]*)?/)?(lib[^/]*\.so(?:\.\d+)*)"
)
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class Library:
    """A shared library to bundle: its bytes, and where it came from."""

    source: Path
    origin: str


def libraries_in(tree: Tree, from_deb: bool) -> tuple[dict[str, Library], list[str]]:
    """The shared libraries a ``.deb`` installs, or that lie at the top of a folder
    (or in its lib folders); notes for entries skipped."""
    from toolpkg import LinkProblem, resolve  # noqa: PLC0415 (toolpkg imports this module)

    found: dict[str, Library] = {}
    notes: list[str] = []
    for path, entry in sorted(tree.entries.items()):
        match = LIBRARY.fullmatch(path)
        if match is None or entry.is_dir:
            continue
        try:
            real = resolve(tree.entries, path, absolute_from_top=from_deb)
        except LinkProblem as problem:
            notes.append(f"{tree.origin}: {path} skipped: it {problem}")
            continue
        source = tree.entries[real].source
        if source is None:
            continue
        with source.open("rb") as data:
            if data.read(4) != ELF_MAGIC:
                notes.append(f"{tree.origin}: {path} skipped: not an ELF shared library")
                continue
        found[match.group(1)] = Library(source, f"{tree.origin}: {path}")
    return found, notes


def collect_libraries(
    inputs: Sequence[Path], staging: Staging
) -> tuple[dict[str, Library], list[str]]:
    """Every library from the ``--libs`` inputs (``.deb`` files, folders of libraries
    or of ``.deb`` files), by file name; the same name twice with different bytes
    is refused."""
    found: dict[str, Library] = {}
    notes: list[str] = []
    trees: list[tuple[Tree, bool]] = []
    for given in inputs:
        if given.is_dir():
            trees.append((read_folder(given), False))
            trees += [(read_deb(deb, staging), True) for deb in sorted(given.glob("*.deb"))]
        elif given.suffix == ".deb" and given.is_file():
            trees.append((read_deb(given, staging), True))
        else:
            raise ArchiveError(f"--libs {given}: neither a .deb file nor a folder")
    for tree, from_deb in trees:
        libraries, skipped = libraries_in(tree, from_deb)
        notes += skipped
        for name, library in libraries.items():
            known = found.setdefault(name, library)
            if known != library and not filecmp.cmp(known.source, library.source, shallow=False):
                raise ArchiveError(
                    f"two different libraries named {name}: {known.origin} and "
                    f"{library.origin}; give the libraries of one Ubuntu release only"
                )
    return found, notes


def _ar_members(deb: IO[bytes], origin: str) -> Iterator[tuple[str, int]]:
    """The (name, size) of each member of an ar archive, the stream left at the
    member's data. The format: a magic line, then per member a 60-byte header
    (name 16, dates and ids 32, size 10, then a backquote and a newline) and the
    data, padded to an even length."""
    if deb.read(8) != b"!<arch>\n":
        raise ArchiveError(f"{origin}: not a .deb (no ar archive header)")
    while True:
        header = deb.read(60)
        if not header:
            return
        try:
            if len(header) < 60 or header[58:60] != b"`\n":
                raise ValueError("bad header")
            size = int(header[48:58])
        except ValueError:
            raise ArchiveError(f"{origin}: a damaged .deb; download it again") from None
        start = deb.tell()
        yield header[:16].decode("ascii", "replace").strip().rstrip("/"), size
        deb.seek(start + size + size % 2)


def read_deb(path: Path, staging: Staging) -> Tree:
    """The files a ``.deb`` installs (its ``data.tar.*``), read without dpkg. A
    zstd-compressed one (Ubuntu since 21.10) needs the ``zstd`` command."""
    with path.open("rb") as deb:
        for name, size in _ar_members(deb, str(path)):
            if not name.startswith("data.tar"):
                continue
            kept = staging.folder / f"{path.name}.{name}"
            with kept.open("xb") as out:
                remaining = size
                while remaining:
                    chunk = deb.read(min(CHUNK, remaining))
                    if not chunk:
                        raise ArchiveError(f"{path}: truncated; download it again")
                    out.write(chunk)
                    remaining -= len(chunk)
            if name.endswith(".zst"):
                kept = _unzstd(kept, path)
            return read_tar(kept, staging, f"{path}:{name}")
    raise ArchiveError(f"{path}: a .deb without data.tar; download it again")


def _unzstd(compressed: Path, deb: Path) -> Path:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ArchiveError(
            f"{deb}: its files are zstd-compressed and there is no zstd command here: "
            "install zstd (apt-get install zstd, brew install zstd), or unpack the .deb "
            "with dpkg-deb -x and pass the folder holding its libraries"
        )
    plain = compressed.with_suffix("")
    result = subprocess.run(
        [zstd, "-q", "-d", "-o", str(plain), str(compressed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ArchiveError(f"{deb}: zstd cannot decompress it ({result.stderr.strip()})")
    return plain
