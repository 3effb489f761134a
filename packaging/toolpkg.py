"""Make a tool's application package (``blender``, ``ffmpeg``) from its release as
users download it: what ``packaging/build-tool`` does.

- The one top-level folder of the release is flattened away, so the executables
  are at the top of the zip (Batch adds the package's own folder).
- Symlinks are materialised, as ZIP packages hold none (``links``): a link to a
  file becomes a copy of that file (its mode too), a link to a folder becomes a
  copy of that folder's tree. A link that leads outside the release, to nothing,
  or round in a loop is refused, every one named at once; so are links that
  would multiply the release past the caps.
- Shared libraries from ``.deb`` files or folders go into ``_system_libs/``, the
  package's private folder that node-agent puts on the loader's path on the node
  for exactly the libraries the node's system lacks.
- The files are deflated while the release is read (``packer``) and the zip is
  laid out from them (``zipwriter``): sorted, fixed timestamps, executables 0755
  and the rest 0644, the same bytes every time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from archives import MAX_BYTES, ArchiveError, Entry, Kind, Staging, Tree
from links import materialise, top_folder
from packer import Packer, PackingFailed
from progress import Progress, human
from release import Download, inspect, read_release
from syslibs import collect_libraries
from zipwriter import Member, output_folder, unwritable, write_zip

# The package's private folder of libraries, named as the node looks for it
# (node_agent.bootstrap.libraries.SYSTEM_LIBS_DIR; a test keeps them the same).
# Not imported: build-tool runs on a bare system python3, and node_agent's
# packages import what only its virtual environment has (PyYAML).
SYSTEM_LIBS_DIR = "_system_libs"
# Executables a package should have besides the one named like it.
ALSO_EXPECTED = {"ffmpeg": ("ffprobe",)}
ARCHIVE_SUFFIX = re.compile(r"(?:\.tar)?\.(?:xz|gz|bz2|zst)$|\.(?:tgz|txz|tbz2?|zip|tar)$")


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
    unpacked: int  # the package's files' bytes
    top: str
    links: int
    libraries: tuple[str, ...]
    notes: tuple[str, ...]


class Planned(NamedTuple):
    """A file for the zip: the entry holding its bytes, and whether it is executable."""

    entry: Entry
    executable: bool


def package_files(
    package_id: str, release: Path, tree: Tree
) -> tuple[dict[str, Planned], str, int, list[str]]:
    """The release's files for the zip (name -> planned), its top folder, the
    number of links materialised and notes; ``ArchiveError`` naming every problem."""
    top = top_folder(tree)
    result = materialise(tree, top)
    problems = [f"{release}: {p}" for p in result.problems]
    if problems:
        problems.append(
            "a zip holds no symlinks, so each must lead to a file or folder inside the "
            "release: use the release as its project publishes it, or fix these links in "
            "the unpacked folder and pass that folder"
        )
    problems += [
        f"{release}: the file name {shown} is not UTF-8, and a zip holds UTF-8 names: "
        "rename it in the unpacked release and pass that folder"
        for shown in unwritable(sorted(result.files))
    ]
    if any(n == SYSTEM_LIBS_DIR or n.startswith(SYSTEM_LIBS_DIR + "/") for n in result.files):
        problems.append(
            f"{release}: has a {SYSTEM_LIBS_DIR}/ of its own; the builder puts it there"
        )
    notes: list[str] = []
    files: dict[str, Planned] = {}
    for name, real in result.files.items():
        entry = tree.entries[real]
        files[name] = Planned(entry, bool(entry.mode & 0o111))
    for exe in (package_id, *ALSO_EXPECTED.get(package_id, ())):
        if exe in files:
            if not files[exe].executable:
                files[exe] = Planned(files[exe].entry, True)
                notes.append(f"{exe} was not executable in the release; made executable")
            continue
        elsewhere = sorted(n for n in files if n.rsplit("/", 1)[-1] == exe)
        found = f"; found {elsewhere[0]}, but the node runs it from the top" if elsewhere else ""
        if exe == package_id:
            where = f"{release} (below its top folder {top}/)" if top else str(release)
            hint = (
                " (for ffmpeg a static build, which has ffmpeg at its top)"
                if package_id == "ffmpeg"
                else ""
            )
            problems.append(
                f"{where}: no {exe} executable at its top{found}; pass the {package_id} "
                f"release{hint}"
            )
        else:
            notes.append(f"no {exe} in the release{found}: nodes get no {exe} on PATH")
    if problems:
        raise ArchiveError("\n".join(problems))
    return files, top, result.links, notes


def pack_sources(
    files: Mapping[str, Planned], packer: Packer, progress: Optional[Progress]
) -> dict[str, int]:
    """The packer's number for each file: those an archive's reading packed, and
    those still on disk (a folder's, a library's) packed now, each once."""
    on_disk: dict[Path, int] = {}
    waiting = sorted(
        {p.entry.source for p in files.values() if p.entry.packed is None and p.entry.source}
    )
    sizes = {source: source.stat().st_size for source in waiting}
    total = sum(sizes.values())
    if progress is not None and waiting:
        progress.step(f"deflating {len(waiting):,} files", total)
    done = 0
    for source in waiting:
        on_disk[source] = packer.pack_file(source)
        done += sizes[source]
        if progress is not None:
            progress.update(done, total)
    numbers: dict[str, int] = {}
    for name, planned in files.items():
        entry = planned.entry
        if entry.packed is not None:
            numbers[name] = entry.packed
        else:
            assert entry.source is not None  # a file's bytes are either packed or on disk
            numbers[name] = on_disk[entry.source]
    return numbers


def input_problems(inputs: Sequence[Path], out: Optional[Path], folder: Path) -> list[str]:
    """What is wrong with the inputs and the output, every problem: an input that
    is not there, an output that is an input (it would overwrite the download) or
    that is written inside an input folder (the build would read its own files)."""
    problems = [f"{given}: no such file or folder" for given in inputs if not given.exists()]
    if out is not None and out.is_dir():
        problems.append(f"--out {out}: a folder; give the zip's file name")
    for given in inputs:
        if not given.exists():
            continue
        if out is not None and out.exists() and os.path.samefile(out, given):
            problems.append(f"--out {out}: that is the input {given}; write the zip elsewhere")
        elif given.is_dir() and _within(folder, given):
            problems.append(
                f"--out {out or folder}: inside the input folder {given}, which the build "
                "reads; write the zip elsewhere"
            )
    return problems


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


@contextlib.contextmanager
def workspace(folder: Path, out: Optional[Path], prefix: str) -> Iterator[Path]:
    """A staging folder in ``folder`` (made, with its parents, if missing),
    removed afterwards, and ``folder`` too if the build fails and it was made
    for it. ``OSError`` naming the output when it cannot be made."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(output_folder(folder))
            staged = stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix, dir=folder))
        except OSError as error:
            raise OSError(
                error.errno, f"cannot write there ({error.strerror})", str(out or folder)
            ) from None
        yield Path(staged)


