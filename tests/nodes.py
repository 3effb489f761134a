"""Build Batch node layouts on disk (real, or pyfakefs's) for tests and the
simulated node: a fixture's variables rebased onto a root, package folders filled
with small stand-in executables."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from node_agent.node.env import BatchEnv
from node_agent.sim.node import batch_base, extract_like_batch, rebase
from tests.helpers import fixture_env

# The stand-in tools print the first line their real counterparts print.
TOOL_SCRIPTS = {
    "blender": "#!/bin/sh\necho 'Blender 4.2.3 (stand-in)'\n",
    "ffmpeg": "#!/bin/sh\necho 'ffmpeg version 7.0.2 (stand-in)'\n",
    "ffprobe": "#!/bin/sh\necho 'ffprobe version 7.0.2 (stand-in)'\n",
    "flamenco-worker": "#!/bin/sh\necho 'flamenco-worker (stand-in)'\n",
}
CLOSED_LOOPBACK = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once
PACKAGE_FILES = {
    "blender": ("blender",),
    "ffmpeg": ("ffmpeg", "ffprobe"),
    "flamenco-worker": ("flamenco-worker",),
}


@dataclass(frozen=True)
class TestNode:
    __test__ = False  # not a pytest test class

    """A node laid out under ``root``, and its environment."""

    root: Path
    environ: dict[str, str]

    @property
    def env(self) -> BatchEnv:
        """The parsed environment."""
        return BatchEnv.from_environ(self.environ)

    @property
    def shared(self) -> Path:
        """The node's shared dir."""
        return Path(self.environ["AZ_BATCH_NODE_SHARED_DIR"])

    def package_dir(self, package_id: str) -> Path:
        """The folder of a package, as the environment names it."""
        package = self.env.find_package(package_id)
        assert package is not None, package_id
        return Path(package.path)

    def env_file(self, path: Path) -> Path:
        """Write the environment to a KEY=VALUE file and return its path."""
        path.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.environ.items())))
        return path


def make_node(
    root: Path,
    fixture: str = "seed",
    manager_url: Optional[str] = "http://127.0.0.1:8080/",
    nested: tuple[str, ...] = (),
    mode: int = 0o755,
    *,
    zips: Optional[Mapping[str, Path]] = None,
) -> TestNode:
    """Lay out a node: Batch's dirs and every package of the fixture, each with its
    stand-in executables (inside one wrapping folder for the packages in ``nested``,
    with file mode ``mode``), or extracted from its zip in ``zips`` as Batch does."""
    original = fixture_env(fixture)
    environ = rebase(original, batch_base(original), str(root))
    if manager_url is not None:
        environ["FLAMENCO_MANAGER_URL"] = manager_url
    # Never the real Metadata Service's address: a closed loopback port by default.
    environ["NODE_AGENT_IMDS_URL"] = CLOSED_LOOPBACK
    node = TestNode(root=root, environ=environ)
    for name in ("AZ_BATCH_NODE_SHARED_DIR", "AZ_BATCH_TASK_WORKING_DIR"):
        Path(environ[name]).mkdir(parents=True, exist_ok=True)
    for package in node.env.packages:
        Path(package.path).mkdir(parents=True, exist_ok=True)
    # Executables only in the folder node-agent picks for each id: picking another
    # leaves it without them, which bootstrap reports.
    for package_id, names in PACKAGE_FILES.items():
        package = node.env.find_package(package_id)
        if package is None:
            continue
        folder = Path(package.path)
        if zips and package_id in zips:
            extract_like_batch(zips[package_id], folder)
            continue
        if package_id in nested:
            folder = folder / f"{package_id}-{package.version}-linux-x64"
            folder.mkdir()
        for name in names:
            write_executable(folder / name, TOOL_SCRIPTS[name], mode)
        if package_id == "blender":
            # Blender finds its data next to its binary: the link must not move it.
            (folder / "4.2" / "datafiles").mkdir(parents=True, exist_ok=True)
    return node


def write_executable(path: Path, text: str, mode: int = 0o755) -> None:
    """Write a script and set its mode."""
    path.write_text(text)
    os.chmod(path, mode)


def is_executable_mode(path: Path) -> bool:
    """Whether the file's mode has the owner's execute bit."""
    return bool(path.stat().st_mode & stat.S_IXUSR)
