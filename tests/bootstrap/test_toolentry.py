"""A tool's entry on PATH: link or launcher, decided from what is there (pure),
and the launcher itself run for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from node_agent.bootstrap.actions import ActionKind
from node_agent.bootstrap.libraries import LibraryReport
from node_agent.bootstrap.survey import Kind, PathState
from node_agent.bootstrap.toolentry import (
    LAUNCHER_MODE,
    EntryPlan,
    launcher_target,
    plan_entry,
    render_launcher,
    stale_libs_dirs,
)
from node_agent.node.layout import Layout

APPS = "/mnt/batch/tasks/applications"
SHARED = "/mnt/batch/tasks/shared"
LAYOUT = Layout(
    shared_dir=SHARED,
    applications_dir=APPS,
    agent_dir=f"{SHARED}/.node-agent",
    worker_dir=f"{SHARED}/.node-agent/worker",
    worker_home=f"{SHARED}/.node-agent/worker/home",
    libs_dir=f"{SHARED}/.node-agent/libs",
)
EXE = f"{APPS}/blender4.2.32024-11-02-10-02/blender"
OLD_EXE = f"{APPS}/blender4.2.22024-09-30-10-02/blender"
BUNDLE = f"{APPS}/blender4.2.32024-11-02-10-02/_system_libs"
LACKING = LibraryReport(
    dynamic=True,
    missing=("libXi.so.6", "libGL.so.1"),
    bundled=("libGL.so.1", "libX11.so.6", "libXi.so.6"),
    bundle_dir=BUNDLE,
)
HAS_ALL = LibraryReport(dynamic=True, missing=(), bundled=LACKING.bundled, bundle_dir=BUNDLE)
MISSING = PathState(Kind.MISSING)


def _plan(
    state: PathState, report: Optional[LibraryReport], libs_dirs: tuple[str, ...] = ()
) -> EntryPlan:
    return plan_entry(LAYOUT, "blender", EXE, state, libraries=report, libs_dirs=libs_dirs)


def _launcher(executable: str, libs: str = f"{LAYOUT.libs_dir}/blender-0123456789ab") -> PathState:
    content = render_launcher("blender", executable, libs)
    return PathState(Kind.FILE, content=content, mode=LAUNCHER_MODE, owned=True)


def test_new_launcher_with_only_the_libraries_the_system_lacks() -> None:
    plan = _plan(MISSING, LACKING)
    libs, entry = plan.actions
    assert libs.kind is ActionKind.LINK_LIBRARIES
    assert libs.links == (
        ("libXi.so.6", f"{BUNDLE}/libXi.so.6"),
        ("libGL.so.1", f"{BUNDLE}/libGL.so.1"),
    )  # libX11.so.6 is bundled too, but the system has it
    assert plan.libs_dir == libs.path and libs.path.startswith(f"{LAYOUT.libs_dir}/blender-")
    assert entry.kind is ActionKind.WRITE_FILE and entry.mode == 0o755
    assert entry.path == f"{SHARED}/blender"
    assert entry.content == render_launcher("blender", EXE, libs.path)
    assert plan.notes == (
        "blender: runs with the package's libXi.so.6, libGL.so.1 (not on this node's system)",
    )


def test_unchanged_launcher_is_kept() -> None:
    first = _plan(MISSING, LACKING)
    assert first.libs_dir is not None
    name = os.path.basename(first.libs_dir)
    again = _plan(_launcher(EXE, first.libs_dir), LACKING, (name,))
    assert [a.kind for a in again.actions] == [ActionKind.KEEP, ActionKind.KEEP]


@pytest.mark.parametrize(
    "state, reason",
    [
        (PathState(Kind.SYMLINK, link_target=OLD_EXE), f"replaces a link to {OLD_EXE}"),
        (_launcher(OLD_EXE), f"replaces a launcher for {OLD_EXE}"),
    ],
)
def test_older_deployment_entry_becomes_the_launcher(state: PathState, reason: str) -> None:
    entry = _plan(state, LACKING).actions[1]
    assert (entry.kind, entry.reason) == (ActionKind.WRITE_FILE, reason)


def test_launcher_becomes_a_link_when_nothing_is_lacking() -> None:
    plan = _plan(_launcher(OLD_EXE), HAS_ALL)
    [link] = plan.actions
    assert (link.kind, link.target) == (ActionKind.LINK, EXE)
    assert link.reason == f"replaces a launcher for {OLD_EXE}"
    assert plan.notes == (
        "blender: the system has every library it needs; the bundled ones are unused",
    )


@pytest.mark.parametrize(
    "state",
    [
        PathState(Kind.FILE, content=b'#!/bin/sh\nexec /opt/blender/blender "$@"\n'),
        PathState(Kind.FILE, content=None),  # too big to be a launcher: not read
        PathState(Kind.SYMLINK, link_target="/usr/bin/blender"),
        PathState(Kind.DIR),
    ],
)
@pytest.mark.parametrize("report", [LACKING, None])
def test_foreign_entries_are_never_replaced(
    state: PathState, report: Optional[LibraryReport]
) -> None:
    plan = _plan(state, report)
    assert plan.actions == ()
    [problem] = plan.problems
    assert "that node-agent did not make; it will not replace it" in str(problem)


def test_stale_libs_dirs_of_the_tools_only() -> None:
    kept = f"{LAYOUT.libs_dir}/blender-aaaaaaaaaaaa"
    removals = stale_libs_dirs(
        LAYOUT,
        ("blender", "ffmpeg"),
        [kept],
        ("blender-aaaaaaaaaaaa", "blender-bbbbbbbbbbbb", "oidn-cccccccccccc", "notes.txt"),
    )
    assert [(a.kind, a.path) for a in removals] == [
        (ActionKind.REMOVE_DIR, f"{LAYOUT.libs_dir}/blender-bbbbbbbbbbbb")
    ]


def test_launcher_target_round_trip() -> None:
    odd = '/mnt/batch/tasks/applications/it\'s a "folder"/blender'
    assert launcher_target(render_launcher("blender", odd, "/x y/libs")) == odd
    assert launcher_target(b"#!/bin/sh\nexec /usr/bin/blender\n") is None
    assert launcher_target(None) is None


def test_launcher_execs_the_real_binary_with_the_libraries_first(tmp_path: Path) -> None:
    package = tmp_path / "applications" / "blender 4.2"
    package.mkdir(parents=True)
    real = package / "blender"
    # Reports where it runs from (what Blender reads to find its data) and its view.
    real.write_text(
        '#!/bin/sh\necho "$0"; echo "$LD_LIBRARY_PATH"; for a in "$@"; do echo "[$a]"; done\n'
    )
    real.chmod(0o755)
    launcher = tmp_path / "shared" / "blender"
    launcher.parent.mkdir()
    launcher.write_bytes(render_launcher("blender", str(real), "/libs dir"))
    launcher.chmod(0o755)
    for inherited, expected in (("", "/libs dir"), ("/opt/x", "/libs dir:/opt/x")):
        env = {"PATH": "/usr/bin:/bin"}
        if inherited:
            env["LD_LIBRARY_PATH"] = inherited
        result = subprocess.run(
            [str(launcher), "one two", "*"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=30,
            check=True,
        )
        assert result.stdout.splitlines() == [str(real), expected, "[one two]", "[*]"]
