"""A simulated Batch node: a node root laid out in a directory as Batch lays it out,
the application package zips extracted into their folders, the pool's shared
storage mounted where the pool says, and the pool's start task run through
``/bin/sh -c`` in a clean environment.

Used by ``packaging/simulate-node`` (the README's main job) and the end-to-end
tests; never shipped in the package, never used on a real node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

import psutil

from node_agent.node.env import BatchEnv
from node_agent.node.packages import PREFIX, flatten
from node_agent.runtime import proctree

# What Batch puts on a start task's PATH before the shared and working dirs (seed).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
BUILD_TOOL = PACKAGING / "build-tool"
STANDINS = PACKAGING / "standin-packages"
# The upload time Batch puts after a package's id and version in its folder's name
# (the same for every simulated package: the version tells them apart).
PACKAGE_STAMP = "2024-09-30-10-00"
# Seconds a powered-off node's processes get between SIGTERM and SIGKILL.
POWER_OFF_GRACE = 30.0
# The stand-in tools' releases, named as their projects name them.
STANDIN_RELEASES = {
    "blender": "blender-4.2.3-linux-x64.tar.xz",
    "ffmpeg": "ffmpeg-7.0.2-amd64-static.tar.xz",
}


def rebase(environ: Mapping[str, str], old_root: str, new_root: str) -> dict[str, str]:
    """The variables with every path under ``old_root`` moved under ``new_root``, in
    ``:``-separated lists such as ``PATH`` too."""

    def move(part: str) -> str:
        inside = part == old_root or part.startswith(old_root + "/")
        return new_root + part[len(old_root) :] if inside else part

    return {k: ":".join(move(part) for part in v.split(":")) for k, v in environ.items()}


def batch_base(environ: Mapping[str, str]) -> str:
    """The dir holding the node root and the shared and startup dirs (the root itself
    where they are inside it, as usual): what to move to lay a node out elsewhere."""
    dirs = ("AZ_BATCH_NODE_ROOT_DIR", "AZ_BATCH_NODE_SHARED_DIR", "AZ_BATCH_NODE_STARTUP_DIR")
    return os.path.commonpath([environ[name] for name in dirs if name in environ])


def extract_like_batch(archive: Path, folder: Path) -> None:
    """Extract a package zip into its folder keeping Unix modes (as ``unzip`` does;
    Python's ``extractall`` would drop the executable bits)."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as package:
        for info in package.infolist():
            target = folder / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(package.read(info))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)


def release_archive(folder: Path, out: Path) -> Path:
    """A release as its project publishes it: ``folder`` inside one top folder
    named like the archive (``blender-4.2.3-linux-x64/`` in
    ``blender-4.2.3-linux-x64.tar.xz``), symlinks kept as symlinks."""
    with tarfile.open(out, "w:xz") as archive:
        archive.add(folder, arcname=out.name[: -len(".tar.xz")])
    return out


def run_builder(argv: list[str], work: Path) -> None:
    """Run a package builder whose every file, temporary ones included (``TMPDIR``),
    lies in ``work``. Should this be interrupted (an exception, SIGTERM turned into
    one), the builder's whole process group (pip too) is killed before it goes on:
    nothing of it outlives the interruption, and removing ``work`` removes the rest.
    ``CalledProcessError`` when it fails."""
    process = subprocess.Popen(
        argv, env={**os.environ, "TMPDIR": str(work)}, start_new_session=True
    )
    try:
        code = process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, argv)


def tool_packages(work: Path) -> dict[str, Path]:
    """The blender and ffmpeg packages, built in ``work`` as an operator builds them
    (``packaging/build-tool``) from release archives of the stand-in tools."""
    packages = {}
    for package_id, release in STANDIN_RELEASES.items():
        archive = release_archive(STANDINS / package_id, work / release)
        out = work / f"{package_id}.zip"
        run_builder(
            [sys.executable, str(BUILD_TOOL), package_id, str(archive), "--out", str(out)], work
        )
        packages[package_id] = out
    return packages


def start_task_command(pool_json: Path) -> tuple[str, dict[str, str]]:
    """The start task's command line and environment settings from a pool template."""
    start = json.loads(pool_json.read_text(encoding="utf-8"))["startTask"]
    settings = {item["name"]: item["value"] for item in start.get("environmentSettings", [])}
    return str(start["commandLine"]), settings


def pool_mounts(pool_json: Path) -> list[str]:
    """The ``relativeMountPath`` of every file system the pool mounts."""
    pool = json.loads(pool_json.read_text(encoding="utf-8"))
    return [
        str(config["relativeMountPath"])
        for entry in pool.get("mountConfiguration", [])
        for config in entry.values()
    ]


