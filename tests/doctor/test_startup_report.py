"""The start-up health report runs beside the worker (issue 15): the worker does not
wait for it, a stop does not wait for it, its tools' exits are its own, and nothing
of it is left behind."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Callable

import psutil

from node_agent.common.errors import EXIT_OK
from tests.agent import Agent, worker_node
from tests.helpers import AGENT_LINE, wait_until
from tests.nodes import TestNode, write_executable

Start = Callable[..., Agent]
REPORTED = b"node-agent: INFO: health report (node-agent doctor): "


def _blender(node: TestNode, script: str) -> Path:
    """Replace the node's stand-in blender by ``script`` (a shell script body)."""
    path = node.package_dir("blender") / "blender"
    write_executable(path, "#!/bin/sh\n" + script)
    return path


def _blocking_blender(node: TestNode, release: Path) -> Path:
    """A blender whose --version answers only once ``release`` exists."""
    return _blender(
        node,
        f'while [ ! -e "{release}" ]; do sleep 0.02; done\necho "Blender 4.2.3 (stand-in)"\n',
    )


def _running(node: TestNode) -> list[psutil.Process]:
    """The live ``blender --version`` processes of this node (run through its link
    in the shared dir)."""
    command = [str(node.shared / "blender"), "--version"]
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[-2:] == command and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def test_the_worker_starts_while_the_report_runs_and_the_report_still_lands(
    run_agent: Start, tmp_path: Path
) -> None:
    node = worker_node(tmp_path / "node")
    release = tmp_path / "release"
    _blocking_blender(node, release)
    agent = run_agent("count,wait", node=node)
    agent.wait_running()
    wait_until(lambda: _running(node), what="blender --version")
    assert REPORTED not in agent.stderr  # the worker did not wait for it
    release.touch()
    wait_until(lambda: REPORTED in agent.stderr, what="the report")
    report = agent.stderr[agent.stderr.index(REPORTED) :]
    assert REPORTED + b"all checks passed\n" in agent.stderr
    # One block: every line of it together, each with the agent's prefix and one time.
    lines = report.splitlines()[1:15]
    matches = [AGENT_LINE.match(line) for line in lines]
    assert all(
        m and m.group(2) == b"INFO" and line[m.end() : m.end() + 2] == b"  "
        for m, line in zip(matches, lines)
    ), lines
    assert len({m.group(1) for m in matches if m}) == 1, lines
    assert b"node-agent: INFO:   OK       blender --version           Blender 4.2.3" in report


def test_a_tools_exit_is_its_own_while_the_supervisor_reaps(
    run_agent: Start, tmp_path: Path
) -> None:
    # Each tool fails, and exits while a process it started keeps its output open a
    # moment longer; meanwhile the worker makes orphans that the agent, their
    # subreaper, reaps every few milliseconds. Run in a thread of the agent, a tool
    # would be the agent's child: the supervisor would reap it while subprocess
    # still reads its output, and subprocess would then take its exit for 0.
    node = worker_node(tmp_path / "node")
    linger = "(sleep 0.3) &\n"
    _blender(node, f'echo "blender: cannot open libXi.so.6" >&2\n{linger}exit 3\n')
    for tool in ("ffmpeg", "ffprobe"):
        script = f"#!/bin/sh\necho broken >&2\n{linger}exit 4\n"
        write_executable(node.package_dir("ffmpeg") / tool, script)
    agent = run_agent("count,orphans", node=node)
    agent.wait_running()
    wait_until(lambda: REPORTED in agent.stderr, what="the report")
    err = agent.stderr.decode()
    assert "health report (node-agent doctor): 3 check(s) failed" in err
    assert "FAILED   blender --version           exit 3: blender: cannot open libXi.so.6" in err
    assert "FAILED   ffmpeg -version             exit 4: broken" in err
    assert "FAILED   ffprobe -version            exit 4: broken" in err
    assert agent.process.poll() is None and agent.state()["phase"] == "running"


def test_a_stop_during_the_report_is_honoured_at_once_and_leaves_nothing(
    run_agent: Start, tmp_path: Path
) -> None:
    node = worker_node(tmp_path / "node")
    _blocking_blender(node, tmp_path / "never")
    # The report would wait an hour for blender: the stop must not.
    hour = {
        "node_agent.doctor.startup.CHECK_LIMIT": 3600,
        "node_agent.doctor.tool_checks.TOOL_TIMEOUT": 3600,
    }
    agent = run_agent("count,wait", node=node, constants=hour)
    agent.wait_running()
    wait_until(lambda: _running(node), what="blender --version")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert REPORTED not in agent.stderr
    assert agent.state()["stop_reason"] == "received SIGTERM"
    wait_until(lambda: not _running(node), what="blender --version gone")


def test_a_tool_that_hangs_past_the_reports_limit_is_not_left_behind(
    run_agent: Start, tmp_path: Path
) -> None:
    node = worker_node(tmp_path / "node")
    _blocking_blender(node, tmp_path / "never")
    agent = run_agent(
        "count,wait", node=node, constants={"node_agent.doctor.startup.CHECK_LIMIT": 1}
    )
    wait_until(lambda: REPORTED in agent.stderr, what="the report")
    # The name column is as wide as the longest row's name, and which rows there are
    # depends on which other checks beat the 1 s limit (a check too late is one short
    # row): match the row, not its padding.
    assert re.search(rb"\n[^\n]*FAILED +tools +no result within 1 s\n", agent.stderr)
    wait_until(lambda: not _running(node), what="blender --version gone")
    assert agent.process.poll() is None and agent.state()["phase"] == "running"
