"""The stand-in Manager answers as Flamenco Manager 3.x does (status codes, error
bodies, pending status requests, tags, the task queue), over real HTTP, and holds
requests and its answers to the real Manager's OpenAPI specification."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pytest
import requests

from node_agent.sim.standins.manager import SPEC_ENV, FakeManager, SpecViolation

WORKER = "/api/v3/worker"
MGT = "/api/v3/worker-mgt"
UNKNOWN = "8e1d9c4a-0b1f-4c7e-9d35-5a0f2b8e6c11"


class Client:
    """A worker (or, without credentials, the web interface) talking to it."""

    def __init__(self, manager: FakeManager, auth: Optional[tuple[str, str]] = None) -> None:
        self.base = manager.url.rstrip("/")
        self.auth = auth

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, self.base + path, json=body, auth=self.auth, timeout=5)

    def register(self, manager: FakeManager, secret: str = "s3cret") -> Client:
        body = _registration("node-1", secret)
        answer = self("POST", f"{WORKER}/register-worker", body).json()
        return Client(manager, (answer["uuid"], secret))

    @property
    def id(self) -> str:
        assert self.auth is not None
        return self.auth[0]

    def sign_on(self, can_restart: bool = True) -> str:
        answer = self("POST", f"{WORKER}/sign-on", _sign_on(can_restart))
        assert answer.status_code == 200, answer.text
        status: str = answer.json()["status_requested"]
        return status


def _registration(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "platform": "linux", "secret": secret, "supported_task_types": ["misc"]}


def _sign_on(can_restart: bool = True) -> dict[str, Any]:
    return {
        "name": "node-1",
        "supported_task_types": ["blender", "misc"],
        "software_version": "3.9",
        "can_restart": can_restart,
    }


def _error(response: requests.Response, code: int) -> str:
    """A handler's error: ``{"code", "message"}``."""
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code
    message: str = body["message"]
    return message


def _refused(response: requests.Response, code: int) -> str:
    """An error of the OpenAPI middleware (authentication, validation): echo's
    ``{"message"}``."""
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"message"}, body
    message: str = body["message"]
    return message


def test_registration_and_sign_on_answer_awake(manager: FakeManager) -> None:
    worker = Client(manager).register(manager)
    [entry] = Client(manager)("GET", f"{MGT}/workers").json()["workers"]
    assert entry["id"] == worker.id and entry["status"] == ""  # registered, not signed on
    assert worker.sign_on() == "awake"
    assert worker("POST", f"{WORKER}/state-changed", {"status": "awake"}).status_code == 204
    [entry] = Client(manager)("GET", f"{MGT}/workers").json()["workers"]
    assert entry["status"] == "awake"
    assert set(entry) == {"id", "name", "status", "version", "can_restart", "last_seen"}
    assert "s3cret" not in Client(manager)("GET", f"{MGT}/workers/{worker.id}").text
    message = _refused(Client(manager)("POST", f"{WORKER}/register-worker", {"name": "x"}), 400)
    assert message.startswith("request body has an error") and "secret" in message


def test_requests_the_specification_refuses_get_400(manager: FakeManager) -> None:
    """The real Manager's OpenAPI middleware refuses a body without a required field
    (a sign-on without ``software_version``) before any handler: 400 ``{"message"}``."""
    worker = Client(manager).register(manager)
    lacking = {k: v for k, v in _sign_on().items() if k != "software_version"}
    message = _refused(worker("POST", f"{WORKER}/sign-on", lacking), 400)
    assert "software_version" in message
    assert manager.worker(worker.id).status == ""  # the handler never saw it
    _refused(worker("POST", f"{WORKER}/state-changed", {"status": "sleepy"}), 400)
    _refused(worker("POST", f"{WORKER}/state-changed"), 400)  # no body at all
    mgt = Client(manager)
    _refused(mgt("POST", f"{MGT}/workers/{worker.id}/setstatus", {"status": "awake"}), 400)
    assert worker.sign_on() == "awake"


