"""Ship it: the package builder (packaging/build): what goes into the
flamenco-worker package, what it refuses, and the packaged agent running isolated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from workerpkg import copy_agent

from tests.helpers import AZ_ENV
from tests.packages import BUILD, PYTHONS, REPO, STANDIN_WORKER, WITH_BYTECODE
from tests.packages import build_package as _build
from tests.releases import Spec, write_tar


def _command(worker: Path, out: Path) -> list[str]:
    return [sys.executable, str(BUILD), "--worker", str(worker), "--out", str(out)]


def test_same_inputs_build_the_same_bytes(package: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    result = _build(STANDIN_WORKER, again, *WITH_BYTECODE)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == package.read_bytes()
    # The folder's name has no version: the output says how to choose one.
    assert "version: not in the release's name; choose the Flamenco release's own" in (
        result.stdout
    )


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


def test_the_zip_holds_every_module_but_the_operators(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        shipped = {n[len(LIB) :] for n in archive.namelist() if n.startswith(LIB)}
    modules = {p.relative_to(NODE_AGENT).as_posix() for p in NODE_AGENT.rglob("*.py")}
    operator = {m for m in modules if m.split("/")[0] in ("fleet", "sim")}
    assert operator and "runtime/supervise.py" in shipped
    assert {s for s in shipped if s.endswith(".py")} == modules - operator


def test_a_new_module_ships_unless_it_is_the_operators(tmp_path: Path) -> None:
    source = tmp_path / "node_agent"
    shutil.copytree(NODE_AGENT, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "runtime" / "new_part.py").write_text('"""A new node-side module."""\n')
    (source / "fleet" / "report.py").write_text('"""An operator-side module."""\n')
    (source / "runtime" / "sim").mkdir()  # a name like an operator folder, deeper down
    (source / "runtime" / "sim" / "__init__.py").write_text("")
    copy_agent(source, tmp_path / "lib")
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


def test_builder_lists_every_problem_of_its_input_before_installing_anything(
    tmp_path: Path,
) -> None:
    worker = tmp_path / "release"
    worker.mkdir()
    (worker / "flamenco-worker").write_text("#!/bin/sh\n")  # not executable
    (worker / "tools").symlink_to("/usr/bin")
    (worker / "node-agent").write_text("")
    (worker / os.fsdecode(b"\xffname")).write_text("")
    out = tmp_path / "out" / "sub" / "w.zip"
    # Were anything installed, pip would fail on this index, and say so.
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    result = subprocess.run(
        [
            *_command(worker, out),
            "--config",
            str(tmp_path / "missing.yaml"),
            "--python",
            "true",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "pip" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("build: ERROR: ") for line in lines)
    for expected in (
        f"{tmp_path / 'missing.yaml'}: no such file or folder",
        "--python true: not a CPython 3.9 or newer that runs",
        f"--worker {worker}: tools -> /usr/bin: points outside the archive",
        f"--worker {worker}: its flamenco-worker is not executable; chmod +x it",
        f"--worker {worker}: has a node-agent of its own; the package builder puts its own",
        f"--worker {worker}: the file name b'\\xffname' is not UTF-8",
    ):
        assert any(expected in line for line in lines), expected
    assert len(lines) == 6, lines
    assert not (tmp_path / "out").exists()


def test_builder_refuses_a_release_without_the_worker(tmp_path: Path) -> None:
    release = write_tar(
        tmp_path / "flamenco-3.6-linux-amd64.tar.gz",
        {"flamenco-3.6-linux-amd64/flamenco-manager": (b"#!/bin/sh\n", 0o755)},
    )
    result = _build(release, tmp_path / "w.zip")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert (
        f"--worker {release} (below its top folder flamenco-3.6-linux-amd64/): no "
        "flamenco-worker executable at its top"
    ) in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [release.name]


def test_builder_takes_the_release_as_flamenco_ships_it(tmp_path: Path) -> None:
    # flamenco-VERSION-linux-amd64.tar.gz, one top folder: as Flamenco's Makefile
    # (release-package-linux) makes it.
    top = "flamenco-3.6-linux-amd64"
    members: dict[str, Spec] = {
        f"{top}/{p.relative_to(STANDIN_WORKER).as_posix()}": (p.read_bytes(), p.stat().st_mode)
        for p in sorted(STANDIN_WORKER.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    members[f"{top}/flamenco-manager"] = (b"the Manager", 0o755)
    members[f"{top}/tools/ffmpeg-linux-amd64"] = (b"a bundled ffmpeg", 0o755)
    members[f"{top}/README.md"] = b"kept"
    release = write_tar(tmp_path / f"{top}.tar.gz", members)
    out = tmp_path / "out.zip"
    result = _build(release, out)
    assert result.returncode == 0, result.stderr
    assert "left out flamenco-manager: the Manager does not run on worker nodes" in result.stdout
    assert "left out tools/ffmpeg-linux-amd64: the worker would run it" in result.stdout
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert archive.read("flamenco-worker") == (STANDIN_WORKER / "flamenco-worker").read_bytes()
    assert "flamenco-manager" not in names and "tools/ffmpeg-linux-amd64" not in names
    assert {"flamenco-worker", "README.md", "node-agent"} <= names
    # The version (it decides v2 or v3), read from the release's name, and how to upload.
    assert 'upload it as application package "flamenco-worker", version "3.6"' in result.stdout
    assert (
        f"az batch application package create -g RESOURCE_GROUP -n BATCH_ACCOUNT "
        f"--application-name flamenco-worker --version-name 3.6 --package-file {out}"
    ) in result.stdout
    assert "--application-name flamenco-worker --default-version 3.6" in result.stdout
    kept = _build(release, tmp_path / "k.zip", "--keep-bundled-ffmpeg", "--version", "3.6.1")
    assert kept.returncode == 0 and "left out tools/" not in kept.stdout
    assert 'version "3.6.1"' in kept.stdout
    with zipfile.ZipFile(tmp_path / "k.zip") as archive:
        assert "tools/ffmpeg-linux-amd64" in archive.namelist()
