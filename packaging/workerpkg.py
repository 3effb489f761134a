"""The flamenco-worker package: the worker release plus node-agent, what
``packaging/build`` makes (its docstring says what goes in and what stays out).

Every problem of the input is collected before anything is installed: the
release (read as ``build-tool`` reads one, its links materialised, its one top
folder removed), its worker executable, names the package reserves for itself,
``--config``, each ``--python`` and ``--out``. Then node-agent is copied, its
dependencies installed per architecture with pip (whose temporary files stay
inside the build's own staging folder, removed on any exit), its bytecode
compiled by each interpreter, and the zip laid out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from archives import ArchiveError, Entry, Kind, Tree
from links import materialise, top_folder
from packer import Packer, PackingFailed
from release import inspect, read_release
from toolpkg import Planned, input_problems, pack_sources, version_from_name, workspace, write
from zipwriter import Member, unwritable

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "packaging" / "requirements.lock"
LAUNCHER = REPO / "packaging" / "launcher.py"
RESERVED = ("node-agent", "_node_agent", "node-agent.yaml")
# Compiled for one CPython version only: removed, the pure-Python code beside them
# runs instead (abi3 modules, such as psutil's, work on every 3.x and stay).
VERSION_SPECIFIC = re.compile(r".*\.cpython-\d+[^/]*\.so$")
# What of node_agent/ never goes on a node: the operator's farm commands and the
# simulators with their stand-in services. Everything else is the node's (the import
# rules in tests/test_architecture.py keep the node's modules from needing these).
OPERATOR_SIDE = ("fleet", "sim")
# Files of the official worker release a worker node must not get: the Manager, and
# (unless kept) the release's own ffmpeg, which the worker runs before anything on
# PATH, so the operator's ffmpeg package would never be used.
BUNDLED_FFMPEG = re.compile(r"tools/ffmpeg[^/]*")
# The python3 versions the node may have (what Batch's images ship).
NODE_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
# Run by each interpreter (with a fixed hash seed: set constants are stored in hash
# order): compile the tree (argv[1]) to unchecked-hash bytecode,
# file names in it as they are in the zip (argv[2]), a file it cannot compile (for
# another version) left as source; prints the interpreter's version.
COMPILE = """
import compileall, py_compile, sys
compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=2, workers=1,
    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print("%d.%d" % sys.version_info[:2])
"""


def left_out(name: str, keep_ffmpeg: bool) -> Optional[str]:
    """Why a file of the worker release stays out of the package (None: it goes in)."""
    if name == "flamenco-manager":
        return "the Manager does not run on worker nodes"
    if BUNDLED_FFMPEG.fullmatch(name) and not keep_ffmpeg:
        return (
            "the worker would run it instead of the ffmpeg package on PATH "
            "(--keep-bundled-ffmpeg keeps it)"
        )
    return None


class BuildError(Exception):
    """Bad input: the message says what and how to fix it."""


def worker_files(
    worker: Path, tree: Tree, keep_ffmpeg: bool
) -> tuple[dict[str, Planned], dict[str, str], str, list[str]]:
    """The release's files for the zip (name -> planned), what of it stays out
    (name -> why), its top folder, and every problem with it."""
    top = top_folder(tree)
    result = materialise(tree, top)
    problems = [f"--worker {worker}: {problem}" for problem in result.problems]
    files: dict[str, Planned] = {}
    omitted: dict[str, str] = {}
    for name, real in result.files.items():
        why = left_out(name, keep_ffmpeg)
        if why is not None:
            omitted[name] = why
            continue
        entry = tree.entries[real]
        files[name] = Planned(entry, bool(entry.mode & 0o111))
    where = f"{worker} (below its top folder {top}/)" if top else str(worker)
    exe = files.get("flamenco-worker")
    if exe is None:
        problems.append(
            f"--worker {where}: no flamenco-worker executable at its top; pass the "
            "Flamenco release (flamenco-3.x-linux-amd64.tar.gz) or the folder it unpacks to"
        )
    elif not exe.executable:
        problems.append(
            f"--worker {where}: its flamenco-worker is not executable; chmod +x it (the "
            "zip keeps the bit)"
        )
    for name in RESERVED:
        if name in files or any(n.startswith(name + "/") for n in files):
            problems.append(
                f"--worker {where}: has a {name} of its own; the package builder puts its "
                f"own {name} there: remove it from the worker release"
            )
    problems += [
        f"--worker {worker}: the file name {shown} is not UTF-8, and a zip holds UTF-8 "
        "names: rename it"
        for shown in unwritable(sorted(files))
    ]
    return files, omitted, top, problems


def copy_agent(source: Path, lib: Path) -> None:
    """The agent in ``source`` into ``lib``: all of it but the ``OPERATOR_SIDE`` folders."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        operator = OPERATOR_SIDE if Path(folder) == source else ()
        return {n for n in names if n == "__pycache__" or n.endswith(".pyc") or n in operator}

    shutil.copytree(source, lib, ignore=ignore)


