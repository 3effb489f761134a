"""Make a tool's application package (``blender``, ``ffmpeg``) from its release as
users download it: what ``packaging/build-tool`` does.

- The one top-level folder of the release is flattened away, so the executables
  are at the top of the zip (Batch adds the package's own folder).
- Symlinks are materialised, as ZIP packages hold none: a link to a file becomes
  a copy of that file (its mode too), a link to a folder becomes a copy of that
  folder's tree. A link that leads outside the release, to nothing, or round in a
  loop is refused, every one named at once. So are links that would multiply the
  release (links to folders holding links to folders...): the package may hold at
  most 4 times the release's files (10,000 at least) and 16 GiB in all.
- Shared libraries from ``.deb`` files or folders go into ``_system_libs/``, the
  package's private folder that node-agent puts on the loader's path on the node
  for exactly the libraries the node's system lacks.
- The zip is written by the shared writer (``zipwriter``): sorted, fixed
  timestamps, executables 0755 and the rest 0644, the same bytes every time.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from archives import ArchiveError, Entry, Kind, Staging, Tree, read_release
from syslibs import collect_libraries
from zipwriter import Source, UnwritableNames, output_folder, write_zip

from node_agent.bootstrap.libraries import SYSTEM_LIBS_DIR

LINK_HOPS = 40  # as the kernel: a longer chain of links is taken for a loop
# A link to a folder becomes a copy of its tree, so a few links can multiply a
# release: ten links in each of six nested folders make a million files of a
# 689-byte archive. What materialising may make, far above what real releases need
# (their links are a few, mostly to files; 16 GiB is many times a Blender release):
FILES_PER_FILE = 4  # files in the package per file of the release
MIN_FILES = 10_000  # ... and this many in any case
MAX_BYTES = 16 << 30  # the package's files, uncompressed
# Executables a package should have besides the one named like it.
ALSO_EXPECTED = {"ffmpeg": ("ffprobe",)}
ARCHIVE_SUFFIX = re.compile(r"(?:\.tar)?\.(?:xz|gz|bz2|zst)$|\.(?:tgz|txz|tbz2?|zip|tar)$")


class LinkProblem(Exception):
    """Why a symlink cannot be materialised (completes "<link> ...")."""


def resolve(
    entries: Mapping[str, Entry], path: str, within: str = "", absolute_from_top: bool = False
) -> str:
    """The path of the file or folder that ``path`` leads to, following the tree's
    symlinks as the kernel would. ``LinkProblem`` when it leads outside the tree
    (or outside the folder ``within``), to nothing, or round in a loop. An
    absolute target is outside, unless ``absolute_from_top`` (a ``.deb``, whose
    top is the system's root)."""
    pending = path.split("/")[::-1]
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                raise LinkProblem("points outside the archive")
            current.pop()
            continue
        here = "/".join([*current, part])
        entry = entries.get(here)
        if entry is None:
            raise LinkProblem(f"points to {here}, which is not in the archive (dangling)")
        if entry.kind is Kind.LINK:
            hops += 1
            if hops > LINK_HOPS or not entry.target:
                raise LinkProblem("is part of a symlink loop")
            if entry.target.startswith("/"):
                if not absolute_from_top:
                    raise LinkProblem(f"points outside the archive ({entry.target})")
                current = []
            pending.extend(entry.target.split("/")[::-1])
            continue
        if entry.kind is Kind.FILE and any(p not in ("", ".") for p in pending):
            raise LinkProblem(f"goes through {here}, a file, as if it were a folder")
        current.append(part)
    found = "/".join(current)
    if within and found != within and not found.startswith(within + "/"):
        raise LinkProblem(f"points outside the release's folder {within}/ (to {found or '/'})")
    return found


def top_folder(tree: Tree) -> str:
    """The one folder everything is in ("" when the release has more at its top)."""
    names = tree.children()[""]
    return names[0] if len(names) == 1 and tree.entries[names[0]].is_dir else ""


@dataclass(frozen=True)
class Materialised:
    """The files of a release as the zip holds them."""

    files: dict[str, str]  # name in the zip -> the tree path holding its bytes
    links: int  # symlinks replaced by what they point to
    problems: tuple[str, ...]


class _Multiplied(Exception):
    """Materialising would make more than the caps allow."""


def materialise(tree: Tree, top: str) -> Materialised:
    """Every file below ``top``, by its name in the zip (``top`` removed), each
    symlink replaced by its file or its folder's tree; problems collected. Stops
    as soon as that makes more files or bytes than the caps allow."""
    children = tree.children()
    files: dict[str, str] = {}
    problems: list[str] = []
    links = total = 0
    own = [e.size for e in tree.entries.values() if e.kind is Kind.FILE]
    max_files = max(FILES_PER_FILE * len(own), MIN_FILES)

    def walk(folder: str, prefix: str, expanding: tuple[str, ...]) -> None:
        nonlocal links, total
        for name in children[folder]:
            path = f"{folder}/{name}" if folder else name
            out = f"{prefix}/{name}" if prefix else name
            entry = tree.entries[path]
            real = path
            if entry.kind is Kind.LINK:
                try:
                    real = resolve(tree.entries, path, within=top)
                except LinkProblem as problem:
                    problems.append(f"{path} -> {entry.target}: {problem}")
                    continue
                if real in expanding:
                    problems.append(
                        f"{path} -> {entry.target}: points to a folder that holds it (a loop)"
                    )
                    continue
                links += 1
            if tree.entries[real].is_dir:
                walk(real, out, (*expanding, real))
            else:
                files[out] = real
                total += tree.entries[real].size
                if len(files) > max_files or total > MAX_BYTES:
                    raise _Multiplied

    try:
        walk(top, "", (top,))
    except _Multiplied:
        problems.append(
            f"its links to folders would make the package hold more than {max_files} files "
            f"or {MAX_BYTES >> 30} GiB (the release itself has {len(own)} files, "
            f"{sum(own) / 2**20:.1f} MiB): each such link becomes a copy of its folder, so "
            "links that lead to folders holding links multiply it; refused, as no real "
            "release needs that"
        )
    return Materialised(files, links, tuple(problems))


def version_from_name(package_id: str, *names: str) -> Optional[str]:
    """The release's version as its archive or folder name spells it
    (``blender-4.2.3-linux-x64.tar.xz``: ``4.2.3``); None when no name has one."""
    pattern = re.compile(
        rf"{re.escape(package_id)}[-_][vn]?(\d+(?:\.\d+)+(?:-(?:alpha|beta|rc)\d*)?)(?=$|[-_+])",
        re.IGNORECASE,
    )
    for name in names:
        match = pattern.match(ARCHIVE_SUFFIX.sub("", name))
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True)
class Built:
    """What the builder made, for the operator."""

    package_id: str
    version: Optional[str]
    out: Path
    files: int
    top: str
    links: int
    libraries: tuple[str, ...]
    notes: tuple[str, ...]


