"""A stand-in Flamenco v3 Manager: the worker API, the worker-management API and the
jobs API's queries as the real Manager 3.x answers them (status codes, ``{"code",
"message"}`` error bodies, HTTP Basic auth checked against a hash of the secret), over
the ``Farm`` in ``standins.farm``. Every request is recorded; tests add tags and
tasks, ask workers to change status, and make operations fail for a while."""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid
from typing import Any, Optional

from node_agent.sim.standins.farm import Farm, FarmError, Job, StatusChangeRequested, Tag, Worker
from node_agent.sim.standins.server import Request, Response, StandinServer

API = "/api/v3"
VERSION = {
    "version": "3.6-standin",
    "shortversion": "3.6",
    "name": "Flamenco (stand-in)",
    "git": "standin",
}
# Operations a test can make fail (``FakeManager.fail``).
OPERATIONS = ("version", "register-worker", "sign-on", "task", "worker-mgt", "jobs")

_WORKER_PATH = re.compile(rf"{API}/worker-mgt/workers/([^/]+)(/setstatus|/settags)?")
_TASK_PATH = re.compile(rf"{API}/worker/task/([^/]+)(/may-i-run)?")
_JOB_PATH = re.compile(rf"{API}/jobs/([^/]+)(/tasks|/blocklist)?")


def _error(code: int, message: str) -> Response:
    return Response(code, {"code": code, "message": message})


def _json(request: Request) -> Any:
    try:
        return request.json() if request.body else None
    except ValueError:
        return None