def vendor(target: Path, arch: str, temp: Path) -> None:
    """Install the pinned dependencies for manylinux ``arch`` into ``target``; pip
    keeps its temporary files in ``temp``, so that none outlives the build."""
    temp.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--target",
            str(target),
            "--only-binary=:all:",
            "--platform",
            f"manylinux2014_{arch}",
            "--python-version",
            "3.9",
            "--implementation",
            "cp",
            "-r",
            str(LOCK),
        ],
        check=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    for path in sorted(target.rglob("*"), reverse=True):
        relative = path.relative_to(target).as_posix()
        if (
            VERSION_SPECIFIC.match(relative)
            or relative.startswith("bin")
            or path.name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
            or path.name == "__pycache__"
        ):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _version(python: str) -> Optional[str]:
    """The CPython version (``3.12``) of an interpreter that runs, 3.9 or newer."""
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    name, *version = (result.stdout.split() if result.returncode == 0 else []) or ["", "0", "0"]
    if name != "cpython" or (int(version[0]), int(version[1])) < (3, 9):
        return None
    return ".".join(version)


def interpreters(named: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Version -> interpreter: each named one, then the one running this and
    python3.X on PATH for the others; and a problem for each named one that is
    no CPython 3.9+."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for python in named:
        version = _version(python)
        if version is None:
            problems.append(f"--python {python}: not a CPython 3.9 or newer that runs")
        else:
            found.setdefault(version, python)
    for python in (sys.executable, *(f"python{v}" for v in NODE_PYTHONS)):
        if shutil.which(python):
            version = _version(python)
            if version is not None:
                found.setdefault(version, python)
    ordered = sorted(found.items(), key=lambda item: tuple(map(int, item[0].split("."))))
    return dict(ordered), problems


def compile_bytecode(staging: Path, pythons: Mapping[str, str]) -> None:
    """Bytecode of everything under ``_node_agent`` for each interpreter."""
    tree = staging / "_node_agent"
    for python in pythons.values():
        subprocess.run(
            [python, "-s", "-c", COMPILE, str(tree), "_node_agent"],
            check=True,
            capture_output=True,
            env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")},
        )


def agent_files(staging: Path, config: Optional[Path]) -> dict[str, Planned]:
    """Archive name -> planned file, for the agent, its dependencies and bytecode."""
    files: dict[str, Planned] = {}
    for path in sorted(staging.rglob("*")):
        if path.is_file() and not path.is_symlink():
            name = path.relative_to(staging).as_posix()
            files[name] = Planned(Entry(Kind.FILE, path), os.access(path, os.X_OK))
    files["node-agent"] = Planned(Entry(Kind.FILE, LAUNCHER), True)
    if config is not None:
        files["node-agent.yaml"] = Planned(Entry(Kind.FILE, config), False)
    return files


@dataclass(frozen=True)
class Options:
    """What the operator asked for (``packaging/build``'s options)."""

    worker: Path
    out: Path
    config: Optional[Path] = None
    arches: tuple[str, ...] = ("x86_64",)
    keep_ffmpeg: bool = False
    pythons: tuple[str, ...] = ()
    version: Optional[str] = None


@dataclass(frozen=True)
class WorkerBuilt:
    """What the builder made, for the operator."""

    files: int
    omitted: dict[str, str]  # what of the release stays out, and why
    pythons: dict[str, str]  # the versions bytecode was compiled for, by interpreter
    version: Optional[str]


def build(options: Options, say: Callable[[str], None]) -> WorkerBuilt:
    """Check everything, then build the package; ``say`` is told each long step.
    ``BuildError`` naming every problem of the input, before anything is
    installed; ``subprocess.CalledProcessError`` when pip or a compiler fails;
    ``OSError`` naming the path."""
    out, worker = options.out, options.worker
    inputs = [worker] + ([options.config] if options.config else [])
    problems = input_problems(inputs, out, out.parent)
    if options.config is not None and options.config.exists() and not options.config.is_file():
        problems.append(f"--config {options.config}: not a file")
    pythons, python_problems = interpreters(options.pythons)
    problems += python_problems
    download = None
    if worker.exists():
        try:
            download = inspect(worker)
        except ArchiveError as exc:
            problems.append(f"--worker {exc}")
    with contextlib.ExitStack() as stack:
        staged = None
        try:
            staged = stack.enter_context(workspace(out.parent, out, ".build-"))
        except OSError as error:
            problems.append(f"--out {error.filename}: {error.strerror}")
        if download is None or staged is None:  # nothing more can be checked
            raise BuildError("\n".join(problems))
        packer = stack.enter_context(Packer(staged / "packed"))
        try:
            tree = read_release(download, packer)
        except ArchiveError as exc:
            problems += [f"--worker {problem}" for problem in str(exc).splitlines()]
            raise BuildError("\n".join(problems)) from None
        files, omitted, top, worker_problems = worker_files(worker, tree, options.keep_ffmpeg)
        problems += worker_problems
        if problems:
            raise BuildError("\n".join(problems))
        stage = staged / "stage"
        copy_agent(REPO / "node_agent", stage / "_node_agent" / "lib" / "node_agent")
        for arch in options.arches:
            say(f"installing node-agent's dependencies for {arch} (pip)")
            vendor(stage / "_node_agent" / f"vendor-{arch}", arch, staged / "pip-tmp")
        say(f"compiling the agent for python {', '.join(pythons)}")
        compile_bytecode(stage, pythons)
        files.update(agent_files(stage, options.config))
        try:
            numbers = pack_sources(files, packer, None)
            records = packer.finish()
        except PackingFailed as failed:
            raise OSError(failed.error.errno, failed.error.strerror, str(out.parent)) from None
        members = {name: Member(records[numbers[name]], p.executable) for name, p in files.items()}
        write(out, members, None)
    version = options.version or version_from_name("flamenco", worker.name, top)
    return WorkerBuilt(len(files), omitted, pythons, version)