def package_files(
    package_id: str, release: Path, tree: Tree
) -> tuple[dict[str, Source], str, int, list[str]]:
    """The release's files for the zip (name -> source), its top folder, the number
    of links materialised and notes; ``ArchiveError`` naming every problem."""
    top = top_folder(tree)
    result = materialise(tree, top)
    problems = [f"{release}: {p}" for p in result.problems]
    if problems:
        problems.append(
            "a zip holds no symlinks, so each must lead to a file or folder inside the "
            "release: use the release as its project publishes it, or fix these links in "
            "the unpacked folder and pass that folder"
        )
    if any(n == SYSTEM_LIBS_DIR or n.startswith(SYSTEM_LIBS_DIR + "/") for n in result.files):
        problems.append(
            f"{release}: has a {SYSTEM_LIBS_DIR}/ of its own; the builder puts it there"
        )
    notes: list[str] = []
    files: dict[str, Source] = {}
    for name, real in result.files.items():
        entry = tree.entries[real]
        assert entry.source is not None  # materialised names are files
        files[name] = Source(entry.source, bool(entry.mode & 0o111))
    for exe in (package_id, *ALSO_EXPECTED.get(package_id, ())):
        if exe in files:
            if not files[exe].executable:
                files[exe] = Source(files[exe].path, True)
                notes.append(f"{exe} was not executable in the release; made executable")
            continue
        elsewhere = sorted(n for n in files if n.rsplit("/", 1)[-1] == exe)
        found = f"; found {elsewhere[0]}, but the node runs it from the top" if elsewhere else ""
        if exe == package_id:
            where = f"{release} (below its top folder {top}/)" if top else str(release)
            problems.append(
                f"{where}: no {exe} executable at its top{found}; pass the {package_id} "
                "release (for ffmpeg a static build, which has ffmpeg at its top)"
            )
        else:
            notes.append(f"no {exe} in the release{found}: nodes get no {exe} on PATH")
    if problems:
        raise ArchiveError("\n".join(problems))
    return files, top, result.links, notes


def build(
    package_id: str,
    release: Path,
    *,
    libs: Sequence[Path],
    out: Optional[Path],
    version: Optional[str],
    dist: Path,
) -> Built:
    """Build the package zip; ``ArchiveError`` for bad input (nothing written)."""
    missing = [
        f"{given}: no such file or folder" for given in (release, *libs) if not given.exists()
    ]
    if missing:
        raise ArchiveError("\n".join(missing))
    workdir = out.parent if out else dist
    # Staged beside the output: a Blender release unpacks to more than /tmp holds.
    with (
        output_folder(workdir),
        tempfile.TemporaryDirectory(prefix=".build-tool-", dir=workdir) as staged,
    ):
        staging = Staging(Path(staged))
        tree = read_release(release, staging)
        files, top, links, notes = package_files(package_id, release, tree)
        libraries, skipped = collect_libraries(libs, staging)
        notes += skipped
        for library, found in libraries.items():
            files[f"{SYSTEM_LIBS_DIR}/{library}"] = Source(found.source, False)
        version = version or version_from_name(package_id, release.name, top)
        name = f"{package_id}-{version}.zip" if version else f"{package_id}.zip"
        out = out or dist / name
        try:
            write_zip(out, files)
        except UnwritableNames as exc:
            raise ArchiveError(
                "\n".join(
                    f"{release}: the file name {shown} is not UTF-8, and a zip holds UTF-8 "
                    "names: rename it in the unpacked release and pass that folder"
                    for shown in exc.names
                )
            ) from None
    return Built(
        package_id, version, out, len(files), top, links, tuple(sorted(libraries)), tuple(notes)
    )