def needs(download: Download, unpacked: Optional[int], folder: Path) -> str:
    """What the release is and how much disk the build needs where, to say up front."""
    free = shutil.disk_usage(folder).free
    # At most: every file deflated (never much more than its size), then the zip
    # copied from them; deflate usually halves a release, or better.
    if download.kind == "folder":
        what = f"a folder of {human(unpacked or 0)}"
    elif unpacked is None:
        what = f"{human(download.size)}, its unpacked size not recorded in a {download.kind}"
    else:
        what = f"{human(download.size)}, {human(unpacked)} unpacked"
    if unpacked is None:
        need = "up to twice its unpacked size"
        short = False
    else:
        need = f"up to {human(2 * unpacked)}"
        short = free < 2 * unpacked
    return (
        f"{download.path.name}: {what}; the build needs {need} in {folder}, and a copy "
        "of what its symlinks point to (its files deflated, then the zip; usually far "
        f"less), {human(free)} free there" + (": that may not be enough" if short else "")
    )


def build(
    package_id: str,
    release: Path,
    *,
    libs: Sequence[Path],
    out: Optional[Path],
    version: Optional[str],
    dist: Path,
    say: Callable[[str], None],
    progress: Optional[Progress] = None,
) -> Built:
    """Build the package zip; ``ArchiveError`` for bad input (nothing written),
    ``OSError`` naming the path for the rest. ``say`` is told what the build
    needs up front."""
    folder = out.parent if out else dist
    problems = input_problems((release, *libs), out, folder)
    if problems:
        raise ArchiveError("\n".join(problems))
    download = inspect(release)
    if download.unpacked is not None and download.unpacked > MAX_BYTES:
        raise ArchiveError(
            f"{release}: unpacks to {human(download.unpacked)}, more than the "
            f"{MAX_BYTES >> 30} GiB a release may hold"
        )
    meter = progress.update if progress is not None else None
    # Staged beside the output: a Blender release deflated is more than /tmp may hold.
    with workspace(folder, out, ".build-tool-") as staged:
        try:
            # The libraries first: small, and a mistake in them is better said at once
            # than after minutes of unpacking.
            libraries, notes = collect_libraries(libs, Staging(staged))
            with Packer(staged / "packed") as packer:
                if download.kind != "folder":
                    say(needs(download, download.unpacked, folder))
                    if progress is not None:
                        progress.step(f"unpacking {release.name}", download.size)
                tree = read_release(download, packer, meter)
                if download.kind == "folder":
                    say(needs(download, tree.bytes, folder))
                files, top, links, release_notes = package_files(package_id, release, tree)
                notes = release_notes + notes
                for library, found in libraries.items():
                    files[f"{SYSTEM_LIBS_DIR}/{library}"] = Planned(
                        Entry(Kind.FILE, found.source), False
                    )
                numbers = pack_sources(files, packer, progress)
                records = packer.finish()
        except PackingFailed as failed:
            raise OSError(failed.error.errno, failed.error.strerror, str(folder)) from None
        except OSError as error:  # writing staged files (a .deb's): say where
            error.filename = error.filename or str(folder)
            raise
        members = {
            name: Member(records[numbers[name]], planned.executable)
            for name, planned in files.items()
        }
        version = version or version_from_name(package_id, release.name, top)
        out = out or dist / (f"{package_id}-{version}.zip" if version else f"{package_id}.zip")
        write(out, members, progress)
    unpacked = sum(member.packed.size for member in members.values())
    return Built(
        package_id,
        version,
        out,
        len(files),
        unpacked,
        top,
        links,
        tuple(sorted(libraries)),
        tuple(notes),
    )


