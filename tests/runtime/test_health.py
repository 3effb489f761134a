"""The node's health while the worker runs: judged (pure), a real disk that fills
and is freed under the real agent with the stand-in v3 worker and Manager, and the
status requests the health watch and platform events share."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests

from node_agent.manager.api import ManagerApi, set_status
from node_agent.manager.status import StatusRequests
from node_agent.runtime.health import MEMORY_FLOOR, RECOVER, HealthWatch, Reading, assess
from node_agent.sim.standins.manager import FakeManager
from node_agent.sim.standins.server import Request, Response
from tests.agent import Agent
from tests.helpers import wait_until
from tests.nodes import TestNode
from tests.runtime.test_storage import needs_mount_namespace
from tests.test_one_identity import NAME, STANDIN, _node

MiB = 2**20
MGT = "/api/v3/worker-mgt/workers"


def _reading(free: int, available: int = 8 * 2**30, in_tasks: int = 0) -> Reading:
    return Reading("/mnt/batch/tasks", free, 100 * MiB, available, in_tasks)


def test_a_node_is_unfit_below_the_diskfull_threshold_and_low_on_memory() -> None:
    assert assess(_reading(200 * MiB)) == {}
    assert assess(_reading(99 * MiB)) == {
        "disk": "99.0 MiB free on /mnt/batch/tasks (Batch marks the node DiskFull below 100.0 MiB)"
    }
    # Memory held by the task's processes comes back when the task ends: no fault.
    assert assess(_reading(200 * MiB, available=MEMORY_FLOOR // 4, in_tasks=MEMORY_FLOOR)) == {}
    low = assess(_reading(200 * MiB, available=MEMORY_FLOOR // 2, in_tasks=MEMORY_FLOOR // 4))
    assert list(low) == ["memory"] and "768.0 MiB of memory available" in low["memory"]


def test_an_unfit_node_is_fit_again_only_clear_of_the_floor() -> None:
    just_above = int(100 * MiB * (RECOVER + 1) / 2)  # between the floor and RECOVER times it
    assert assess(_reading(just_above)) == {}
    assert list(assess(_reading(just_above), frozenset({"disk"}))) == ["disk"]
    assert assess(_reading(int(100 * MiB * RECOVER) + 1), frozenset({"disk"})) == {}
    # Only the kind that was unfit needs the margin.
    assert assess(_reading(just_above), frozenset({"memory"})) == {}


def test_a_disk_that_fills_takes_the_worker_off_new_work_until_it_is_freed(
    tmp_path: Path, run_agent: Callable[..., Agent], manager: FakeManager
) -> None:
    needs_mount_namespace()
    node = _node(tmp_path / "node")
    root = node.environ["AZ_BATCH_NODE_ROOT_DIR"]
    template = tmp_path / "template"
    shutil.copytree(root, template, symlinks=True)
    # The node root becomes a real 64 MiB file system, in the agent's namespace only.
    wrapper = (
        *("unshare", "-m", "--propagation", "private", "sh", "-c"),
        'mount -t tmpfs -o size=64m nodedisk "$1" && cp -a "$2/." "$1/" && shift 2 && exec "$@"',
        *("sh", root, str(template)),
    )
    agent = run_agent(
        "",
        node=node,
        manager=manager,
        wrapper=wrapper,
        # Shortened: a look every 0.2 s (really a minute); memory is not looked at
        # here (the machine running the tests may be short of it).
        constants={
            "node_agent.runtime.health.INTERVAL": 0.2,
            "node_agent.runtime.health.MEMORY_FLOOR": 0,
        },
        AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES=str(16 * MiB),
        NODE_AGENT_WATCH_EVENTS="false",
        **STANDIN,
    )

    def status() -> str:
        return ",".join(w.status for w in manager.named(NAME))

    wait_until(lambda: status() == "awake", 30, "the worker awake")
    inside = Path(f"/proc/{agent.process.pid}/root") / root.lstrip("/")
    filler = inside / "filler"
    with open(filler, "wb") as handle:  # 52 MiB of 64: less than 16 MiB left
        for _ in range(52):
            handle.write(b"\0" * MiB)
    wait_until(lambda: status() == "asleep", 30, "the worker asleep")
    state = inside / "shared/.node-agent/state.json"
    assert b"free on " + root.encode() in state.read_bytes()  # unfit, in status
    assert b"the node is unfit for new work: " in agent.stderr
    status_command = (sys.executable, "-m", "node_agent", "status")
    shown = subprocess.run(
        ["nsenter", "-t", str(agent.process.pid), "-m", *status_command],
        env={**node.environ, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "health      UNFIT, no new work: 1" in shown and f" MiB free on {root}" in shown
    task = manager.add_task("frame 1")
    assert manager.task_status(task) == "queued"  # an asleep worker gets none

    filler.unlink()
    wait_until(lambda: manager.task_status(task) == "completed", 30, "the task run")
    assert status() == "awake"
    assert b'"unfit": null' in state.read_bytes()
    assert b"the node is fit again: the worker takes new work again" in agent.stderr
    requests = [r.json() for r in manager.server.received("POST", "/api/v3/worker-mgt/workers")]
    assert requests == [
        {"status": "asleep", "is_lazy": True},
        {"status": "awake", "is_lazy": False},
    ]


def test_status_requests_take_the_strongest_wish_and_undo_only_their_own(
    tmp_path: Path, manager: FakeManager
) -> None:
    api = ManagerApi(manager.url)
    credentials = tmp_path / "credentials.yaml"
    requests = StatusRequests(api, credentials, None)
    assert not requests.want("health", "asleep")  # no worker registered yet: try later
    worker = manager.add_worker(NAME, "s3cret", "awake")
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    assert requests.want("health", None)  # nothing asked of it: nothing to undo
    assert requests.want("event", "offline")
    assert requests.want("health", "asleep")  # weaker than offline: nothing sent
    assert requests.want("event", None)  # the event is off: asleep remains
    assert requests.want("health", None)
    sent = [r.json() for r in manager.server.received("POST", "/api/v3/worker-mgt/workers")]
    assert sent == [
        {"status": "offline", "is_lazy": True},
        {"status": "asleep", "is_lazy": True},
        {"status": "awake", "is_lazy": False},
    ]
    # A worker that registered anew is asked again.
    assert requests.want("health", "asleep")
    other = manager.add_worker(NAME, "n3w", "awake")
    credentials.write_text(f"worker_id: {other}\nworker_secret: n3w\n")
    assert requests.want("health", "asleep")
    assert manager.worker(other).status_requested == "asleep"


def test_a_state_write_that_fails_never_ends_the_health_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    posted: list[object] = []

    def post(**changes: object) -> None:
        posted.append(changes)
        if len(posted) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    # A floor no disk reaches: unfit at every look, reported until the write works.
    watch = HealthWatch(
        str(tmp_path), 2**62, worker_pid=lambda: None, post=post, status=None, interval=0.01
    )
    watch.start()
    try:
        wait_until(lambda: watch.problems, 20, "the unfit node noted")
    finally:
        watch.stop()
    assert len(posted) == 3
    failures = [r.getMessage() for r in caplog.records if "health watch failed" in r.getMessage()]
    assert len(failures) == 1 and "OSError at " in failures[0]


def _as_worker(manager: FakeManager, worker: str, path: str, body: object) -> requests.Response:
    """A call of the worker API, as the worker with this id (secret ``s3cret``) makes it."""
    url = f"{manager.url}api/v3/worker/{path}"
    return requests.post(url, json=body, auth=(worker, "s3cret"), timeout=10)


def test_status_requests_ask_again_once_a_restarted_worker_signed_on(
    tmp_path: Path, manager: FakeManager
) -> None:
    credentials = tmp_path / "credentials.yaml"
    worker = manager.add_worker(NAME, "s3cret", "awake")
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    status = StatusRequests(ManagerApi(manager.url), credentials, None)
    status.worker_started()
    assert status.want("health", "asleep")
    _as_worker(manager, worker, "state-changed", {"status": "asleep"})  # it went asleep
    # Killed without signing off (OOM) and started again: the Manager still shows it
    # asleep, and a look before its sign-on must not count as the request sent.
    status.worker_started()
    assert not status.want("health", "asleep")  # not known to be held: asked again
    sign_on = {"name": NAME, "software_version": "3.5", "supported_task_types": ["misc"]}
    answer = _as_worker(manager, worker, "sign-on", sign_on).json()
    assert answer["status_requested"] == "awake"  # what the real Manager answers too
    _as_worker(manager, worker, "state-changed", {"status": "awake"})
    assert status.want("health", "asleep")  # the next look sends it again
    assert manager.worker(worker).status_requested == "asleep"
    assert status.want("health", "asleep")  # and only once
    sent = [r.json() for r in manager.server.received("POST", MGT)]
    assert sent == [{"status": "asleep", "is_lazy": True}] * 2


def test_a_worker_restarted_on_an_unfit_node_is_taken_off_new_work_again(
    tmp_path: Path, run_agent: Callable[..., Agent], manager: FakeManager
) -> None:
    agent = run_agent(
        "",
        node=_node(tmp_path / "node"),
        manager=manager,
        # Shortened: a look every 0.2 s (really a minute); a memory floor no machine
        # reaches, so the node is unfit at every look.
        constants={
            "node_agent.runtime.health.INTERVAL": 0.2,
            "node_agent.runtime.health.MEMORY_FLOOR": 2**62,
        },
        NODE_AGENT_WATCH_EVENTS="false",
        **STANDIN,
    )

    def status() -> str:
        return ",".join(w.status for w in manager.named(NAME))

    def asked() -> list[object]:
        return [r.json() for r in manager.server.received("POST", MGT)]

    wait_until(lambda: status() == "asleep", 30, "the worker asleep")
    first = agent.state()["worker_pid"]
    os.kill(first, signal.SIGKILL)  # as the OOM killer does: it never signs off
    wait_until(lambda: agent.state().get("worker_pid") not in (None, first), 30, "a restart")
    # Its sign-on was answered awake: it is asked again, once it has signed on.
    wait_until(lambda: len(asked()) == 2 and status() == "asleep", 30, "the worker asleep again")
    assert asked() == [{"status": "asleep", "is_lazy": True}] * 2


class _SlowManager(FakeManager):
    """A Manager that answers the first status request only once ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()  # the first status request has come
        self.go = threading.Event()

    def _handle(self, request: Request) -> Optional[Response]:
        if request.path.endswith("/setstatus") and not self.holding.is_set():
            self.holding.set()
            self.go.wait(60)
        return super()._handle(request)


