"""How supervision ends, or goes on, with the real agent: the Manager wait's
deadline, a Manager URL that answers but is no Manager, and faults nobody expected
(a bug), which are retried in a wait before a start and end the agent in one line
elsewhere."""

from __future__ import annotations

import signal
from typing import Callable

from node_agent.common.errors import EXIT_FAILURE, EXIT_OK
from node_agent.sim.standins.server import Response, StandinServer
from tests.agent import Agent
from tests.helpers import AGENT_LINE, wait_until
from tests.nodes import CLOSED_LOOPBACK

Start = Callable[..., Agent]


def test_past_the_manager_wait_deadline_the_agent_gives_up(run_agent: Start) -> None:
    agent = run_agent(
        "count,wait",
        FLAMENCO_MANAGER_URL=CLOSED_LOOPBACK,
        NODE_AGENT_MANAGER_WAIT_CAP="0.2",
        NODE_AGENT_MANAGER_WAIT_DEADLINE="1",
    )
    assert agent.wait() == EXIT_FAILURE
    state = agent.state()
    assert state["phase"] == "stopped" and state["gave_up"] is True
    assert state["stop_reason"].startswith("gave up waiting for the Manager after 1 s")
    assert b"ERROR: gave up waiting for the Manager after 1 s (manager_wait_deadline)" in (
        agent.stderr
    )
    assert agent.runs() == []


def test_a_manager_url_answering_json_that_is_no_object_is_waited_on(run_agent: Start) -> None:
    portal = StandinServer(lambda request: Response(200, ["not", "a", "Manager"])).start()
    try:
        agent = run_agent("count,wait", FLAMENCO_MANAGER_URL=portal.url)
        wait_until(lambda: b"not a Flamenco Manager?; next attempt in" in agent.stderr)
        assert agent.state()["phase"] == "waiting-for-manager"
        agent.signal(signal.SIGTERM)
        assert agent.wait() == EXIT_OK
    finally:
        portal.stop()
    assert b": HTTP 200 but not a JSON object: not a Flamenco Manager?" in agent.stderr
    assert b"Traceback" not in agent.stderr and agent.runs() == []


def test_a_bug_in_a_wait_before_the_start_is_one_more_failed_attempt(run_agent: Start) -> None:
    # The probe of the Manager replaced by None: every attempt fails with a TypeError.
    agent = run_agent("count,wait", constants={"node_agent.manager.wait.probe": None})
    wait_until(lambda: agent.stderr.count(b": unexpected TypeError at manager/wait.py:") >= 2)
    assert agent.process.poll() is None and agent.state()["phase"] == "waiting-for-manager"
    assert b"Traceback" not in agent.stderr


def test_a_bug_elsewhere_ends_the_agent_in_one_line(run_agent: Start) -> None:
    # Starting the worker replaced by None: a TypeError where none is expected.
    agent = run_agent("count,wait", constants={"node_agent.runtime.supervise.launch": None})
    assert agent.wait() == EXIT_FAILURE
    [line] = agent.stderr.decode().splitlines()[-1:]
    stamp = AGENT_LINE.match(line.encode())
    assert stamp is not None and stamp.group(2) == b"ERROR", line
    assert line[stamp.end() :].startswith("node-agent failed: TypeError at runtime/supervise.py:")
    assert line.endswith(": 'NoneType' object is not callable")
    assert "Traceback" not in agent.stderr.decode()
    state = agent.state()
    assert state["phase"] == "stopped"
    assert state["stop_reason"].startswith("node-agent failed: TypeError at runtime/supervise.py:")