def write(out: Path, members: Mapping[str, Member], progress: Optional[Progress]) -> None:
    """``write_zip``, its progress shown, an error without a path named after ``out``."""
    total = sum(member.packed.length for member in members.values())
    if progress is not None:
        progress.step(f"writing {out.name}", total)
    try:
        write_zip(out, members, (lambda done: progress.update(done, total)) if progress else None)
    except OSError as error:
        if error.filename is None:
            error.filename = str(out.parent)
        raise
    finally:
        if progress is not None:
            progress.done()


def upload_lines(package_id: str, version: Optional[str], out: Path, unknown: str) -> list[str]:
    """What to tell the operator about uploading the zip: the package id, the
    version (``unknown`` says how to choose one when the release's name has none)
    and the ``az`` commands."""
    lines = [] if version else [f"version: not in the release's name; {unknown}"]
    shown = version or "VERSION"
    return [
        *lines,
        f'upload it as application package "{package_id}", version "{shown}", and make that',
        "the default version (packaging/pool.json names packages without a version):",
        f"  az batch application package create -g RESOURCE_GROUP -n BATCH_ACCOUNT "
        f"--application-name {package_id} --version-name {shown} --package-file {out}",
        f"  az batch application set -g RESOURCE_GROUP -n BATCH_ACCOUNT "
        f"--application-name {package_id} --default-version {shown}",
    ]
