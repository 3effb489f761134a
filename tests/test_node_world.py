"""The real agent in its world: a Manager that is away, Scheduled Events, a stale
worker entry. Stand-in Manager and Metadata Service on 127.0.0.1."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from node_agent.common.errors import EXIT_OK
from node_agent.sim.standins.imds import EVENTS_PATH, FakeImds, not_before
from node_agent.sim.standins.manager import FakeManager
from tests.agent import Agent, worker_node
from tests.helpers import wait_until
from tests.manager.test_manager import _free_port
from tests.nodes import CLOSED_LOOPBACK, TestNode

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
    tmp_path: Path, run_agent: Start, services: Services, steps: str, **options: Any
) -> tuple[Agent, str]:
    """The agent on a node whose worker registered before, once its worker runs and
    its watcher polls the stand-in Metadata Service; and the worker's id."""
    manager, imds = services
    node, worker = _registered(tmp_path, manager)
    agent = run_agent(steps, node=node, manager=manager, imds=imds, **options)
    agent.wait_running()
    wait_until(lambda: imds.server.received("GET", EVENTS_PATH))
    return agent, worker


@pytest.mark.parametrize(
    ("kind", "notice"), [("Preempt", ""), ("Redeploy", "soon")], ids=["preempt", "redeploy"]
)
def test_disk_wiping_events_stop_the_worker_forget_it_and_acknowledge(
    tmp_path: Path, run_agent: Start, services: Services, kind: str, notice: str
) -> None:
    manager, imds = services
    agent, worker = _watching(tmp_path, run_agent, services, "count,term-stamp,wait")
    scheduled = time.time()
    # A Redeploy 10 s ahead is within the margin (stop_grace 3 s + 15 s): stopped now.
    imds.schedule(kind, "EVT-1", not_before=not_before(10) if notice else "")
    wait_until(lambda: imds.acknowledged() == ["EVT-1"])
    exited = float((agent.work / "exited").read_text())  # the worker got SIGTERM
    assert exited >= scheduled
    [delete] = manager.server.received("DELETE", f"/api/v3/worker-mgt/workers/{worker}")
    assert delete.at >= exited  # after the worker had exited
    assert manager.worker(worker).deleted
    [ack] = imds.server.received("POST", EVENTS_PATH)
    assert ack.at >= delete.at
    # The agent stays: until the platform takes the node, the event may not happen.
    state = agent.state()
    assert state["phase"] == "waiting-for-platform" and agent.process.poll() is None
    assert state["last_exit_reason"] == f"stopped: {kind} event EVT-1"
    assert b"s3cret-of-w-42" not in agent.stderr + agent.stdout
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
    assert agent.state()["stop_reason"] == "received SIGTERM"


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


# AZ_BATCH_NODE_IS_DEDICATED, settings, whether the worker is removed from the
# Manager, whether the event is acknowledged.
Case = tuple[str, dict[str, str], bool, bool]


@pytest.mark.parametrize(
    "case",
    [
        ("true", {}, False, True),  # forget_worker auto: off on a dedicated node
        ("true", {"NODE_AGENT_FORGET_WORKER": "true"}, True, True),
        ("false", {"NODE_AGENT_FORGET_WORKER": "false"}, False, True),
        ("false", {"NODE_AGENT_ACK_EVENTS": "false"}, True, False),
    ],
    ids=["dedicated-auto", "dedicated-true", "spot-false", "no-ack"],
)
def test_forget_worker_and_ack_events_on_a_preempt(
    tmp_path: Path, run_agent: Start, services: Services, case: Case
) -> None:
    dedicated, settings, forgets, acknowledges = case
    manager, imds = services
    # A proxy that goes nowhere: the Metadata Service is never asked through one.
    proxies = {"HTTP_PROXY": CLOSED_LOOPBACK, "http_proxy": CLOSED_LOOPBACK}
    agent, worker = _watching(
        tmp_path,
        run_agent,
        services,
        "count,term-stamp,wait",
        constants={"node_agent.imds.watcher.POLL": 0.2},
        AZ_BATCH_NODE_IS_DEDICATED=dedicated,
        **proxies,
        **settings,
    )
    imds.schedule("Preempt", "EVT-1")
    wait_until((agent.work / "exited").exists, what="the worker stopped")
    wait_until(lambda: agent.state().get("phase") == "waiting-for-platform")
    # The decision to go ahead comes at the poll after the worker stopped.
    polls = len(imds.server.received("GET", EVENTS_PATH))
    wait_until(lambda: len(imds.server.received("GET", EVENTS_PATH)) >= polls + 2)
    assert imds.acknowledged() == (["EVT-1"] if acknowledges else [])
    deletes = manager.server.received("DELETE", f"/api/v3/worker-mgt/workers/{worker}")
    assert len(deletes) == forgets and manager.worker(worker).deleted == forgets
    agent.signal(signal.SIGTERM)
    assert agent.wait() == EXIT_OK