def test_unknown_deleted_and_wrong_secret_workers_get_403(manager: FakeManager) -> None:
    worker = Client(manager).register(manager)
    wrong = Client(manager, (worker.id, "not-the-secret"))
    for client in (wrong, Client(manager, (UNKNOWN, "x"))):
        message = _refused(client("POST", f"{WORKER}/sign-on", _sign_on()), 403)
        assert message == "security requirements failed: authorization failed: no such worker known"
    # Authentication comes first: a bad body without credentials is still 403.
    message = _refused(Client(manager)("POST", f"{WORKER}/sign-on", {"name": "n"}), 403)
    assert message.endswith("no auth header found")
    worker.sign_on()
    anyone = Client(manager)
    assert anyone("DELETE", f"{MGT}/workers/{worker.id}").status_code == 204
    # A soft delete: gone from the listing, its credentials refused, it re-registers.
    assert anyone("GET", f"{MGT}/workers").json()["workers"] == []
    _error(anyone("GET", f"{MGT}/workers/{worker.id}"), 404)
    _refused(worker("POST", f"{WORKER}/sign-on", _sign_on()), 403)
    _error(anyone("DELETE", f"{MGT}/workers/{worker.id}"), 404)
    _error(anyone("DELETE", f"{MGT}/workers/not-a-uuid"), 400)
    _error(anyone("GET", f"{MGT}/workers/{UNKNOWN}"), 404)
    assert manager.worker(worker.id).deleted


def test_status_requests_stay_pending_until_acknowledged(manager: FakeManager) -> None:
    worker = Client(manager).register(manager)
    worker.sign_on()
    worker("POST", f"{WORKER}/state-changed", {"status": "awake"})
    mgt = Client(manager)
    change = {"status": "asleep", "is_lazy": False}
    assert mgt("POST", f"{MGT}/workers/{worker.id}/setstatus", change).status_code == 204
    for _ in range(2):  # asked again and again until acknowledged
        assert worker("GET", f"{WORKER}/state").json() == {"status_requested": "asleep"}
    [entry] = mgt("GET", f"{MGT}/workers").json()["workers"]
    assert entry["status_change"] == {"status": "asleep", "is_lazy": False}
    worker("POST", f"{WORKER}/state-changed", {"status": "asleep"})
    assert worker("GET", f"{WORKER}/state").status_code == 204
    # offline is cleared at sign-off; the asleep status is remembered for next time.
    mgt("POST", f"{MGT}/workers/{worker.id}/setstatus", {"status": "offline", "is_lazy": False})
    assert worker("POST", f"{WORKER}/sign-off").status_code == 204
    assert worker.sign_on() == "asleep"


def test_restart_needs_a_worker_that_can_restart(manager: FakeManager) -> None:
    worker = Client(manager).register(manager)
    worker.sign_on(can_restart=False)
    change = {"status": "restart", "is_lazy": False}
    message = _error(Client(manager)("POST", f"{MGT}/workers/{worker.id}/setstatus", change), 412)
    assert "does not know how to restart" in message
    worker.sign_on(can_restart=True)
    assert Client(manager)("POST", f"{MGT}/workers/{worker.id}/setstatus", change).ok


def test_the_task_queue(manager: FakeManager) -> None:
    worker = Client(manager).register(manager)
    worker.sign_on()
    _error(worker("POST", f"{WORKER}/task"), 409)  # starting: not awake yet
    worker("POST", f"{WORKER}/state-changed", {"status": "awake"})
    assert worker("POST", f"{WORKER}/task").status_code == 204
    first = manager.add_task("first", "misc")
    manager.add_task("not for it", "ffmpeg")  # a type it does not support
    task = worker("POST", f"{WORKER}/task").json()
    assert task["uuid"] == first and task["task_type"] == "misc" and task["commands"]
    assert manager.task_status(first) == "active"
    assert worker("GET", f"{WORKER}/task/{first}/may-i-run").json() == {
        "mayKeepRunning": True,
        "reason": "",
        "statusChangeRequested": False,
    }
    # A lazy request lets the task finish, and hands out no new task (423).
    lazy = {"status": "offline", "is_lazy": True}
    Client(manager)("POST", f"{MGT}/workers/{worker.id}/setstatus", lazy)
    assert worker("GET", f"{WORKER}/task/{first}/may-i-run").json()["mayKeepRunning"]
    assert worker("POST", f"{WORKER}/task/{first}", {"taskStatus": "completed"}).ok
    assert manager.task_status(first) == "completed"
    answer = worker("POST", f"{WORKER}/task")
    assert answer.status_code == 423 and answer.json() == {"status_requested": "offline"}
    # A request that is not lazy stops the task at the next may-i-run.
    second = manager.add_task("second", "misc")
    Client(manager)("POST", f"{MGT}/workers/{worker.id}/setstatus", {**lazy, "is_lazy": False})
    manager.farm.tasks[second].status, manager.farm.tasks[second].worker_id = "active", worker.id
    assert worker("GET", f"{WORKER}/task/{second}/may-i-run").json()["statusChangeRequested"]
    _error(worker("POST", f"{WORKER}/task/{UNKNOWN}", {}), 404)
    _error(worker("POST", f"{WORKER}/task/{second}", {"taskStatus": "soft-failed"}), 400)
    # Signing off requeues its active task.
    worker("POST", f"{WORKER}/sign-off")
    assert manager.task_status(second) == "queued"


