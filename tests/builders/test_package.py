"""Ship it: the package builder (packaging/build): what goes into the
flamenco-worker package, what it refuses, and the packaged agent running isolated."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AZ_ENV
from tests.packages import BUILD, PYTHONS, REPO, WITH_BYTECODE
from tests.packages import build_package as _build


def test_same_inputs_build_the_same_bytes(package: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    assert _build(REPO / "packaging" / "standin-worker", again, *WITH_BYTECODE).returncode == 0
    assert again.read_bytes() == package.read_bytes()


def test_package_layout(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        names = [i.filename for i in archive.infolist()]  # in archive order
    assert names == sorted(names)
    assert "node-agent" in infos and "flamenco-worker" in infos  # at the top level
    assert not any(n.startswith("node_agent/") or "/node_agent/sim/standins/" in n for n in names)
    # The operator's pool generator and farm commands stay on the operator's side.
    assert not any("poolgen" in n or "poolcheck" in n or "make-pool" in n for n in names)
    assert "_node_agent/lib/node_agent/cli.py" in names
    assert not any(n.startswith("_node_agent/lib/node_agent/fleet") for n in names)
    assert not any("/azure/" in n for n in names)
    assert any(
        n.startswith("_node_agent/vendor-x86_64/psutil/") and n.endswith(".abi3.so") for n in names
    )
    assert not any(".cpython-" in n and n.endswith(".so") for n in names)
    for name in ("node-agent", "flamenco-worker"):
        assert (infos[name].external_attr >> 16) & 0o777 == 0o755
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos.values())
    assert all(((i.external_attr >> 16) & 0o170000) == 0o100000 for i in infos.values())


NODE_AGENT = REPO / "node_agent"
LIB = "_node_agent/lib/node_agent/"


def _builder() -> Any:
    """packaging/build, loaded as a module (it is a command: no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("package_builder", str(BUILD))
    module = types.ModuleType(loader.name)
    module.__file__ = str(BUILD)
    loader.exec_module(module)
    return module


def test_the_zip_holds_every_module_but_the_operators(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        shipped = {n[len(LIB) :] for n in archive.namelist() if n.startswith(LIB)}
    modules = {p.relative_to(NODE_AGENT).as_posix() for p in NODE_AGENT.rglob("*.py")}
    operator = {m for m in modules if m.split("/")[0] in ("fleet", "sim")}
    assert operator and "runtime/supervise.py" in shipped
    assert {s for s in shipped if s.endswith(".py")} == modules - operator


def test_a_new_module_ships_unless_it_is_the_operators(tmp_path: Path) -> None:
    builder = _builder()
    source = tmp_path / "node_agent"
    shutil.copytree(NODE_AGENT, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "runtime" / "new_part.py").write_text('"""A new node-side module."""\n')
    (source / "fleet" / "report.py").write_text('"""An operator-side module."""\n')
    (source / "runtime" / "sim").mkdir()  # a name like an operator folder, deeper down
    (source / "runtime" / "sim" / "__init__.py").write_text("")
    builder.copy_agent(source, tmp_path / "lib")
    copied = {p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*")}
    assert {"runtime/new_part.py", "runtime/sim/__init__.py", "cli.py"} <= copied
    assert not any(c.split("/")[0] in ("fleet", "sim") for c in copied)
    assert not any("__pycache__" in c for c in copied)


@pytest.mark.parametrize("python", PYTHONS)
def test_packaged_agent_runs_isolated(package: Path, tmp_path: Path, python: str) -> None:
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    # -I: no site-packages, no user site, no PYTHON* variables: only what is vendored.
    result = subprocess.run(
        [
            python,
            "-I",
            str(tmp_path / "node-agent"),
            "env",
            "--json",
            "--env-file",
            str(AZ_ENV / "seed.env"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["packages"][2]["version"] == "2.2.1"
    # Nothing compiled at start-up, whatever times extraction gave the files (the
    # package folder is read-only to the start task: nothing compiled is kept).
    for source in tmp_path.rglob("*.py"):
        os.utime(source, (1e9, 1e9))
    verbose = subprocess.run(
        [python, "-I", "-B", "-v", str(tmp_path / "node-agent"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert f"matches {tmp_path}/_node_agent/lib/node_agent/cli.py" in verbose.stderr
    assert f"code object from {tmp_path}" not in verbose.stderr
    imports = subprocess.run(
        [
            python,
            "-I",
            "-c",
            "import sys; sys.path[:0] = sys.argv[1:]; "
            "import node_agent.agent, requests, yaml, psutil, tenacity; print(psutil.__file__)",
            str(tmp_path / "_node_agent/lib"),
            str(tmp_path / "_node_agent/vendor-x86_64"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.startswith(str(tmp_path / "_node_agent/vendor-x86_64"))
    # The operator's farm commands are not on the node: it says how to get them.
    fleet = subprocess.run(
        [python, "-I", str(tmp_path / "node-agent"), "fleet", "status", "--pool", "p"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert fleet.returncode == 3, fleet.stderr
    assert f"{python} -m pip install '<your node-agent checkout>[fleet]'" in fleet.stderr
    assert "Traceback" not in fleet.stderr


@pytest.mark.parametrize(
    "fault, message",
    [
        ("missing", "no flamenco-worker executable at its top level"),
        ("not-executable", "not executable; chmod +x it"),
        ("symlink", "a symlink; a zip cannot hold one"),
        ("reserved", "the package builder puts its own node-agent there"),
    ],
)
def test_builder_refuses_a_bad_worker_release(tmp_path: Path, fault: str, message: str) -> None:
    worker = tmp_path / "release"
    worker.mkdir()
    exe = worker / "flamenco-worker"
    if fault != "missing":
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o644 if fault == "not-executable" else 0o755)
    if fault == "symlink":
        (worker / "tools").symlink_to("/usr/bin")
    if fault == "reserved":
        (worker / "node-agent").write_text("")
    result = _build(worker, tmp_path / "out.zip")
    assert result.returncode == 3
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.zip").exists()


def test_a_file_name_that_is_not_utf8_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    worker = tmp_path / "release"
    worker.mkdir()
    (worker / "flamenco-worker").write_text("#!/bin/sh\n")
    (worker / "flamenco-worker").chmod(0o755)
    (worker / os.fsdecode(b"\xffname")).write_text("")
    result = _build(worker, tmp_path / "out" / "sub" / "w.zip")
    assert result.returncode == 3
    assert (
        f"build: ERROR: --worker {worker}: the file name b'\\xffname' is not UTF-8"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_builder_refuses_a_python_it_cannot_compile_for(tmp_path: Path) -> None:
    result = _build(REPO / "packaging" / "standin-worker", tmp_path / "p.zip", "--python", "true")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "--python true: not a CPython 3.9 or newer that runs" in result.stderr
    assert not (tmp_path / "p.zip").exists()


def test_builder_leaves_out_the_manager_and_the_bundled_ffmpeg(tmp_path: Path) -> None:
    release = tmp_path / "flamenco-3.6-linux-amd64"
    shutil.copytree(REPO / "packaging" / "standin-worker", release)
    (release / "flamenco-manager").write_text("the Manager")
    (release / "tools").mkdir()
    (release / "tools" / "ffmpeg-linux-amd64").write_text("a bundled ffmpeg")
    (release / "tools" / "README.txt").write_text("kept")
    result = _build(release, tmp_path / "out.zip")
    assert result.returncode == 0, result.stderr
    assert "left out flamenco-manager: the Manager does not run on worker nodes" in result.stdout
    assert "left out tools/ffmpeg-linux-amd64: the worker would run it" in result.stdout
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = set(archive.namelist())
    assert "flamenco-manager" not in names and "tools/ffmpeg-linux-amd64" not in names
    assert {"flamenco-worker", "tools/README.txt"} <= names
    kept = _build(release, tmp_path / "k.zip", "--keep-bundled-ffmpeg")
    assert kept.returncode == 0 and "left out tools/" not in kept.stdout
    with zipfile.ZipFile(tmp_path / "k.zip") as archive:
        assert "tools/ffmpeg-linux-amd64" in archive.namelist()
