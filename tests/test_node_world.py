"""The real agent in its world: a Manager that is away, Scheduled Events, a stale
worker entry. Stand-in Manager and Metadata Service on 127.0.0.1."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Callable

from node_agent.errors import EXIT_OK
from node_agent.standins.imds import EVENTS_PATH, FakeImds
from node_agent.standins.manager import FakeManager
from tests.agent import Agent, worker_node
from tests.helpers import wait_until
from tests.nodes import TestNode
from tests.test_manager import _free_port

Start = Callable[..., Agent]
Services = tuple[FakeManager, FakeImds]


def _registered(tmp_path: Path, manager: FakeManager) -> tuple[TestNode, str]:
    """A node whose v3 worker registered before: credentials on disk, known to the
    Manager; and its id."""
    node = worker_node(tmp_path / "node")
    home = node.shared / ".node-agent/worker/home"
    home.mkdir(parents=True)
    worker = manager.add_worker("spot-render-v3-0f6a1c2e9d8b", "s3cret-of-w-42", "awake")
    (home / "flamenco-worker-credentials.yaml").write_text(
        f"worker_id: {worker}\nworker_secret: s3cret-of-w-42\n"
    )
    return node, worker


def test_worker_starts_only_once_the_manager_answers(run_agent: Start) -> None:
    port = _free_port()
    manager = FakeManager(port)  # not serving yet: the Manager is down
    agent = run_agent(
        "count,wait",
        manager=manager,
        FLAMENCO_MANAGER_URL=f"http://127.0.0.1:{port}/",
        NODE_AGENT_MANAGER_WAIT_CAP="0.3",
    )
    wait_until(lambda: agent.stderr.count(b": connection refused; next attempt in") >= 4)
    assert agent.runs() == []
    assert agent.state()["phase"] == "waiting-for-manager"
    manager.start()
    agent.wait_running()
    delays = re.findall(
        rb"attempt \d+ after [\d.]+ s: connection refused; next attempt in "
        rb"([\d.]+) s",
        agent.stderr,
    )
    # Within the cap (that they are jittered is shown on the raw delays in
    # test_manager: the log rounds them to 0.1 s).
    assert len(delays) >= 4 and all(float(d) <= 0.3 for d in delays)
    assert b"answered after" in agent.stderr
    # The stand-in worker never contacts the Manager: every request is the agent's,
    # and none came before the Manager was up.
    assert [r.path for r in manager.server.requests] == ["/api/v3/version"]


def _watching(
    tmp_path: Path, run_agent: Start, services: Services, steps: str
) -> tuple[Agent, str]:
    """The agent on a node whose worker registered before, once its worker runs and
    its watcher polls the stand-in Metadata Service; and the worker's id."""
    manager, imds = services
    node, worker = _registered(tmp_path, manager)
    agent = run_agent(steps, node=node, manager=manager, imds=imds)
    agent.wait_running()
    wait_until(lambda: imds.server.received("GET", EVENTS_PATH))
    return agent, worker


def test_preempt_stops_the_worker_forgets_it_and_acknowledges(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent, worker = _watching(tmp_path, run_agent, services, "count,term-stamp,wait")
    scheduled = time.time()
    imds.schedule("Preempt", "PRE-1")
    assert agent.wait() == EXIT_OK
    exited = float((agent.work / "exited").read_text())  # the worker got SIGTERM
    assert exited >= scheduled
    [delete] = manager.server.received("DELETE", f"/api/v3/worker-mgt/workers/{worker}")
    assert delete.at >= exited  # after the worker had exited
    assert manager.worker(worker).deleted
    assert imds.acknowledged() == ["PRE-1"]
    [ack] = imds.server.received("POST", EVENTS_PATH)
    assert ack.at >= delete.at
    state = agent.state()
    assert state["stop_reason"] == "Preempt event PRE-1" and state["phase"] == "stopped"
    assert b"s3cret-of-w-42" not in agent.stderr + agent.stdout


def test_other_vms_events_and_freeze_are_ignored(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    manager, imds = services
    agent, _ = _watching(tmp_path, run_agent, services, "count,wait")
    worker = agent.state()["worker_pid"]
    imds.schedule("Preempt", "NOT-US", resources=["another-vm"])
    imds.schedule("Freeze", "FRZ-1")
    wait_until(lambda: b"scheduled event FRZ-1 for this VM: Freeze (log only)" in agent.stderr)
    polls = len(imds.server.received("GET", EVENTS_PATH))
    wait_until(lambda: len(imds.server.received("GET", EVENTS_PATH)) >= polls + 2)
    assert agent.state()["worker_pid"] == worker and agent.process.poll() is None
    assert b"NOT-US" not in agent.stderr
    assert imds.acknowledged() == [] and manager.server.received("DELETE", "/") == []
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert imds.acknowledged() == []  # an operator's stop is not the platform's


def test_a_failing_metadata_service_never_stops_the_worker(
    tmp_path: Path, run_agent: Start, services: Services
) -> None:
    _, imds = services
    agent, _ = _watching(tmp_path, run_agent, services, "count,wait")
    worker = agent.state()["worker_pid"]
    for mode, kind in (("500", b"HTTP 500"), ("garbage", b"invalid JSON")):
        imds.fail(mode)
        wait_until(lambda kind=kind: kind in agent.stderr, 60)
    imds.fail(None)
    imds.schedule("Terminate", "TERM-1")
    assert agent.wait(90) == EXIT_OK  # still watching after the failures
    assert agent.stderr.count(b"HTTP 500") == 1 and agent.stderr.count(b"invalid JSON") == 1
    assert agent.state()["last_exit_reason"] == "stopped: Terminate event TERM-1"
    assert agent.runs() == [worker]