def namespace_wrapper(binds: list[tuple[Path, Path]]) -> list[str]:
    """The command prefix that runs a command in a private mount namespace with
    each ``(source, mount point)`` bind-mounted, as Batch mounts the pool's storage
    before the start task. Root needs only ``unshare -m``; anyone else gets a user
    namespace for the mounting (``-r``) and then runs the command as themselves
    again (``--map-user``), as a non-admin start task runs."""
    paths = [str(p) for pair in binds for p in pair]
    steps = [f'mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"' for i in range(len(binds))]
    run = 'exec "$@"'
    flags = ["-m"]
    if os.geteuid() != 0:
        flags = ["-r", "-m"]
        run = f'exec unshare -U --map-user={os.getuid()} --map-group={os.getgid()} "$@"'
    script = " && ".join([*steps, f"shift {len(paths)}", run])
    return ["unshare", *flags, "--propagation", "private", "sh", "-c", script, "sh", *paths]


@dataclass
class SimulatedNode:
    """One node: ``root`` on disk, the fixture's variables rebased there."""

    root: Path
    fixture: Mapping[str, str]  # a Batch environment (e.g. tests/fixtures/az_env/*.env)
    packages: Mapping[str, Path]  # package id -> zip
    pool_json: Path
    overrides: Mapping[str, str]  # e.g. the stand-in Manager's URL, NODE_AGENT_IMDS_URL
    process: Optional[subprocess.Popen[bytes]] = None
    # The stand-in file server: <storage>/<relativeMountPath> is what the node mounts
    # (default: a "file-server" dir beside the root). Kept across start task runs.
    storage: Optional[Path] = None
    storage_note: str = ""  # how the pool's storage is simulated, for the operator
    # The packages as Batch deployed them (id -> version, whether the pool referenced
    # the default version): their variables replace the fixture's. None: the
    # fixture's packages.
    deployed: Optional[Mapping[str, tuple[str, bool]]] = None
    _wrapper: Optional[list[str]] = None  # None: not laid out; []: no mounts made

    def package_variables(self, root: str) -> dict[str, str]:
        """The ``AZ_BATCH_APP_PACKAGE_*`` variables of the deployed packages, as Batch
        sets them: ``<id>_<version>`` always, ``<id>`` too for a package the pool
        references without a version."""
        variables = {}
        for package_id, (version, by_default) in (self.deployed or {}).items():
            folder = f"{root}/applications/{package_id}{version}{PACKAGE_STAMP}"
            variables[f"{PREFIX}{flatten(package_id)}_{flatten(version)}"] = folder
            if by_default:
                variables[f"{PREFIX}{flatten(package_id)}"] = folder
        return variables

    @property
    def environ(self) -> dict[str, str]:
        """The start task's whole environment: the fixture's Batch variables rebased
        onto the root, Batch's HOME/PWD/PATH/USER, the pool's settings, overrides."""
        batch = {k: v for k, v in self.fixture.items() if k.startswith("AZ_BATCH_")}
        if self.deployed is not None:
            batch = {k: v for k, v in batch.items() if not k.startswith(PREFIX)}
        env = rebase(batch, batch_base(self.fixture), str(self.root))
        env.update(self.package_variables(env["AZ_BATCH_NODE_ROOT_DIR"]))
        wd, shared = env["AZ_BATCH_TASK_WORKING_DIR"], env["AZ_BATCH_NODE_SHARED_DIR"]
        env.update(HOME=wd, PWD=wd, PATH=f"{SYSTEM_PATH}:{shared}:{wd}")
        if "AZ_BATCH_TASK_USER" in env:
            env["USER"] = env["AZ_BATCH_TASK_USER"]
        env.update(start_task_command(self.pool_json)[1])
        if self._wrapper == [] and pool_mounts(self.pool_json):
            env["NODE_AGENT_STORAGE_MOUNTS"] = ""  # nothing mounted: the agent would wait
        env.update(self.overrides)
        return env

    @property
    def startup(self) -> Path:
        """The start task's dir: stdout.txt and stderr.txt are here."""
        return Path(self.environ["AZ_BATCH_NODE_STARTUP_DIR"])

    def lay_out(self) -> None:
        """Create the node's dirs and extract every package into the folder the
        environment names (``applications/<id><version><timestamp>``)."""
        env = self.environ
        for name in (
            "AZ_BATCH_NODE_SHARED_DIR",
            "AZ_BATCH_TASK_WORKING_DIR",
            "AZ_BATCH_NODE_MOUNTS_DIR",
            "AZ_BATCH_CERTIFICATES_DIR",
        ):
            if name in env:
                Path(env[name]).mkdir(parents=True, exist_ok=True)
        model = BatchEnv.from_environ(env)
        for package_id, archive in self.packages.items():
            package = model.find_package(package_id)
            if package is None:
                raise ValueError(f"the fixture has no {package_id!r} package variable")
            if not Path(package.path).exists():
                extract_like_batch(archive, Path(package.path))
        self._prepare_storage(env)

    def _prepare_storage(self, env: Mapping[str, str]) -> None:
        """Make each mount point and its stand-in share; find out whether a private
        mount namespace can be had here, and say what is simulated."""
        names = pool_mounts(self.pool_json)
        self._wrapper = []
        if not names:
            self.storage_note = "the pool mounts no shared storage"
            return
        server = self.storage or self.root.parent / "file-server"
        # Where the agent looks (storage.mounts_dir): the node root, not always self.root.
        base = Path(
            env.get("AZ_BATCH_NODE_MOUNTS_DIR") or Path(env["AZ_BATCH_NODE_ROOT_DIR"], "fsmounts")
        )
        binds = [(server / name, base / name) for name in names]
        for pair in binds:
            for path in pair:
                path.mkdir(parents=True, exist_ok=True)
        wrapper = namespace_wrapper(binds)
        refusal = "the unshare command is not installed"
        if shutil.which("unshare"):
            probe = subprocess.run([*wrapper, "true"], capture_output=True, text=True, check=False)
            if probe.returncode == 0:
                self._wrapper = wrapper
                self.storage_note = "; ".join(
                    f"{share} bind-mounted at {point} (a private mount namespace)"
                    for share, point in binds
                )
                return
            refusal = probe.stderr.strip() or f"unshare exited {probe.returncode}"
        self.storage_note = (
            f"NOT simulated: {refusal}. The shared storage is not mounted and the agent's "
            "storage check is off (NODE_AGENT_STORAGE_MOUNTS emptied)"
        )

    def start(self) -> subprocess.Popen[bytes]:
        """Run the start task as Batch does: the command line split into arguments,
        not through a shell (the pool's own ``/bin/sh -c`` does the expanding), a
        clean environment, output appended to startup/stdout.txt and stderr.txt, a
        session of its own; in a mount namespace with the pool's storage mounted
        when one can be had (``lay_out`` found out). It gets SIGTERM when the thread
        calling this dies (even by SIGKILL), so a simulated node never outlives its
        simulator."""
        command, _ = start_task_command(self.pool_json)
        env = self.environ
        outputs: list[IO[bytes]] = [
            open(self.startup / name, "ab")  # noqa: SIM115
            for name in ("stdout.txt", "stderr.txt")
        ]
        try:
            self.process = subprocess.Popen(
                [*(self._wrapper or []), *shlex.split(command)],
                env=env,
                cwd=env["AZ_BATCH_TASK_WORKING_DIR"],
                stdin=subprocess.DEVNULL,
                stdout=outputs[0],
                stderr=outputs[1],
                start_new_session=True,
                # Safe with threads: the child only calls prctl, resolved before the fork.
                preexec_fn=proctree.parent_death_signal(signal.SIGTERM),  # noqa: PLW1509
            )
        finally:
            for output in outputs:
                output.close()
        return self.process

    def processes(self) -> list[psutil.Process]:
        """Every process of this node: the start task, its descendants, and any
        process that left them (a worker whose agent was killed) but carries the
        node's id in its environment, as everything the start task starts does."""
        found: dict[int, psutil.Process] = {}
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                start = psutil.Process(self.process.pid)
                found.update({p.pid: p for p in [start, *start.children(recursive=True)]})
        node_id = self.overrides.get("AZ_BATCH_NODE_ID")
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if (
                    process.pid not in found
                    and process.environ().get("AZ_BATCH_NODE_ID") == node_id
                ):
                    found[process.pid] = process
        return list(found.values())

    def power_off(self, grace: float = POWER_OFF_GRACE) -> None:
        """Every process of the node stopped as a shutdown stops them: SIGTERM to all
        at once, SIGKILL to what is left after ``grace`` seconds (a reboot, a
        reimage, a node removed)."""
        processes = self.processes()
        start = self.process.pid if self.process is not None else None
        others = [p for p in processes if p.pid != start]
        proctree.send(processes, signal.SIGTERM)
        deadline = time.monotonic() + grace
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
        proctree.send(alive, signal.SIGKILL)
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM to the start task, as when the node is deleted; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)
