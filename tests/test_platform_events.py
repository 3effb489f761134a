"""The real agent through a platform event's whole life, with the stand-in
Metadata Service and Manager: events that do not happen, a slow enabling first
request, a misbehaving service, an operator's reboot, and a long notice that lets
the current task finish (disk-wiping events: ``test_node_world``)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

from node_agent.common.errors import EXIT_OK
from node_agent.runtime.state import utc_seconds
from node_agent.sim.standins.imds import EVENTS_PATH, FakeImds, not_before
from node_agent.sim.standins.manager import FakeManager
from tests.agent import Agent
from tests.helpers import wait_until
from tests.test_node_world import _watching
from tests.test_one_identity import NAME, STANDIN, _credentials, _node
from tests.test_supervise import _status

Start = Callable[..., Agent]
Services = tuple[FakeManager, FakeImds]
MGT = "/api/v3/worker-mgt/workers"


def _polls(imds: FakeImds) -> int:
    return len(imds.server.received("GET", EVENTS_PATH))


def _stop(agent: Agent) -> None:
    """An operator's stop ends supervision; the platform was never told to go ahead
    by it."""
    acknowledged = agent.imds.acknowledged()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert agent.imds.acknowledged() == acknowledged


def test_a_preempt_called_off_before_it_starts_restarts_the_same_worker(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent, worker = _watching(tmp_path, run_agent, services, "count,term-after:go,wait")
    credentials = (agent.node.shared / ".node-agent/worker/home").glob("*.yaml")
    before = {p: p.read_text() for p in credentials}
    assert before
    imds.schedule("Preempt", "PRE-1", not_before=not_before(30))
    wait_until((agent.work / "terminated").exists, what="SIGTERM for the Preempt")
    imds.cancel("PRE-1")  # called off while the worker is still stopping
    polls = _polls(imds)
    wait_until(lambda: _polls(imds) > polls + 1)
    (agent.work / "go").touch()  # now it exits
    second = agent.wait_running(2)
    assert b"the Preempt event PRE-1 was cancelled: the worker works again" in agent.stderr
    assert second["last_exit_reason"] == "stopped: Preempt event PRE-1"
    assert second["consecutive_failures"] == 0 and second["platform_event"] is None
    # Same identity: not forgotten, credentials untouched; the platform was not told.
    assert manager.server.received("DELETE", MGT) == [] and not manager.worker(worker).deleted
    assert {p: p.read_text() for p in before} == before
    assert imds.acknowledged() == []
    _stop(agent)


def test_a_reboot_that_turns_into_a_freeze_restarts_the_worker(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent, _ = _watching(tmp_path, run_agent, services, "count,term-stamp,wait")
    imds.schedule("Reboot", "RB-1", not_before=not_before(10))  # within the margin: stop now
    state = wait_until(
        lambda: agent.state().get("phase") == "waiting-for-platform" and agent.state(),
        what="the agent waiting for the platform",
    )
    assert state["platform_event"] == "Reboot event RB-1" and state["worker_pid"] is None
    shown = _status(agent).stdout
    assert "phase waiting-for-platform" in shown
    assert "platform    the worker stops or stopped for the Reboot event RB-1" in shown
    assert (agent.work / "exited").exists()
    wait_until(lambda: imds.acknowledged() == ["RB-1"])  # due: the platform may go ahead
    imds.change("RB-1", EventType="Freeze")
    agent.wait_running(2)
    assert b"the Reboot event RB-1 turned into a Freeze: the worker works again" in agent.stderr
    assert manager.server.received("DELETE", MGT) == []  # a Reboot keeps the disk
    assert agent.process.poll() is None
    _stop(agent)


def test_the_first_events_request_may_take_long(tmp_path: Path, run_agent: Start) -> None:
    # Scaled: the real service may take 60 s (up to 120) to answer the enabling first
    # request; here 2 s, with the agent's other requests' timeout shortened from 5 s
    # to 0.5 s and the first one's from 120 s to 4 s.
    imds = FakeImds(first_delay=2.0).start()
    agent = run_agent(
        "count,term-stamp,wait",
        imds=imds,
        constants={
            "node_agent.imds.client.TIMEOUT": 0.5,
            "node_agent.imds.watcher.FIRST_TIMEOUT": 4.0,
        },
    )
    agent.wait_running()
    wait_until(lambda: b"Scheduled Events answered (" in agent.stderr)
    assert imds.waited == 1  # one request, answered: not timed out and retried
    assert b"timeout" not in agent.stderr
    imds.schedule("Preempt", "PRE-1")
    wait_until((agent.work / "exited").exists, what="SIGTERM for the Preempt")
    _stop(agent)


def test_sigterm_within_two_polls_of_a_preempt_after_imds_failures(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    _, imds = services
    agent, _ = _watching(tmp_path, run_agent, services, "count,term-stamp,wait")
    imds.fail("500")
    polls = _polls(imds)
    wait_until(lambda: _polls(imds) >= polls + 2, what="failed polls")
    imds.schedule("Preempt", "PRE-1")  # unseen while the service fails
    healed = _polls(imds)
    imds.fail(None)
    wait_until((agent.work / "exited").exists, 30, "SIGTERM for the Preempt")
    exited = float((agent.work / "exited").read_text())
    after = imds.server.received("GET", EVENTS_PATH)[healed:]
    assert after and after[0].at <= exited  # order: a poll saw it, then the SIGTERM
    assert len([r for r in after if r.at <= exited]) <= 2
    assert agent.stderr.count(b"HTTP 500") == 1  # logged once
    _stop(agent)


def _v3_agent(tmp_path: Path, run_agent: Start, services: Services) -> Agent:
    """The agent with the stand-in v3 worker, once it signed on awake."""
    manager, imds = services
    node = _node(tmp_path / "node")
    agent = run_agent("", node=node, manager=manager, imds=imds, **STANDIN)
    wait_until(
        lambda: (
            _credentials(node).exists()
            and [w.status for w in manager.named(NAME)] == ["awake"]
            and imds.server.received("GET", EVENTS_PATH)
        ),
        what="the v3 worker awake",
    )
    return agent


def test_an_operators_reboot_is_approved_once_the_worker_went_offline(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent = _v3_agent(tmp_path, run_agent, services)
    imds.schedule("Reboot", "USR-1", not_before=not_before(900), source="User")
    wait_until(lambda: imds.acknowledged() == ["USR-1"], 30)
    state = agent.state()
    assert state["last_exit_code"] == 0  # it went offline: no SIGTERM
    assert state["last_exit_reason"] == "stopped: Reboot event USR-1, by an operator"
    assert b"signal received" not in agent.stdout and b"signing off" in agent.stdout
    [setstatus] = manager.server.received("POST", MGT)
    assert setstatus.json() == {"status": "offline", "is_lazy": True}
    [ack] = imds.server.received("POST", EVENTS_PATH)
    assert ack.at >= utc_seconds(state["last_exit_at"])
    _stop(agent)


def test_a_long_notice_lets_the_task_finish_and_a_cancel_wakes_the_worker(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent = _v3_agent(tmp_path, run_agent, services)
    first = agent.state()["worker_pid"]
    # Longer than the 1 to 2 s the agent takes to act on an event it polls for.
    sleep = {"name": "sleep", "parameters": {"duration_in_seconds": 4}}
    task = manager.add_task("frame 1", commands=[sleep])
    wait_until(lambda: manager.task_status(task) == "active")
    imds.schedule("Reboot", "RB-1", not_before=not_before(900))
    wait_until(lambda: agent.state().get("phase") == "waiting-for-platform", 30)
    assert manager.task_status(task) == "completed"  # finished, not requeued
    assert agent.state()["last_exit_code"] == 0
    assert b"signal received" not in agent.stdout  # no SIGTERM
    assert imds.acknowledged() == []  # a platform event: not due for minutes
    order = [
        "offline" if r.path.endswith("/setstatus") else "completed"
        for r in manager.server.requests
        if r.path.endswith("/setstatus")
        or (r.path.endswith(task) and r.json().get("taskStatus") == "completed")
    ]
    assert order == ["offline", "completed"]  # asked while the task ran
    imds.cancel("RB-1")
    wait_until(
        lambda: (
            agent.state().get("worker_pid") not in (None, first)
            and [w.status for w in manager.named(NAME)] == ["awake"]
        ),
        30,
        "the worker started again and awake",
    )
    statuses = [r.json() for r in manager.server.received("POST", MGT)]
    assert statuses == [
        {"status": "offline", "is_lazy": True},
        {"status": "awake", "is_lazy": False},
    ]
    _stop(agent)


def test_a_hold_while_no_worker_ran_never_judges_a_later_workers_exit(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    manager.fail("version", 503)  # the agent waits for the Manager: no worker runs yet
    agent = run_agent("count,exit:0", manager=manager, imds=imds, NODE_AGENT_MANAGER_WAIT_CAP="0.2")
    wait_until(lambda: agent.state().get("phase") == "waiting-for-manager")
    imds.schedule("Preempt", "PRE-1")
    wait_until(lambda: agent.state().get("platform_event") == "Preempt event PRE-1")
    imds.cancel("PRE-1")
    wait_until(
        lambda: b"PRE-1 is over and the node is still here: the worker works" in agent.stderr
    )
    manager.fail("version", None)
    # Its exit 0 is the Manager asking it to shut down, not a stop for the Preempt.
    assert agent.wait() == EXIT_OK
    assert len(agent.runs()) == 1
    assert agent.state()["stop_reason"] == "the Manager asked the worker to shut down"