def test_tags(manager: FakeManager) -> None:
    gpu = manager.add_tag("GPU", "NC-series nodes")
    worker = Client(manager).register(manager)
    mgt = Client(manager)
    assert mgt("GET", f"{MGT}/tags").json() == {
        "tags": [{"id": gpu, "name": "GPU", "description": "NC-series nodes"}]
    }
    assert mgt("POST", f"{MGT}/workers/{worker.id}/settags", {"tag_ids": [gpu]}).status_code == 204
    assert mgt("GET", f"{MGT}/workers/{worker.id}").json()["tags"][0]["name"] == "GPU"
    _refused(mgt("POST", f"{MGT}/workers/{worker.id}/settags", {}), 400)


def test_settags_drops_an_unknown_tag_id(manager: FakeManager) -> None:
    """The real Manager assigns the tags it finds and ignores the other ids: 204."""
    gpu = manager.add_tag("GPU")
    worker = Client(manager).register(manager)
    mgt = Client(manager)
    change = {"tag_ids": [UNKNOWN, gpu]}
    assert mgt("POST", f"{MGT}/workers/{worker.id}/settags", change).status_code == 204
    assert [t["id"] for t in mgt("GET", f"{MGT}/workers/{worker.id}").json()["tags"]] == [gpu]
    only_unknown = {"tag_ids": [UNKNOWN]}
    assert mgt("POST", f"{MGT}/workers/{worker.id}/settags", only_unknown).status_code == 204
    assert "tags" not in mgt("GET", f"{MGT}/workers/{worker.id}").json()


def test_failures_can_be_injected(manager: FakeManager) -> None:
    manager.fail("sign-on", 500)
    worker = Client(manager).register(manager)
    assert _error(worker("POST", f"{WORKER}/sign-on", _sign_on()), 500)
    manager.fail("sign-on", None)
    assert worker.sign_on() == "awake"