def test_a_status_request_never_waits_behind_another_causes(tmp_path: Path) -> None:
    manager = _SlowManager().start()
    try:
        credentials = tmp_path / "credentials.yaml"
        worker = manager.add_worker(NAME, "s3cret", "awake")
        credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
        # Calls wait as long as the Manager takes here: only the waiting is looked at.
        status = StatusRequests(ManagerApi(manager.url, timeout=60), credentials, None)
        health: list[bool] = []
        looking = threading.Thread(target=lambda: health.append(status.want("health", "asleep")))
        looking.start()
        wait_until(manager.holding.is_set, 20, "the health watch's request at the Manager")
        # A Scheduled Event meanwhile: its request goes out at once.
        events: list[bool] = []
        watching = threading.Thread(target=lambda: events.append(status.want("event", "offline")))
        watching.start()
        wait_until(lambda: events, 10, "the event's request answered")
        assert events == [True] and manager.worker(worker).status_requested == "offline"
        manager.go.set()
        looking.join(20)
        watching.join(20)
        assert health == [True]
        # The Manager took the two in the other order: the next look asks again.
        assert manager.worker(worker).status_requested == "asleep"
        assert status.want("health", "asleep")
        assert manager.worker(worker).status_requested == "offline"
        assert status.want("health", "asleep")  # now known: not sent again
        sent = [r.json()["status"] for r in manager.server.received("POST", MGT)]
        assert sent == ["asleep", "offline", "offline"]
    finally:
        manager.go.set()
        manager.stop()


