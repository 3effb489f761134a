"""Blender's system libraries without root, with the real loader: a program built
here with the system C compiler, linked against a library that is on no system
path, packaged as ``blender`` with that library bundled, runs through ``PATH`` on
a bootstrapped node; without the bundle it fails with the loader's ``not found``,
and doctor names the library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_agent import bootstrap, doctor
from node_agent.bootstrap import libraries
from node_agent.bootstrap.actions import ActionKind
from node_agent.bootstrap.libraries import (
    LIBRARY_PACKAGES,
    found_by_loader,
    interpreter_of,
    parse_ldd,
)
from node_agent.bootstrap.survey import survey
from node_agent.cli import main
from node_agent.config.settings import load_settings
from node_agent.doctor import Status
from tests.nodes import TestNode, make_node, write_executable
from tests.releases import build_tool, write_tar

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(
    CC is None,
    reason="no C compiler (cc or gcc) here: the loader test builds a real program and library",
)
GREETING = "libnodeagentgreet.so.1"  # on no system path: only the package has it
TOP = "blender-4.2.3-linux-x64"
MAIN_C = r"""
#include <math.h>
#include <stdio.h>
const char *greeting(void);
int main(int argc, char **argv) {
    volatile double zero = 0.0;
    printf("%s; cos(0) = %.0f; %d argument(s)\n", greeting(), cos(zero), argc - 1);
    return 0;
}
"""


@dataclass(frozen=True)
class Built:
    with_libs: Path  # the blender package, the library bundled
    without_libs: Path  # the same program, nothing bundled
    program: Path


def _cc(*args: object) -> None:
    assert CC is not None
    subprocess.run([CC, *map(str, args)], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    where = tmp_path_factory.mktemp("cc")
    libs = where / "libs"
    libs.mkdir()
    (where / "greet.c").write_text(
        'const char *greeting(void) { return "hello from the bundled library"; }\n'
    )
    (where / "main.c").write_text(MAIN_C)
    # A library the node's system has too, but wrong: if the launcher put it before
    # the system's, the program would die with "undefined symbol: cos".
    (where / "fakem.c").write_text("int not_the_real_libm(void) { return 0; }\n")
    _cc("-shared", "-fPIC", f"-Wl,-soname,{GREETING}", "-o", libs / GREETING, where / "greet.c")
    _cc("-shared", "-fPIC", "-Wl,-soname,libm.so.6", "-o", libs / "libm.so.6", where / "fakem.c")
    program = where / "blender"
    _cc("-o", program, where / "main.c", libs / GREETING, "-lm")
    release = write_tar(
        where / f"{TOP}.tar.xz",
        {
            f"{TOP}/blender": (program.read_bytes(), 0o755),
            f"{TOP}/4.2/datafiles/README": b"Blender's data, beside its binary\n",
        },
    )
    with_libs, without_libs = where / "with.zip", where / "without.zip"
    result = build_tool("blender", release, "--libs", libs, "--out", with_libs)
    assert result.returncode == 0, result.stderr
    assert f"bundled libraries: libm.so.6 {GREETING}" in result.stdout
    assert build_tool("blender", release, "--out", without_libs).returncode == 0
    return Built(with_libs, without_libs, program)


def _node(root: Path, package: Path) -> TestNode:
    return make_node(root, "newer_spot", zips={"blender": package})


def _bootstrap(node: TestNode, env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent", "bootstrap", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )


def _blender(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    """``blender`` found through the node's PATH, as the worker, a task or an
    operator finds it (no LD_LIBRARY_PATH of their own)."""
    found = shutil.which("blender", path=node.environ["PATH"])
    assert found == str(node.shared / "blender")
    return subprocess.run(
        [found, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": node.environ["PATH"]},
    )


def _rows(node: TestNode) -> dict[str, doctor.Row]:
    return {row.check: row for row in doctor.run_checks(node.environ)}


@needs_cc
def test_bundled_library_is_found_through_path(built: Built, tmp_path: Path) -> None:
    node = _node(tmp_path / "root", built.with_libs)
    first = _bootstrap(node, node.env_file(tmp_path / "node.env"))
    assert first.returncode == 0, first.stderr
    assert f"note: blender: runs with the package's {GREETING} (not on this node's" in first.stdout

    ran = _blender(node, "--version", "two words")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from the bundled library; cos(0) = 1; 2 argument(s)\n"
    # Only what the system lacks is on the launcher's path: the fake libm.so.6 is not.
    [libs_dir] = (node.shared / ".node-agent/libs").iterdir()
    assert sorted(os.listdir(libs_dir)) == [GREETING]
    assert not (node.shared / "blender").is_symlink()

    rows = _rows(node)
    assert rows["libraries blender"].status is Status.OK
    assert rows["libraries blender"].found == (
        f"the system lacks {GREETING}; the package's bundled libraries cover them"
    )
    assert rows["blender --version"].status is Status.OK

    # Re-running changes nothing.
    settings = load_settings(node.environ, {}, None)
    assert bootstrap.plan(node.env, settings, survey(node.env, settings)).changes == ()


@needs_cc
def test_without_the_bundle_the_loader_says_not_found(built: Built, tmp_path: Path) -> None:
    node = _node(tmp_path / "root", built.without_libs)
    assert _bootstrap(node, node.env_file(tmp_path / "node.env")).returncode == 0
    assert (node.shared / "blender").is_symlink()

    ran = _blender(node, "--version")
    assert ran.returncode == 127
    assert f"{GREETING}: cannot open shared object file" in ran.stderr

    rows = _rows(node)
    libraries = rows["libraries blender"]
    assert libraries.status is Status.FAILED
    assert libraries.found == f"the system lacks {GREETING}; not covered: {GREETING}"
    assert libraries.fix is not None and "packaging/build-tool blender" in libraries.fix
    assert rows["blender --version"].status is Status.FAILED
    assert GREETING in rows["blender --version"].found


@needs_cc
def test_redeploy_moves_the_launcher_and_drops_old_library_links(
    built: Built, tmp_path: Path
) -> None:
    node = _node(tmp_path / "root", built.with_libs)
    settings = load_settings(node.environ, {}, None)
    bootstrap.apply(bootstrap.plan(node.env, settings, survey(node.env, settings)))
    [old_libs] = (node.shared / ".node-agent/libs").iterdir()

    # New package versions: new folders, new variables (the old folders are gone).
    environ = {
        k: v.replace("2024-09-30", "2024-11-02") if k.startswith("AZ_BATCH_APP_PACKAGE_") else v
        for k, v in node.environ.items()
    }
    for package in node.env.packages:
        os.rename(package.path, package.path.replace("2024-09-30", "2024-11-02"))
    node = TestNode(node.root, environ)
    plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
    kinds = {(a.kind, a.path) for a in plan.changes}
    assert (ActionKind.REMOVE_DIR, str(old_libs)) in kinds
    [launcher] = [a for a in plan.changes if a.path == str(node.shared / "blender")]
    assert launcher.kind is ActionKind.WRITE_FILE
    assert (
        launcher.reason.startswith("replaces a launcher for ") and "2024-09-30" in launcher.reason
    )
    bootstrap.apply(plan)
    assert not old_libs.exists()
    assert _blender(node).stdout.startswith("hello from the bundled library")

    # The package loses its libraries: the launcher becomes a link again.
    shutil.rmtree(node.package_dir("blender") / "_system_libs")
    plan = bootstrap.plan(node.env, settings, survey(node.env, settings))
    bootstrap.apply(plan)
    assert (node.shared / "blender").is_symlink()
    assert list((node.shared / ".node-agent/libs").iterdir()) == []


def test_parse_ldd() -> None:
    output = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibXi.so.6 => not found\n"
        "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n"
        "\tlibGL.so.1 => not found\n"
        "\tlibXi.so.6 => not found\n"
    )
    assert parse_ldd(output) == (True, ("libXi.so.6", "libGL.so.1"))
    assert parse_ldd("\tnot a dynamic executable\n") == (False, ())
    assert parse_ldd("\tstatically linked\n") == (False, ())
    traced = output + "\t/lib64/ld-linux-x86-64.so.2 (0x00007f4d)\n"
    assert interpreter_of(traced) == "/lib64/ld-linux-x86-64.so.2"
    assert interpreter_of(output) is None
    assert found_by_loader(traced) == {"libm.so.6"}


@needs_cc
def test_when_the_loader_cannot_be_asked_only_what_ldd_misses_is_used(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _node(tmp_path / "root", built.with_libs)
    executable = str(node.package_dir("blender") / "blender")
    monkeypatch.setattr(libraries, "interpreter_of", lambda output: None)
    answer = libraries.report(executable)
    assert answer is not None and answer.lacking == () and answer.exposed == (GREETING,)


@needs_cc
def test_admin_pool_installs_what_the_loader_misses(
    built: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(LIBRARY_PACKAGES, GREETING, "libnodeagentgreet1")
    node = _node(tmp_path / "root", built.without_libs)
    # A stand-in apt-get first on PATH: the machine's own is never run.
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    calls = stand_in / "calls.txt"
    write_executable(stand_in / "apt-get", f'#!/bin/sh\necho "$*" >> {calls}\n')
    node.environ["PATH"] = f"{stand_in}:{node.environ['PATH']}"
    env_file = node.env_file(tmp_path / "node.env")

    assert main(["bootstrap", "--env-file", str(env_file), "--install-system-packages"]) == 0
    assert (
        calls.read_text()
        .splitlines()[-1]
        .endswith("install -y --no-install-recommends libnodeagentgreet1")
    )
    err = capsys.readouterr().err
    assert "node-agent: INFO: install_system_packages: installed libnodeagentgreet1" in err