def test_the_jobs_api_shows_the_queue_and_who_runs_what(manager: FakeManager) -> None:
    """What ``fleet scale`` reads (3.6+): ``GET /jobs``, ``GET /jobs/{id}/tasks``, and
    a worker's ``task`` (its active task, else the one it last worked on)."""
    worker = Client(manager).register(manager)
    worker.sign_on()
    worker("POST", f"{WORKER}/state-changed", {"status": "awake"})
    first, second = manager.add_task("frames 1-10", "misc"), manager.add_task("11-20", "misc")
    mgt = Client(manager)
    [job] = mgt("GET", "/api/v3/jobs").json()["jobs"]
    assert job["status"] == "queued" and {"id", "created", "updated", "priority"} <= set(job)
    assert worker("POST", f"{WORKER}/task").json()["uuid"] == first
    assert mgt("GET", f"/api/v3/jobs/{job['id']}").json()["status"] == "active"
    tasks = mgt("GET", f"/api/v3/jobs/{job['id']}/tasks").json()["tasks"]
    assert [(t["id"], t["status"]) for t in tasks] == [(first, "active"), (second, "queued")]
    assert tasks[0]["worker"] == {"id": worker.id, "name": "node-1", "address": "127.0.0.1"}
    assert "worker" not in tasks[1] and tasks[1]["index_in_job"] == 1
    running = mgt("GET", f"{MGT}/workers/{worker.id}").json()["task"]
    assert running["id"] == first and running["status"] == "active"
    assert running["job_id"] == job["id"]
    worker("POST", f"{WORKER}/task/{first}", {"taskStatus": "completed"})
    assert mgt("GET", f"{MGT}/workers/{worker.id}").json()["task"]["status"] == "completed"
    worker("POST", f"{WORKER}/task")
    worker("POST", f"{WORKER}/task/{second}", {"taskStatus": "completed"})
    assert mgt("GET", f"/api/v3/jobs/{job['id']}").json()["status"] == "completed"
    _error(mgt("GET", "/api/v3/jobs/not-a-uuid/tasks"), 400)
    _error(mgt("GET", f"/api/v3/jobs/{UNKNOWN}"), 404)
    assert mgt("GET", f"/api/v3/jobs/{UNKNOWN}/tasks").json() == {"tasks": []}
    manager.fail("jobs", 500)
    _error(mgt("GET", "/api/v3/jobs"), 500)


def test_an_assigned_task_carries_its_steps(manager: FakeManager) -> None:
    """``AssignedTask`` has ``steps_completed``, ``steps_total`` and each command's
    ``total_step_count`` (required since 3.8); a command counts as at least one step,
    and the worker's ``steps_completed`` shows in the task and its job."""
    worker = Client(manager).register(manager)
    worker.sign_on()
    worker("POST", f"{WORKER}/state-changed", {"status": "awake"})
    commands = [
        {"name": "blender-render", "parameters": {}, "total_step_count": 3},
        {"name": "sleep", "parameters": {"duration_in_seconds": 1}},
    ]
    task_id = manager.add_task("frames 1-3", "misc", commands)
    task = worker("POST", f"{WORKER}/task").json()
    assert (task["steps_completed"], task["steps_total"]) == (0, 4)
    assert [c["total_step_count"] for c in task["commands"]] == [3, 0]
    update = {"steps_completed": 2, "activity": "frame 2"}
    assert worker("POST", f"{WORKER}/task/{task_id}", update).status_code == 204
    mgt = Client(manager)
    [job] = mgt("GET", "/api/v3/jobs").json()["jobs"]
    assert (job["steps_completed"], job["steps_total"]) == (2, 4)
    [summary] = mgt("GET", f"/api/v3/jobs/{job['id']}/tasks").json()["tasks"]
    assert (summary["steps_completed"], summary["steps_total"]) == (2, 4)
    worker("POST", f"{WORKER}/task/{task_id}", {"steps_completed": 9})  # capped
    assert manager.farm.tasks[task_id].steps_completed == 4


def test_an_answer_outside_the_specification_is_caught() -> None:
    """A stand-in answer the real Manager's specification does not allow is a bug of
    the stand-in: the client gets a 500 saying so, and ``stop`` raises."""
    manager = FakeManager().start()
    try:
        worker = Client(manager).register(manager)
        worker.sign_on()
        manager.worker(worker.id).status = "dozing"  # no WorkerStatus
        answer = Client(manager)("GET", f"{MGT}/workers")
        assert answer.status_code == 500 and "'dozing' is not one of" in answer.text
    finally:
        with pytest.raises(SpecViolation, match="GET /api/v3/worker-mgt/workers answered 200"):
            manager.stop()


def test_the_check_is_switched_on_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Unset, the stand-in does not check (``./dev main``, the simulated pool); set
    to a file that is not there, it refuses to start rather than not check."""
    assert os.environ[SPEC_ENV]  # the suite checks every stand-in Manager
    monkeypatch.delenv(SPEC_ENV)
    manager = FakeManager().start()
    try:
        worker = Client(manager).register(manager)
        lacking = {k: v for k, v in _sign_on().items() if k != "software_version"}
        assert worker("POST", f"{WORKER}/sign-on", lacking).status_code == 200
    finally:
        manager.stop()
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(RuntimeError, match="no such file"):
        FakeManager()