def test_a_look_that_fails_oddly_never_ends_the_health_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "node_agent")
    looks: list[int] = []

    def worker_pid() -> None:
        looks.append(1)
        if len(looks) == 1:
            raise RuntimeError("psutil had a bad day")

    posted: list[object] = []
    watch = HealthWatch(
        str(tmp_path),
        2**62,
        worker_pid=worker_pid,
        post=lambda **changes: posted.append(changes),
        status=None,
        interval=0.01,
    )
    watch.start()
    try:
        wait_until(lambda: posted, 20, "a look after the failed one")
    finally:
        watch.stop()
    assert "the health watch failed (RuntimeError at " in caplog.text


def test_a_request_nothing_wants_any_more_never_reaches_the_next_worker(
    tmp_path: Path, manager: FakeManager
) -> None:
    api = ManagerApi(manager.url)
    credentials, asked = tmp_path / "credentials.yaml", tmp_path / "status-asked"
    # Killed without signing off (the Manager timed it out to error): not running.
    worker = manager.add_worker(NAME, "s3cret", "error")
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    status = StatusRequests(api, credentials, asked)
    assert status.want("event", "offline")  # a wind-down while no worker ran
    assert asked.read_text() == f"{worker}\n"
    assert status.before_start()  # the event still wants it: asked again, as it is
    assert manager.worker(worker).status_requested == "offline"
    # The agent (and the node) restarted meanwhile: the event is gone, the request
    # still pending; before the worker starts, it is replaced by awake.
    again = StatusRequests(api, credentials, asked)
    assert again.before_start()
    assert manager.worker(worker).status_requested == "awake"
    assert not asked.exists()
    assert again.before_start()  # nothing asked any more: nothing sent
    offline = {"status": "offline", "is_lazy": True}
    sent = [r.json() for r in manager.server.received("POST", MGT)]
    assert sent == [offline, offline, {"status": "awake", "is_lazy": False}]
    # With a wish of now (the node unfit after the reboot), that wish replaces the
    # older offline instead: the worker signs on into asleep, never offline.
    assert set_status(api, worker, "offline", lazy=True)
    asked.write_text(f"{worker}\n")
    unfit = StatusRequests(api, credentials, asked)
    manager.fail("worker-mgt", 503)
    assert not unfit.want("health", "asleep")  # a look while the Manager failed
    manager.fail("worker-mgt", None)
    assert unfit.before_start()
    assert manager.worker(worker).status_requested == "asleep"


