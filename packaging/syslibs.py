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

from archives import CHUNK, ArchiveError, Kind, Staging, Tree, read_folder, read_tar
from elf import SharedObject, shared_object

# The folders the loader searches where a .deb installs libraries: /lib, /usr/lib,
# their 32/64 variants and multiarch folders (/usr/lib/x86_64-linux-gnu). A folder
# given to --libs may hold its libraries at its top or in such folders too.
LIBRARY_DIR = re.compile(r"(?:usr/)?lib(?:32|64|x32)?(?:/[a-z0-9_]+-linux-gnu[a-z0-9_]*)?")
# A shared object without a soname is bundled under its file name, if it looks like
# a library's; any other ELF file without one (a PIE program) is not a library.
LIBRARY_NAME = re.compile(r"lib[^/]*\.so(?:\.[^/]*)?")


@dataclass(frozen=True)
class Library:
    """A shared library to bundle: its bytes, and where it came from."""

    source: Path
    origin: str


def _in_library_dir(path: str, from_deb: bool) -> tuple[bool, bool]:
    """(at the top of a library folder, below one) for a file at ``path``; a folder
    given to --libs counts as a library folder itself."""
    parent = path.rpartition("/")[0]
    at_top = bool(LIBRARY_DIR.fullmatch(parent)) or (not from_deb and parent == "")
    parts = parent.split("/")
    above = ("/".join(parts[:i]) for i in range(1, len(parts)))
    return at_top, not at_top and any(LIBRARY_DIR.fullmatch(folder) for folder in above)


def libraries_in(tree: Tree, from_deb: bool) -> tuple[dict[str, Library], list[str]]:
    """The shared libraries a ``.deb`` installs, or that lie in a folder, by the
    name the loader looks for (their soname): every ELF shared object at the top of
    a library folder (or of the folder given), and those in a library folder's
    subfolders (``/usr/lib/x86_64-linux-gnu/pulseaudio/``) that one of them needs.
    Symlinks are not followed: a library's own file is taken once, under its soname,
    whatever links a .deb adds beside it. Notes for what was left out."""
    top: list[tuple[str, Library, SharedObject]] = []
    deeper: dict[str, tuple[str, Library, SharedObject]] = {}
    notes: list[str] = []
    for path, entry in sorted(tree.entries.items()):
        if entry.kind is not Kind.FILE or entry.source is None:
            continue
        at_top, below = _in_library_dir(path, from_deb)
        if not (at_top or below):
            continue
        found = shared_object(entry.source)
        file_name = path.rsplit("/", 1)[-1]
        if found is None:
            if at_top and LIBRARY_NAME.fullmatch(file_name):
                notes.append(f"{tree.origin}: {path} skipped: not an ELF shared library")
            continue
        name = found.soname or (file_name if LIBRARY_NAME.fullmatch(file_name) else None)
        if name is None:
            continue  # a program built as a position-independent executable
        item = (name, Library(entry.source, f"{tree.origin}: {path}"), found)
        if at_top:
            top.append(item)
        else:
            deeper.setdefault(name, item)
    chosen: dict[str, Library] = {}
    pending = list(top)
    while pending:
        name, library, found = pending.pop(0)
        known = chosen.setdefault(name, library)
        if known is not library:
            _same_or_refuse(name, known, library)
            continue
        pending += [deeper.pop(needed) for needed in found.needed if needed in deeper]
    return chosen, notes


def _same_or_refuse(name: str, known: Library, other: Library) -> None:
    if not filecmp.cmp(known.source, other.source, shallow=False):
        raise ArchiveError(
            f"two different libraries named {name}: {known.origin} and "
            f"{other.origin}; give the libraries of one Ubuntu release only"
        )


def _nothing_found(given: Path, tree: Tree) -> str:
    """Why ``--libs given`` gave no library, and what was probably meant."""
    links = sum(1 for e in tree.entries.values() if e.kind is Kind.LINK)
    if given.is_dir():
        debs = " (nor in its .deb files)" if any(given.glob("*.deb")) else ""
        hint = f"; its {links} symlink(s) are not followed: copy with cp -L" if links else ""
        return (
            f"--libs {given}: no ELF shared library at its top or in its lib folders{debs}"
            f"{hint}; give .deb files of library packages, or a folder of libraries"
        )
    return (
        f"--libs {given}: installs no ELF shared library into /lib or /usr/lib (a -dev, "
        "-bin or -common package?); give the library package itself (libtidy5deb1, not "
        "libtidy-dev: apt-cache show NAME lists its files' package)"
    )


def collect_libraries(
    inputs: Sequence[Path], staging: Staging
) -> tuple[dict[str, Library], list[str]]:
    """Every library from the ``--libs`` inputs (``.deb`` files, folders of libraries
    or of ``.deb`` files), by soname. Refused, every one named at once: an input
    that gives no library (almost certainly a mistake), and the same name twice with
    different bytes."""
    found: dict[str, Library] = {}
    notes: list[str] = []
    problems: list[str] = []
    for given in inputs:
        if given.is_dir():
            trees = [(read_folder(given), False)]
            trees += [(read_deb(deb, staging), True) for deb in sorted(given.glob("*.deb"))]
        elif given.suffix == ".deb" and given.is_file():
            trees = [(read_deb(given, staging), True)]
        else:
            problems.append(f"--libs {given}: neither a .deb file nor a folder")
            continue
        count = 0
        for tree, from_deb in trees:
            libraries, skipped = libraries_in(tree, from_deb)
            notes += skipped
            count += len(libraries)
            for name, library in libraries.items():
                known = found.setdefault(name, library)
                if known is not library:
                    _same_or_refuse(name, known, library)
        if count == 0:
            problems.append(_nothing_found(given, trees[0][0]))
    if problems:
        raise ArchiveError("\n".join(problems))
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
        size_field = header[48:58].strip()
        # Decimal digits only: int() would take "-200" or " +5", and a negative
        # size seeks backwards (forever, or to an error naming no file).
        if len(header) < 60 or header[58:60] != b"`\n" or not size_field.isdigit():
            raise ArchiveError(f"{origin}: a damaged .deb (a bad ar header); download it again")
        size = int(size_field)
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
