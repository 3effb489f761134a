"""A restart storm: ``python -m bench.storm [--seconds S]``.

A worker that exits at once, forever: with the restart exit code, with exit 0
under ``restart_on_clean_exit``, and (the baseline, measured the same way in the
same run) with a failure code, which the agent has always paced. Each runs under
the real agent with the default restart settings for ``S`` seconds (10) after the
first start; the table gives the starts in that window, the CPU the agent and
everything it started used (percent of one core), how fast stderr.txt grew, and
whether the state file flags a crash loop. Not a test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from node_agent.sim.standins.manager import FakeManager
from tests.helpers import wait_until
from tests.nodes import make_node, write_executable

STARTED = b"worker started"
SCENARIOS = (
    ("restart exit code (exit 75)", "exit 75", {}),
    ("clean exit, restart_on_clean_exit", "exit 0", {"NODE_AGENT_RESTART_ON_CLEAN_EXIT": "true"}),
    ("baseline: failure (exit 3)", "exit 3", {}),
)


def _cpu(process: psutil.Process) -> float:
    """CPU seconds of the agent and of every child it reaped."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def storm(
    root: Path, manager_url: str, exit_line: str, extra: dict[str, str], seconds: float
) -> dict[str, Any]:
    """Starts, CPU share and stderr bytes/s over ``seconds`` after the first start,
    and the state file's crash loop flag at the end."""
    node = make_node(root, "newer_spot", manager_url=manager_url)
    write_executable(
        node.package_dir("flamenco-worker") / "flamenco-worker", f"#!/bin/sh\n{exit_line}\n"
    )
    home = node.shared / ".node-agent" / "worker" / "home"
    home.mkdir(parents=True)
    (home / "flamenco-worker-credentials.yaml").write_text("worker_id: bench\n")
    env = {**node.environ, "PATH": node.environ["PATH"] + ":" + os.environ["PATH"], **extra}
    stderr_path = root / "stderr.txt"
    with open(root / "stdout.txt", "wb") as out, open(stderr_path, "wb") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "node_agent", "run"], env=env, stdout=out, stderr=err
        )
        try:
            wait_until(lambda: STARTED in stderr_path.read_bytes(), 60, "the first start")
            me = psutil.Process(agent.pid)
            starts0, size0, cpu0 = (
                stderr_path.read_bytes().count(STARTED),
                stderr_path.stat().st_size,
                _cpu(me),
            )
            time.sleep(seconds)  # the measurement window itself
            starts1, size1, cpu1 = (
                stderr_path.read_bytes().count(STARTED),
                stderr_path.stat().st_size,
                _cpu(me),
            )
            state = json.loads((node.shared / ".node-agent" / "state.json").read_text())
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
    return {
        "starts": starts1 - starts0 + 1,
        "cpu_pct": (cpu1 - cpu0) / seconds * 100,
        "stderr_bps": (size1 - size0) / seconds,
        "crash_loop": bool(state.get("crash_loop")),
        "phase": state.get("phase"),
    }


def main() -> None:
    """Run each scenario and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    manager = FakeManager().start()
    try:
        with tempfile.TemporaryDirectory() as name:
            results = [
                (what, storm(Path(name, str(i)), manager.url, line, extra, args.seconds))
                for i, (what, line, extra) in enumerate(SCENARIOS)
            ]
    finally:
        manager.stop()
    base = results[-1][1]
    print(f"{'scenario':<36} {'starts':>7} {'x base':>7} {'CPU %':>7} {'stderr B/s':>11}  state")
    for what, r in results:
        ratio = r["starts"] / max(1, base["starts"])
        flag = "crash loop" if r["crash_loop"] else "no crash loop"
        print(
            f"{what:<36} {r['starts']:>7} {ratio:>7.1f} {r['cpu_pct']:>7.1f} "
            f"{r['stderr_bps']:>11.0f}  {r['phase']}, {flag}"
        )


if __name__ == "__main__":
    main()
