"""Supervision through faults (issue 12): a bad or planted state file, with real
processes and real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import psutil

from node_agent.errors import EXIT_NOT_RUNNING, EXIT_UNHEALTHY
from tests.agent import Agent, alive, worker_node
from tests.nodes import TestNode

Start = Callable[..., Agent]


def node_agent(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a node-agent command on ``node`` (its environment only)."""
    return subprocess.run(
        [sys.executable, "-m", "node_agent", *args],
        capture_output=True,
        text=True,
        env={**node.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def _plant_state(node: TestNode, document: object) -> Path:
    path = node.shared / ".node-agent" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_a_state_file_of_the_wrong_shape_is_reported_and_run_carries_on(
    tmp_path: Path, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    _plant_state(node, {"schema": 1, "agent_pid": "abc", "started_at": "yesterday"})
    status = node_agent(node, "status")
    assert status.returncode == EXIT_NOT_RUNNING and "Traceback" not in status.stderr
    assert "does not hold a valid state: " in status.stdout
    assert 'agent_pid: expected a process id, found "abc"' in status.stdout
    assert "has not run on this node" not in status.stdout
    as_json = json.loads(node_agent(node, "status", "--json").stdout)
    assert "started_at: expected a number of seconds" in as_json["state_problem"]
    doctor = node_agent(node, "doctor")
    assert doctor.returncode == EXIT_UNHEALTHY and "Traceback" not in doctor.stderr
    assert "WARNING  agent" in doctor.stdout and "does not hold a valid state" in doctor.stdout

    agent = run_agent("count,wait", node=node)
    state = agent.wait_running()
    assert state["agent_pid"] == agent.process.pid
    assert b"WARNING: ignoring the state file" in agent.stderr
    assert b"Traceback" not in agent.stderr


def test_a_planted_state_never_gets_an_unrelated_process_killed(
    tmp_path: Path, run_agent: Start
) -> None:
    node = worker_node(tmp_path / "node")
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        _plant_state(
            node,
            {
                "schema": 1,
                "agent_pid": bystander.pid,
                "agent_create_time": psutil.Process(bystander.pid).create_time(),
                "phase": "running",
                "started_at": 1.0,
                "flavour": "v3",
                "worker_name": "w",
                "worker_executable": "/x",
                "worker_dir": "/w",
                "config_path": "/w/c",
                # Right pid and start time of a process that is not a worker.
                "worker_pid": bystander.pid,
                "worker_create_time": psutil.Process(bystander.pid).create_time(),
                "worker_token": "0123456789abcdef0123456789abcdef",
            },
        )
        agent = run_agent("count,wait", node=node, NODE_AGENT_STOP_GRACE="1")
        agent.wait_running()
        assert alive(bystander.pid)
        assert b"left by a previous agent" not in agent.stderr
    finally:
        bystander.kill()
        bystander.wait()