def _left_pending(tmp_path: Path, manager: FakeManager) -> tuple[TestNode, str]:
    """A node as the agent left it before the node's reboot: it had asked its worker
    (killed without signing off since) to go offline for a Reboot while no worker
    ran, and recorded that; the offline is still pending on the Manager."""
    node = _node(tmp_path / "node")
    agent_dir = node.shared / ".node-agent"
    (agent_dir / "worker/home").mkdir(parents=True)
    worker = manager.add_worker(NAME, "s3cret", "error")
    (agent_dir / "worker/home/flamenco-worker-credentials.yaml").write_text(
        f"worker_id: {worker}\nworker_secret: s3cret\n"
    )
    assert set_status(ManagerApi(manager.url), worker, "offline", lazy=True)
    assert manager.worker(worker).status_requested == "offline"
    (agent_dir / "status-asked").write_text(f"{worker}\n")
    return node, worker


def test_a_pending_offline_of_the_agents_never_ends_the_nodes_worker(
    tmp_path: Path, run_agent: Callable[..., Agent], manager: FakeManager
) -> None:
    node, worker = _left_pending(tmp_path, manager)
    agent_dir = node.shared / ".node-agent"
    agent = run_agent("", node=node, manager=manager, NODE_AGENT_WATCH_EVENTS="false", **STANDIN)
    wait_until(lambda: manager.worker(worker).status == "awake", 30, "the worker awake")
    assert agent.process.poll() is None and agent.state()["restarts"] == 0
    assert not (agent_dir / "status-asked").exists()


def test_a_pending_offline_the_agent_cannot_take_back_costs_one_restart(
    tmp_path: Path, run_agent: Callable[..., Agent], manager: FakeManager
) -> None:
    node, worker = _left_pending(tmp_path, manager)
    manager.fail("worker-mgt", 503)  # a proxy in front of the Manager's management API
    agent = run_agent("", node=node, manager=manager, NODE_AGENT_WATCH_EVENTS="false", **STANDIN)
    # The first worker gets the offline and exits 0: the agent's doing, so it is
    # started again, and the second signs on awake.
    wait_until(lambda: agent.state().get("restarts") == 1, 30, "a second start")
    wait_until(lambda: manager.worker(worker).status == "awake", 30, "the worker awake")
    assert agent.process.poll() is None
    assert b"worker stopped (exit 0) for the offline node-agent asked for earlier" in agent.stderr


def test_before_a_start_the_wish_of_now_is_simply_asked(
    tmp_path: Path, manager: FakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials.yaml"
    worker = manager.add_worker(NAME, "s3cret", "asleep")  # the run before, asleep, dead
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    status = StatusRequests(ManagerApi(manager.url), credentials, tmp_path / "status-asked")
    status.worker_started()
    assert not status.want("health", "asleep")  # the dead run's status: not known held
    # Before the next start no worker runs: asking is enough, and no doubt is left
    # that an offline could reach the worker.
    assert status.before_start()
    assert manager.worker(worker).status_requested in ("", "asleep")
    assert "may still reach it" not in caplog.text


def test_a_record_that_cannot_be_read_or_written_is_no_reason_to_fail(
    tmp_path: Path, manager: FakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials.yaml"
    worker = manager.add_worker(NAME, "s3cret", "awake")
    credentials.write_text(f"worker_id: {worker}\nworker_secret: s3cret\n")
    planted = tmp_path / "status-asked"
    planted.mkdir()  # a directory where the record goes: neither read nor replaced
    status = StatusRequests(ManagerApi(manager.url), credentials, planted)
    assert status.before_start()  # nothing known to have been asked
    assert status.want("health", "asleep")  # asked all the same; the record is logged
    assert manager.worker(worker).status_requested == "asleep"
    assert "cannot record the worker asked in" in caplog.text
