"""The symlinks of a release, as a zip cannot hold them: ``resolve`` follows one
as the kernel would, ``materialise`` replaces each by what it points to (a file
by a copy of it, a folder by a copy of its tree), within caps.

A link to a folder becomes a copy of its tree, so a few links can multiply a
release: ten links in each of six nested folders make a million files of a
689-byte archive, and nine levels of ten links to empty folders a billion
folders of a 620-byte one. So materialising may make at most 4 times the
release's files (10,000 at least) and 16 GiB in all, walk at most 4 times its
entries (10,000 at least) and nest no deeper than a release may; it is walked
without recursion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from archives import MAX_BYTES, MAX_DEPTH, Entry, Kind, Tree
from progress import human

LINK_HOPS = 40  # as the kernel: a longer chain of links is taken for a loop
# What materialising may make, far above what real releases need (their links
# are a few, mostly to files):
FILES_PER_FILE = 4  # files in the package per file of the release
VISITS_PER_ENTRY = 4  # entries walked per entry of the release
MIN_FILES = 10_000  # ... and this many of each in any case


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


def materialise(tree: Tree, top: str) -> Materialised:
    """Every file below ``top``, by its name in the zip (``top`` removed), each
    symlink replaced by its file or its folder's tree; problems collected. Walked
    without recursion; stops as soon as that makes more files, bytes, entries
    walked or levels than the caps allow."""
    children = tree.children()
    files: dict[str, str] = {}
    problems: list[str] = []
    links = total = visits = 0
    own = [e.size for e in tree.entries.values() if e.kind is Kind.FILE]
    caps = (
        max(FILES_PER_FILE * len(own), MIN_FILES),
        max(VISITS_PER_ENTRY * len(tree.entries), MIN_FILES),
    )
    multiplied = (
        "its links to folders would make {what} (the release itself has {own}): each such "
        "link becomes a copy of its folder, so links that lead to folders holding links "
        "multiply it; refused, as no real release needs that"
    )
    # Each folder to walk, its name in the zip, and the folders being copied into it.
    pending: list[tuple[str, str, tuple[str, ...]]] = [(top, "", (top,))]
    cap = ""
    while pending and not cap:
        folder, prefix, expanding = pending.pop()
        for name in children[folder]:
            path = f"{folder}/{name}" if folder else name
            out = f"{prefix}/{name}" if prefix else name
            entry = tree.entries[path]
            real = path
            visits += 1
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
                pending.append((real, out, (*expanding, real)))
            else:
                files[out] = real
                total += tree.entries[real].size
            cap = _passed(out, files=len(files), total=total, visits=visits, caps=caps)
            if cap:
                own_text = f"{len(own):,} files, {human(sum(own))}, {len(tree.entries):,} entries"
                problems.append(multiplied.format(what=cap, own=own_text))
                break
    return Materialised(files, links, tuple(problems))


def _passed(out: str, *, files: int, total: int, visits: int, caps: tuple[int, int]) -> str:
    """Which cap materialising has passed at ``out``, said as what it would make
    ("": none). ``caps``: the most files, and the most entries walked."""
    max_files, max_visits = caps
    if files > max_files:
        return f"the package hold more than {max_files:,} files"
    if total > MAX_BYTES:
        return f"the package hold more than {MAX_BYTES >> 30} GiB"
    if visits > max_visits:
        return f"the builder walk more than {max_visits:,} entries"
    if out.count("/") + 1 > MAX_DEPTH:
        return f"folders nest more than {MAX_DEPTH} deep"
    return ""
