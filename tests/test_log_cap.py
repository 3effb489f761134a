"""The real agent under a worker that writes far past the output cap: stdout.txt and
stderr.txt stay bounded on disk, the newest output is whole and gapless across the
compressed backups, the agent's own lines are intact, and supervision goes on."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path
from typing import Callable

import psutil

from node_agent.runtime.logpump import CHUNK
from tests.agent import Agent, worker_node
from tests.helpers import AGENT_LINE, wait_until
from tests.nodes import write_executable

CAP = 256 * 1024
BACKUPS = 3
OUT_LINES = 160_000  # 100 bytes each: 16 MB, over 60 caps
ERR_LINES = 40_000

# The first start writes numbered lines once told to (the start-up report done),
# then fails; the second start writes nothing and runs on.
FLOOD = r"""
import os, signal, sys, time
from pathlib import Path

work = Path(os.environ["FAKE_WORKER_DIR"])
with open(work / "runs", "a") as runs:
    runs.write(f"{os.getpid()}\n")
if len((work / "runs").read_text().split()) > 1:
    while True:
        signal.pause()
while not (work / "go").exists():
    time.sleep(0.01)

def flood(fd, mark, count):
    block = []
    for number in range(count):
        block.append(b"%s%08d " % (mark, number) + b"x" * 89 + b"\n")
        if len(block) == 500 or number == count - 1:
            view = memoryview(b"".join(block))
            while view:
                view = view[os.write(fd, view):]
            block = []

flood(1, b"O", OUT_LINES)
flood(2, b"E", ERR_LINES)
sys.exit(3)
"""


def _numbered(mark: bytes, first: int, last: int) -> bytes:
    return b"".join(b"%s%08d " % (mark, n) + b"x" * 89 + b"\n" for n in range(first, last))


def _kept(path: Path) -> bytes:
    older = [Path(f"{path}.{n}.gz") for n in range(BACKUPS, 0, -1)]
    return b"".join(gzip.decompress(p.read_bytes()) for p in older if p.exists()) + (
        path.read_bytes()
    )


def _only_the_worker(agent: Agent) -> bool:
    # The start-up report is a child of the agent too, holding its stdout and stderr:
    # the cut waits for it, so the flood starts once it is gone.
    return len(psutil.Process(agent.process.pid).children()) == 1


def test_a_worker_writing_far_past_the_cap_fills_no_disk_and_loses_nothing_new(
    run_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    node = worker_node(tmp_path / "node")
    script = tmp_path / "flood.py"
    script.write_text(
        FLOOD.replace("OUT_LINES", str(OUT_LINES)).replace("ERR_LINES", str(ERR_LINES))
    )
    launcher = f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n'
    write_executable(node.package_dir("flamenco-worker") / "flamenco-worker", launcher)
    agent = run_agent("", node=node, args=("--log-max-size", "256K", "--log-backups", str(BACKUPS)))
    agent.wait_running()
    wait_until(lambda: b"health report (node-agent doctor)" in _kept(agent.stderr_path))
    wait_until(lambda: _only_the_worker(agent), what="the start-up report to end")
    (agent.work / "go").touch()
    agent.wait_running(starts=2)  # the flood ended in a failure, and it restarted
    last_out = _numbered(b"O", OUT_LINES - 1, OUT_LINES)
    wait_until(lambda: agent.stdout_path.read_bytes().endswith(last_out), what="the last line")

    folder = agent.stdout_path.parent
    for path in (agent.stdout_path, agent.stderr_path):
        assert path.stat().st_size <= CAP + 2 * CHUNK, path
        backups = sorted(folder.glob(f"{path.name}.*.gz"))
        assert [p.name for p in backups] == [f"{path.name}.{n}.gz" for n in (1, 2, 3)]
        assert all(p.stat().st_size <= CAP for p in backups)
    assert not list(folder.glob(".*.part"))

    # stdout.txt: a gapless suffix of everything the worker wrote, of at least the
    # backups' worth (each cut leaves up to a quarter of the cap in the file).
    kept = _kept(agent.stdout_path)
    assert _numbered(b"O", 0, OUT_LINES).endswith(kept)
    assert len(kept) >= BACKUPS * CAP * 3 // 4

    # stderr.txt: the worker's lines gapless, the agent's own lines whole between them.
    lines = _kept(agent.stderr_path).splitlines(keepends=True)
    worker = [line for line in lines if re.match(rb"E\d{8} ", line)]
    assert b"".join(worker) == _numbered(b"E", ERR_LINES - len(worker), ERR_LINES)
    assert len(worker) * 100 >= BACKUPS * CAP * 3 // 4 - 4096
    others = [line for line in lines if line not in worker]
    assert others and all(AGENT_LINE.match(line) for line in others), others[:5]
    assert any(b"exit code 3; restart after backoff" in line for line in others), others
    assert agent.state()["phase"] == "running"
