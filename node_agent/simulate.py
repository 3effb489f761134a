"""A simulated Batch node: a node root laid out in a directory as Batch lays it out,
the application package zips extracted into their folders, and the pool's start
task run through ``/bin/sh -c`` in a clean environment.

Used by ``packaging/simulate-node`` (the README's main job) and the end-to-end
tests; never shipped in the package, never used on a real node.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

from node_agent import proctree
from node_agent.env import BatchEnv

# What Batch puts on a start task's PATH before the shared and working dirs (seed).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def rebase(environ: Mapping[str, str], old_root: str, new_root: str) -> dict[str, str]:
    """The variables with every path under ``old_root`` moved under ``new_root``, in
    ``:``-separated lists such as ``PATH`` too."""

    def move(part: str) -> str:
        inside = part == old_root or part.startswith(old_root + "/")
        return new_root + part[len(old_root) :] if inside else part

    return {k: ":".join(move(part) for part in v.split(":")) for k, v in environ.items()}


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


def zip_package(folder: Path, out: Path) -> Path:
    """A package zip of a folder's files, at the zip's top level, Unix modes kept
    (for the stand-in blender and ffmpeg packages)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix())
                info.create_system = 3  # Unix: external_attr holds the mode
                info.external_attr = (0o100000 | (path.stat().st_mode & 0o777)) << 16
                archive.writestr(info, path.read_bytes())
    return out


def start_task_command(pool_json: Path) -> tuple[str, dict[str, str]]:
    """The start task's command line and environment settings from a pool template."""
    start = json.loads(pool_json.read_text(encoding="utf-8"))["startTask"]
    settings = {item["name"]: item["value"] for item in start.get("environmentSettings", [])}
    return str(start["commandLine"]), settings


@dataclass
class SimulatedNode:
    """One node: ``root`` on disk, the fixture's variables rebased there."""

    root: Path
    fixture: Mapping[str, str]  # a Batch environment (e.g. tests/fixtures/az_env/*.env)
    packages: Mapping[str, Path]  # package id -> zip
    pool_json: Path
    overrides: Mapping[str, str]  # e.g. the stand-in Manager's URL, NODE_AGENT_IMDS_URL
    process: Optional[subprocess.Popen[bytes]] = None

    @property
    def environ(self) -> dict[str, str]:
        """The start task's whole environment: the fixture's Batch variables rebased
        onto the root, Batch's HOME/PWD/PATH/USER, the pool's settings, overrides."""
        batch = {k: v for k, v in self.fixture.items() if k.startswith("AZ_BATCH_")}
        env = rebase(batch, self.fixture["AZ_BATCH_NODE_ROOT_DIR"], str(self.root))
        wd, shared = env["AZ_BATCH_TASK_WORKING_DIR"], env["AZ_BATCH_NODE_SHARED_DIR"]
        env.update(
            HOME=wd, PWD=wd, USER=env["AZ_BATCH_TASK_USER"], PATH=f"{SYSTEM_PATH}:{shared}:{wd}"
        )
        env.update(start_task_command(self.pool_json)[1])
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

    def start(self) -> subprocess.Popen[bytes]:
        """Run the start task as Batch does: the command line split into arguments,
        not through a shell (the pool's own ``/bin/sh -c`` does the expanding), a
        clean environment, output appended to startup/stdout.txt and stderr.txt, a
        session of its own. It gets SIGTERM when the thread calling this dies (even
        by SIGKILL), so a simulated node never outlives its simulator."""
        command, _ = start_task_command(self.pool_json)
        env = self.environ
        outputs: list[IO[bytes]] = [
            open(self.startup / name, "ab")  # noqa: SIM115
            for name in ("stdout.txt", "stderr.txt")
        ]
        try:
            self.process = subprocess.Popen(
                shlex.split(command),
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

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM to the start task, as when the node is deleted; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)
