"""A tool's entry in the shared dir (on every task's ``PATH``): a symlink to the
executable in its package, or, when the package brings libraries the node's
system lacks, a launcher script. Pure: decides from the survey, does no I/O.

Why a launcher: the loader must find the bundled libraries for every caller (the
worker, a task, an operator in SSH, ``doctor``), and only the process itself can
be given a search path: ``LD_LIBRARY_PATH`` set in the worker's environment would
miss the others, and changing the system (``ld.so.conf``) needs root. So the entry
becomes a few lines of ``sh`` that put the libraries on ``LD_LIBRARY_PATH`` and
``exec`` the package's own binary by its real path: Blender finds its data dirs
beside the binary it runs as (``/proc/self/exe``), exactly as through the link.

Why a folder of links: ``LD_LIBRARY_PATH`` is searched before the system's own
directories, so the package's whole ``_system_libs/`` there would override
libraries the node has (an NVIDIA image's ``libGL``, say). The launcher's path is
instead ``<shared>/.node-agent/libs/<tool>-<hash>/``, holding links to only the
bundled libraries the loader cannot find on this node: all of those, including the
ones the tool loads at run time (``dlopen``) that ``ldd`` never shows. It is named after what it
holds and made complete before the launcher points at it, so a re-run keeps it,
a change makes a new one, and the launcher switches over in one rename; folders
no launcher uses any more are removed.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Optional

from node_agent.bootstrap.actions import Action, ActionKind
from node_agent.bootstrap.libraries import LibraryReport
from node_agent.bootstrap.survey import Kind, PathState
from node_agent.common.errors import Problem
from node_agent.node.layout import Layout

LAUNCHER_MARK = "# node-agent launcher"
LAUNCHER_MODE = 0o755
_LIBS_DIR_NAME = re.compile(r"(.+)-[0-9a-f]{12}")


def render_launcher(
    tool: str, executable: str, libs_dir: Optional[str], cycles_device: Optional[str] = None
) -> bytes:
    """The launcher script for ``tool``: the package's libraries on the loader's
    path (``libs_dir``), and for Blender the Cycles device override, if any."""
    why = []
    lines = []
    if libs_dir is not None:
        why.append("with the package's libraries that this node's system lacks")
        lines += [
            f"LD_LIBRARY_PATH={shlex.quote(libs_dir)}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
            "export LD_LIBRARY_PATH",
        ]
    exe = shlex.quote(executable)
    if cycles_device is not None:
        # Cycles reads its own arguments after the first "--" (Blender's manual,
        # "Command Line Rendering"): add one only if the caller gave none.
        why.append(f"rendering Cycles on {cycles_device} (cycles_device)")
        device = shlex.quote(cycles_device)
        lines += [
            "for arg do",
            f'    if [ "$arg" = -- ]; then exec {exe} "$@" --cycles-device {device}; fi',
            "done",
            f'exec {exe} "$@" -- --cycles-device {device}',
        ]
    else:
        lines.append(f'exec {exe} "$@"')
    head = [
        "#!/bin/sh",
        f"{LAUNCHER_MARK} for {tool}: runs the package's own binary (so it finds its",
        f"# data beside it) {' and '.join(why)}.",
        "# Written by node-agent bootstrap, rewritten on every deployment.",
    ]
    return "".join(f"{line}\n" for line in (*head, *lines)).encode()


def launcher_target(content: Optional[bytes]) -> Optional[str]:
    """The executable a launcher of ours runs; None when ``content`` is not one."""
    if not content or not content.startswith(f"#!/bin/sh\n{LAUNCHER_MARK}".encode()):
        return None
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith("exec "):
            words = shlex.split(line)
            return words[1] if len(words) > 1 else None
    return None


def libs_dir_name(tool: str, executable: str, links: Iterable[tuple[str, str]]) -> str:
    """``<tool>-<hash of what it holds>``: a changed set of links gets a new folder."""
    text = "\0".join([executable, *(f"{name}={target}" for name, target in links)])
    return f"{tool}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class EntryPlan:
    """What one tool's entry needs."""

    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    libs_dir: Optional[str] = None  # the folder of links its launcher uses


