"""Run the real agent (``python -m node_agent run``) on a real temporary node with
the stand-in worker, its stdout and stderr going to files like a start task's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

import psutil

from node_agent.runtime import proctree
from node_agent.sim.standins.imds import FakeImds
from node_agent.sim.standins.manager import FakeManager
from tests.helpers import wait_until
from tests.nodes import TestNode, make_node, write_executable

STANDIN = Path(__file__).parent / "workers" / "standin.py"
FAST = {
    "NODE_AGENT_STOP_GRACE": "3",
    "NODE_AGENT_BACKOFF_INITIAL": "0.05",
    "NODE_AGENT_BACKOFF_CAP": "0.4",
}


@dataclass
class Agent:
    """A running agent and where its output goes."""

    process: subprocess.Popen[bytes]
    node: TestNode
    stdout_path: Path
    stderr_path: Path
    work: Path
    manager: FakeManager
    imds: FakeImds
    _files: tuple[IO[bytes], IO[bytes]]
    view: str = ""  # prefix through which the agent's files are seen (/proc/PID/root)

    @property
    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    @property
    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes()

    @property
    def state_path(self) -> Path:
        return Path(self.view + str(self.node.shared / ".node-agent" / "state.json"))

    def state(self) -> dict[str, Any]:
        """The state file's document ({} before the first write)."""
        try:
            document: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return document

    def runs(self) -> list[int]:
        """The pids of every worker start so far (the stand-in's ``count`` step)."""
        path = self.work / "runs"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def wait_running(self, starts: int = 1) -> dict[str, Any]:
        """Wait until the ``starts``-th worker is running."""
        return wait_until(
            lambda: (
                len(self.runs()) >= starts
                and self.state().get("phase") == "running"
                and self.state().get("worker_pid") == self.runs()[starts - 1]
                and self.state()
            ),
            what=f"worker start #{starts}",
        )

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The agent's exit code, once it has exited."""
        code = self.process.wait(timeout)
        for handle in self._files:
            handle.close()
        return code

    def stop(self) -> None:
        """Make sure nothing of this agent, its worker tree, nor its stand-ins outlives
        the test: SIGTERM (the agent stops its tree), SIGKILL if it will not go, then
        any process still carrying the worker's token."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        token = self.state().get("worker_token")
        if token:
            proctree.send(proctree.tree_members(token), signal.SIGKILL)
        for handle in self._files:
            handle.close()
        self.manager.stop()
        self.imds.stop()


def worker_node(root: Path, fixture: str = "newer_spot") -> TestNode:
    """A node whose flamenco-worker package holds the stand-in worker."""
    node = make_node(root, fixture)
    launcher = f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n'
    write_executable(node.package_dir("flamenco-worker") / "flamenco-worker", launcher)
    return node


def start_agent(
    tmp_path: Path,
    steps: str,
    *,
    node: Optional[TestNode] = None,
    args: tuple[str, ...] = (),
    manager: Optional[FakeManager] = None,
    imds: Optional[FakeImds] = None,
    wrapper: tuple[str, ...] = (),
    constants: Optional[Mapping[str, float]] = None,
    **environ: str,
) -> Agent:
    """Start ``node-agent run`` with the stand-in worker doing ``steps``, a stand-in
    Manager and a stand-in Metadata Service (never the real one's address);
    ``wrapper`` goes before the command (``unshare -m``: a mount namespace);
    ``constants`` shortens module constants (``tests.patched_agent``)."""
    node = node or worker_node(tmp_path / "node")
    manager = manager or FakeManager().start()
    imds = imds or FakeImds().start()
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **node.environ,
        "PATH": node.environ["PATH"] + os.pathsep + os.environ["PATH"],
        **FAST,
        "FLAMENCO_MANAGER_URL": manager.url,
        "NODE_AGENT_IMDS_URL": imds.url,
        "FAKE_WORKER": steps,
        "FAKE_WORKER_DIR": str(work),
        **environ,
    }
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    out, err = open(out_path, "ab"), open(err_path, "ab")  # noqa: SIM115 (closed by Agent)
    command = [sys.executable, "-m", "node_agent"]
    if constants:
        command = [sys.executable, "-m", "tests.patched_agent", json.dumps(constants)]
    process = subprocess.Popen(
        [*wrapper, *command, "run", *args],
        stdout=out,
        stderr=err,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return Agent(process, node, out_path, err_path, work, manager, imds, (out, err))


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
