"""What is on the node now, as far as bootstrap's plan needs to know (I/O,
read-only): the paths node-agent owns, the package folders, the executables in
them, the libraries a package brings that the system lacks, whether the shared dir
is writable."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from node_agent.bootstrap.libraries import LibraryReport, bundle_of, report
from node_agent.bootstrap.worker_ffmpeg import find_bundled
from node_agent.common import fsutil
from node_agent.common.errors import RuntimeFailure
from node_agent.config.settings import Settings
from node_agent.node.env import BatchEnv
from node_agent.node.flavour import Flavour
from node_agent.node.layout import (
    V2_CONFIG,
    V3_CONFIG,
    WORKER_EXECUTABLE,
    Layout,
)
from node_agent.node.packages import AppPackage

# ffprobe ships in the ffmpeg package; any other tool in the package of its own name.
TOOL_PACKAGES = {"ffprobe": "ffmpeg"}
ENTRY_READ_LIMIT = 64 * 1024  # a tool's entry is read only when launcher-sized


class Kind(Enum):
    """What is at a path."""

    MISSING = "missing"
    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    OTHER = "special file"


@dataclass(frozen=True)
class PathState:
    """One path as the survey found it (never following a final symlink)."""

    kind: Kind
    link_target: Optional[str] = None
    content: Optional[bytes] = None  # config files, and tool entries up to a limit
    mode: int = 0
    owned: bool = False
    executable: bool = False


@dataclass(frozen=True)
class Found:
    """An executable found in a package folder."""

    path: str
    nested_in: Optional[str]  # the one folder the zip wrongly wrapped everything in
    state: PathState


@dataclass(frozen=True)
class Survey:
    """What the node looks like now, as far as the plan needs to know."""

    paths: Mapping[str, PathState]
    package_dirs: Mapping[str, bool]  # package folder -> exists
    executables: Mapping[tuple[str, str], Optional[Found]]  # (package dir, name)
    shared_problem: Optional[str]  # why node-agent cannot write in the shared dir
    host_name: str  # the worker name's stand-in for a missing node id
    # Executables whose package brings libraries: what the loader says (None: no ldd).
    libraries: Mapping[str, Optional[LibraryReport]]
    libs_dirs: tuple[str, ...]  # the folders of library links in the libs dir
    bundled_ffmpeg: Optional[Found] = None  # in the worker package: what the worker runs

    def at(self, path: str) -> PathState:
        """The state of a surveyed path."""
        return self.paths[path]


def _can_execute(st: os.stat_result) -> bool:
    if os.getuid() == 0:
        return bool(st.st_mode & 0o111)
    if st.st_uid == os.getuid():
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in (os.getgid(), *os.getgroups()):
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _state(path: str, read: bool = False, limit: Optional[int] = None) -> PathState:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return PathState(Kind.MISSING)
    except NotADirectoryError:
        return PathState(Kind.MISSING)
    mode = stat.S_IMODE(st.st_mode)
    owned = st.st_uid == os.getuid()
    if stat.S_ISLNK(st.st_mode):
        return PathState(Kind.SYMLINK, link_target=os.readlink(path), mode=mode, owned=owned)
    if stat.S_ISDIR(st.st_mode):
        return PathState(Kind.DIR, mode=mode, owned=owned)
    if not stat.S_ISREG(st.st_mode):
        return PathState(Kind.OTHER, mode=mode, owned=owned)
    small = limit is None or st.st_size <= limit
    content = fsutil.read_regular_file(path) if read and small else None
    return PathState(
        Kind.FILE, content=content, mode=mode, owned=owned, executable=_can_execute(st)
    )


def locate(package_dir: str, name: str) -> Optional[Found]:
    """An executable at the top of a package folder, or one level down when the zip
    wrapped everything in one folder; None when neither."""
    top = os.path.join(package_dir, name)
    state = _state(top)
    if state.kind is Kind.FILE:
        return Found(top, None, state)
    try:
        entries = os.listdir(package_dir)
    except OSError:
        return None
    if len(entries) == 1 and os.path.isdir(os.path.join(package_dir, entries[0])):
        nested = os.path.join(package_dir, entries[0], name)
        state = _state(nested)
        if state.kind is Kind.FILE:
            return Found(nested, entries[0], state)
    return None


def _wanted_executables(env: BatchEnv, settings: Settings) -> list[tuple[AppPackage, str]]:
    wanted = []
    worker = env.find_package("flamenco-worker")
    if worker is not None:
        wanted.append((worker, WORKER_EXECUTABLE))
    for tool in settings.tools:
        package = env.find_package(TOOL_PACKAGES.get(tool, tool))
        if package is not None:
            wanted.append((package, tool))
    return wanted


def survey(env: BatchEnv, settings: Settings) -> Survey:
    """Look at the node (read-only). Raises ``RuntimeFailure`` when something that
    matters cannot even be read (a config file that may hold credentials)."""
    layout = Layout.for_env(env)
    paths: dict[str, PathState] = {}
    try:
        for path in (
            layout.agent_dir,
            layout.worker_dir,
            layout.worker_home,
            layout.credentials(Flavour.V3),
            layout.credentials(Flavour.V2),
        ):
            paths[path] = _state(path)
        for name in (V2_CONFIG, V3_CONFIG):
            path = os.path.join(layout.worker_dir, name)
            paths[path] = _state(path, read=True)
        for tool in settings.tools:
            paths[layout.link(tool)] = _state(layout.link(tool), True, ENTRY_READ_LIMIT)
    except OSError as exc:
        raise RuntimeFailure(f"{exc.filename}: cannot read: {exc.strerror}") from None
    executables = {
        (package.path, name): locate(package.path, name)
        for package, name in _wanted_executables(env, settings)
    }
    tools = [f for (_, name), f in executables.items() if f and name != WORKER_EXECUTABLE]
    try:
        libs_dirs = tuple(sorted(os.listdir(layout.libs_dir)))
    except OSError:
        libs_dirs = ()
    worker = next((f for (_, n), f in executables.items() if n == WORKER_EXECUTABLE), None)
    bundled = find_bundled(worker.path) if worker is not None else None
    return Survey(
        paths=paths,
        package_dirs={p.path: os.path.isdir(p.path) for p in env.packages},
        executables=executables,
        shared_problem=unwritable(layout.shared_dir),
        host_name=socket.gethostname(),
        libraries={f.path: report(f.path) for f in tools if bundle_of(f.path)},
        libs_dirs=libs_dirs,
        bundled_ffmpeg=Found(bundled, None, _state(bundled)) if bundled else None,
    )


def unwritable(directory: str) -> Optional[str]:
    """Why this process cannot create files in ``directory``, with the fix; None
    when it can. A node fault (a disk remounted read-only, a wrong user), not bad
    input: the environment names the directory Batch made."""
    try:
        status = os.stat(directory)
    except OSError as exc:
        return (
            f"{directory}: {exc.strerror}; check AZ_BATCH_NODE_SHARED_DIR (Batch creates it "
            "before the start task runs)"
        )
    if not stat.S_ISDIR(status.st_mode):
        return f"{directory}: is not a directory"
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False  # cannot tell; the access check below still answers
    if read_only:
        return (
            f"{directory}: is on a read-only file system (a disk remounted read-only "
            "after errors?); reboot or reimage the node"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"{directory}: not writable by uid {os.getuid()} (owner uid {status.st_uid}, "
            f"mode {stat.S_IMODE(status.st_mode):o}); check the start task's user identity"
        )
    return None