class FakeManager:
    """A Manager on 127.0.0.1; ``farm`` holds its workers, tags, jobs and tasks."""

    def __init__(self, port: int = 0) -> None:
        self.farm = Farm()
        self.lock = threading.RLock()
        self._failing: dict[str, int] = {}
        self._default_job = Job(str(uuid.uuid4()), "stand-in job")
        self.server = StandinServer(self._handle, port)

    @property
    def url(self) -> str:
        """The Manager URL for ``FLAMENCO_MANAGER_URL``."""
        return self.server.url + "/"

    def start(self) -> FakeManager:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()

    # -- for tests and the simulated node ---------------------------------------

    def fail(self, operation: str, status: Optional[int]) -> None:
        """Answer ``operation`` (one of ``OPERATIONS``) with this HTTP status from now
        on, as a Manager with a broken database or a proxy in front of it does; None
        heals it."""
        assert operation in OPERATIONS, operation
        with self.lock:
            if status is None:
                self._failing.pop(operation, None)
            else:
                self._failing[operation] = status

    def add_worker(self, name: str, secret: str, status: str = "offline") -> str:
        """A worker registered (and signed on before) with this secret; its id."""
        with self.lock:
            worker = self.farm.register(
                {"name": name, "platform": "linux", "secret": secret, "supported_task_types": []}
            )
            worker.status, worker.can_restart = status, True
            return worker.id

    def add_tag(self, name: str, description: str = "") -> str:
        """Create a worker tag (as an operator does in the web interface); its id."""
        with self.lock:
            tag_id = str(uuid.uuid4())
            self.farm.tags[tag_id] = Tag(tag_id, name, description)
            return tag_id

    def add_task(
        self,
        name: str,
        task_type: str = "misc",
        commands: Optional[list[dict[str, Any]]] = None,
        job: Optional[Job] = None,
    ) -> str:
        """Queue a task (in a default job unless ``job`` is given); its id."""
        with self.lock:
            task = self.farm.add_task(
                job or self._default_job,
                name,
                task_type,
                commands
                if commands is not None
                else [{"name": "sleep", "parameters": {"duration_in_seconds": 1}}],
            )
            return task.id

    def task_status(self, task_id: str) -> str:
        """A task's status (``queued``, ``active``, ``completed``, ...)."""
        with self.lock:
            return self.farm.tasks[task_id].status

    def ask(self, status: str, lazy: bool = False) -> None:
        """Request a status for every worker, as the web interface's ``setstatus``
        does (a worker that cannot restart refuses ``restart``: ``FarmError``)."""
        with self.lock:
            for worker in self.live_workers():
                self.farm.request_status(worker.id, {"status": status, "is_lazy": lazy})

    def live_workers(self) -> list[Worker]:
        """The workers the Manager lists (not deleted), in registration order."""
        with self.lock:
            return [w for w in self.farm.workers.values() if not w.deleted]

    def named(self, name: str) -> list[Worker]:
        """The listed workers with this name."""
        return [w for w in self.live_workers() if w.name == name]

    def worker(self, worker_id: str) -> Worker:
        """A worker by id, deleted or not."""
        with self.lock:
            return self.farm.workers[worker_id]

    def registered_names(self) -> list[str]:
        """The names of every registration so far, in order."""
        return [
            r.json()["name"] for r in self.server.received("POST", f"{API}/worker/register-worker")
        ]

    # -- HTTP ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Optional[Response]:
        path = request.path.split("?")[0]
        with self.lock:
            try:
                return self._route(request.method, path, request)
            except FarmError as exc:
                return _error(exc.code, exc.message)

    def _failing_for(self, operation: str) -> None:
        status = self._failing.get(operation)
        if status is not None:
            raise FarmError(status, f"stand-in failure of {operation}")

    def _route(self, method: str, path: str, request: Request) -> Response:
        body = _json(request)
        if path == f"{API}/version" and method == "GET":
            self._failing_for("version")
            return Response(200, VERSION)
        if path == f"{API}/worker/register-worker" and method == "POST":
            self._failing_for("register-worker")
            worker = self.farm.register(body)
            return Response(
                200,
                {
                    "uuid": worker.id,
                    "name": worker.name,
                    "address": "127.0.0.1",
                    "platform": worker.platform,
                    "software": worker.software,
                    "status": worker.status,
                    "supported_task_types": worker.supported_task_types,
                },
            )
        if path.startswith(f"{API}/worker/"):
            return self._worker_api(method, path, body, self._authenticated(request))
        if path.startswith(f"{API}/worker-mgt/"):
            self._failing_for("worker-mgt")
            return self._management(method, path, body)
        if path == f"{API}/jobs" and method == "GET":
            self._failing_for("jobs")
            return Response(200, {"jobs": [j.document() for j in self.farm.jobs.values()]})
        match = _JOB_PATH.fullmatch(path)
        if match and method == "GET":
            self._failing_for("jobs")
            if match.group(2) == "/blocklist":
                return Response(200, self.farm.job_blocklist(match.group(1), self.farm.workers))
            if match.group(2):
                tasks = self.farm.job_tasks(match.group(1), self.farm.workers)
                return Response(200, {"tasks": tasks})
            return Response(200, self.farm.job(match.group(1)).document())
        return _error(404, f"stand-in has no {method} {path}")

    def _authenticated(self, request: Request) -> Worker:
        auth = request.headers.get("Authorization", "")
        try:
            decoded = base64.b64decode(auth[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if not auth.startswith("Basic ") or ":" not in decoded:
            raise FarmError(403, "security requirements failed: no auth header found")
        worker_id, _, secret = decoded.partition(":")
        return self.farm.authenticate(worker_id, secret)

    def _worker_api(self, method: str, path: str, body: Any, worker: Worker) -> Response:
        farm = self.farm
        action = (method, path[len(f"{API}/worker/") :])
        if action == ("POST", "sign-on"):
            self._failing_for("sign-on")
            return Response(200, {"status_requested": farm.sign_on(worker, body)})
        if action == ("POST", "sign-off"):
            farm.sign_off(worker)
            return Response(204)
        if action == ("GET", "state"):
            if not worker.status_requested:
                return Response(204)
            return Response(200, {"status_requested": worker.status_requested})
        if action == ("POST", "state-changed"):
            farm.state_changed(worker, body)
            return Response(204)
        if action == ("POST", "task"):
            return self._schedule(worker)
        match = _TASK_PATH.fullmatch(path)
        if match and method == "GET" and match.group(2):
            return Response(200, farm.may_i_run(worker, match.group(1)))
        if match and method == "POST" and not match.group(2):
            farm.task_update(worker, match.group(1), body)
            return Response(204)
        return _error(404, f"stand-in has no {method} {path}")

    def _schedule(self, worker: Worker) -> Response:
        self._failing_for("task")
        try:
            task = self.farm.schedule(worker)
        except StatusChangeRequested as exc:
            return Response(423, {"status_requested": exc.status})
        if task is None:
            return Response(204)
        job = self.farm.jobs[task.job_id]
        return Response(
            200,
            {
                "uuid": task.id,
                "job": job.id,
                "name": task.name,
                "status": task.status,
                "priority": task.priority,
                "job_priority": job.priority,
                "job_type": job.type,
                "task_type": task.type,
                "commands": task.commands,
            },
        )

    def _management(self, method: str, path: str, body: Any) -> Response:
        farm = self.farm
        if path == f"{API}/worker-mgt/workers" and method == "GET":
            return Response(200, {"workers": farm.listing()})
        if path == f"{API}/worker-mgt/tags" and method == "GET":
            return Response(200, {"tags": [t.document() for t in farm.tags.values()]})
        match = _WORKER_PATH.fullmatch(path)
        if match is None:
            return _error(404, f"stand-in has no {method} {path}")
        worker_id, action = match.group(1), match.group(2)
        if action is None and method == "GET":
            return Response(200, farm.details(worker_id))
        if action is None and method == "DELETE":
            farm.delete(worker_id)
            return Response(204)
        if action == "/setstatus" and method == "POST":
            farm.request_status(worker_id, body)
            return Response(204)
        if action == "/settags" and method == "POST":
            farm.set_tags(worker_id, body)
            return Response(204)
        return _error(405, f"method {method} not allowed on {path}")