def _replaceable(layout: Layout, state: PathState) -> Optional[str]:
    """Why an existing entry is ours to replace (None: it is not)."""
    if state.kind is Kind.SYMLINK and layout.in_applications(state.link_target or ""):
        return f"replaces a link to {state.link_target}"
    target = launcher_target(state.content) if state.kind is Kind.FILE else None
    return f"replaces a launcher for {target}" if target else None


def _foreign(path: str, tool: str, state: PathState) -> EntryPlan:
    what = (
        f"a symlink to {state.link_target}"
        if state.kind is Kind.SYMLINK
        else f"a {state.kind.value}"
    )
    message = (
        f"is {what} that node-agent did not make; it will not replace it. Remove "
        f"or rename it, or leave {tool} out of NODE_AGENT_TOOLS"
    )
    return EntryPlan(problems=(Problem(path, message),))


def _link(layout: Layout, tool: str, target: str, state: PathState) -> EntryPlan:
    path = layout.link(tool)
    if state.kind is Kind.MISSING:
        return EntryPlan((Action(ActionKind.LINK, path, "new", target=target),))
    if state.kind is Kind.SYMLINK and state.link_target == target:
        return EntryPlan((Action(ActionKind.KEEP, path, "already points there", target=target),))
    reason = _replaceable(layout, state)
    if reason is None:
        return _foreign(path, tool, state)
    return EntryPlan((Action(ActionKind.LINK, path, reason, target=target),))


def plan_entry(
    layout: Layout,
    tool: str,
    executable: str,
    state: PathState,
    *,
    libraries: Optional[LibraryReport],
    libs_dirs: Collection[str],
    cycles_device: Optional[str] = None,
) -> EntryPlan:
    """The entry for ``tool``: a link to ``executable``, or a launcher with the
    package's libraries this node lacks (``libraries``: what the loader said;
    ``libs_dirs``: the folders of links already there) and, for Blender, the
    Cycles device to render on (``cycles_device``)."""
    path = layout.link(tool)
    needed = libraries.exposed if libraries else ()
    notes: list[str] = []
    if not needed and libraries and libraries.bundled:
        notes.append(f"{tool}: the system has every library it needs; the bundled ones are unused")
    if not needed and cycles_device is None:
        return replace(_link(layout, tool, executable, state), notes=tuple(notes))
    actions: list[Action] = []
    libs_dir = None
    if needed:
        assert libraries is not None and libraries.bundle_dir is not None
        links = tuple((lib, posixpath.join(libraries.bundle_dir, lib)) for lib in needed)
        name = libs_dir_name(tool, executable, links)
        libs_dir = posixpath.join(layout.libs_dir, name)
        if name in libs_dirs:
            actions.append(Action(ActionKind.KEEP, libs_dir, "already holds these libraries"))
        else:
            actions.append(
                Action(ActionKind.LINK_LIBRARIES, libs_dir, ", ".join(needed), links=links)
            )
        notes.append(
            f"{tool}: runs with the package's {', '.join(needed)} (not on this node's system)"
        )
    if cycles_device is not None:
        notes.append(f"{tool}: renders Cycles on {cycles_device} (cycles_device)")
    content = render_launcher(tool, executable, libs_dir, cycles_device)
    reason = _replaceable(layout, state)
    if state.kind is Kind.FILE and state.content == content and state.mode == LAUNCHER_MODE:
        entry = Action(ActionKind.KEEP, path, f"launcher for {executable}")
    elif state.kind is Kind.MISSING or reason:
        reason = reason or f"new launcher for {executable}"
        entry = Action(ActionKind.WRITE_FILE, path, reason, content=content, mode=LAUNCHER_MODE)
    else:
        return _foreign(path, tool, state)
    return EntryPlan((*actions, entry), tuple(notes), (), libs_dir)


def stale_libs_dirs(
    layout: Layout, tools: Collection[str], kept: Collection[str], libs_dirs: Collection[str]
) -> tuple[Action, ...]:
    """Removals of the folders of links that no launcher of ``tools`` uses any more
    (an older deployment's). Another tool's are left alone: its launcher, if still
    on the node, may use them."""
    removals = []
    for name in sorted(libs_dirs):
        match = _LIBS_DIR_NAME.fullmatch(name)
        path = posixpath.join(layout.libs_dir, name)
        if match and match.group(1) in tools and path not in kept:
            removals.append(Action(ActionKind.REMOVE_DIR, path, "no launcher uses it any more"))
    return tuple(removals)
