"""A stand-in Flamenco v3 Manager: the worker API, the worker-management API and the
jobs API's queries as the real Manager 3.x answers them (status codes; the handlers'
``{"code", "message"}`` errors and the OpenAPI middleware's ``{"message"}`` ones; HTTP
Basic auth checked against a hash of the secret), over the ``Farm`` in
``standins.farm``. With ``NODE_AGENT_MANAGER_SPEC`` set (the test suite sets it),
every request and answer is checked against the real specification
(``standins.manager_spec``): a request it refuses gets the real 400, an answer outside
it is a bug of the stand-in (500, recorded, raised at ``stop``). Every request is
recorded; tests add tags and tasks, ask workers to change status, and make operations
fail for a while."""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any, NoReturn, Optional

from node_agent.sim.standins.farm import Farm, FarmError, Job, StatusChangeRequested, Tag, Worker
from node_agent.sim.standins.server import Request, Response, StandinServer

if TYPE_CHECKING:
    from node_agent.sim.standins.manager_spec import ManagerSpec

API = "/api/v3"
VERSION = {
    "version": "3.9-standin",
    "shortversion": "3.9",
    "name": "Flamenco (stand-in)",
    "git": "standin",
}
# A copy of the real Manager's OpenAPI specification to check every request and answer
# against: set by the test suite only (docs/standins.md says why), never ignored.
SPEC_ENV = "NODE_AGENT_MANAGER_SPEC"
# Operations a test can make fail (``FakeManager.fail``).
OPERATIONS = ("version", "register-worker", "sign-on", "task", "worker-mgt", "jobs")

_WORKER_PATH = re.compile(rf"{API}/worker-mgt/workers/([^/]+)(/setstatus|/settags)?")
_TASK_PATH = re.compile(rf"{API}/worker/task/([^/]+)(/may-i-run)?")
_JOB_PATH = re.compile(rf"{API}/jobs/([^/]+)(/tasks|/blocklist)?")


def _error(code: int, message: str) -> Response:
    """An error as the handlers send it (``sendAPIError``, ``api_impl.go``)."""
    return Response(code, {"code": code, "message": message})


class EchoError(Exception):
    """An error as echo's default error handler sends it (``{"message"}``; Flamenco
    sets no handler of its own, ``cmd/flamenco-manager/webservice.go``): the answers of
    the OpenAPI middleware (authentication, validation) and of echo's router, before
    any handler, so not answers of the specification's operations."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = Response(status, {"message": message})


def spec_from_environment() -> Optional[ManagerSpec]:
    """The check ``NODE_AGENT_MANAGER_SPEC`` asks for, or None when it is unset."""
    path = os.environ.get(SPEC_ENV, "")
    if not path:
        return None
    if not os.path.isfile(path):
        raise RuntimeError(f"{SPEC_ENV}={path}: no such file")
    try:
        # A test dependency: imported only when the check is asked for.
        from node_agent.sim.standins.manager_spec import ManagerSpec  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            f"{SPEC_ENV} is set, but openapi-core is not installed ({exc}): install the "
            "test extra (pip install -e '.[test]') or unset it"
        ) from exc
    return ManagerSpec(path)


class _Injected(FarmError):
    """A failure a test asked for (``FakeManager.fail``): beyond the specification."""


class SpecViolation(AssertionError):
    """The stand-in answered something the real Manager's specification does not
    allow: a bug of the stand-in, raised when it stops."""


def _json(request: Request) -> Any:
    try:
        return request.json() if request.body else None
    except ValueError:
        return None


class FakeManager:
    """A Manager on 127.0.0.1; ``farm`` holds its workers, tags, jobs and tasks."""

    def __init__(self, port: int = 0, spec: Optional[ManagerSpec] = None) -> None:
        self.farm = Farm()
        self.lock = threading.RLock()
        self._failing: dict[str, int] = {}
        self._default_job = Job(str(uuid.uuid4()), "stand-in job")
        self.server = StandinServer(self._handle, port)
        self.spec = spec or spec_from_environment()
        # Answers the specification does not allow: bugs of the stand-in.
        self.violations: list[str] = []

    @property
    def url(self) -> str:
        """The Manager URL for ``FLAMENCO_MANAGER_URL``."""
        return self.server.url + "/"

    def start(self) -> FakeManager:
        """Serve in the background."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving; ``SpecViolation`` if it answered outside the specification."""
        self.server.stop()
        with self.lock:
            if self.violations:
                raise SpecViolation("\n".join(self.violations))

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
                response = self._answer(request, path)
            except EchoError as exc:
                return exc.response  # before any handler: no operation's answer
            except _Injected as exc:
                return _error(exc.code, exc.message)  # not the real Manager's: unchecked
            except FarmError as exc:
                response = _error(exc.code, exc.message)
            if self.spec is not None:
                violation = self.spec.violation(request, response)
                if violation is not None:
                    self.violations.append(violation)
                    print(
                        f"stand-in Manager: answer outside the spec: {violation}", file=sys.stderr
                    )
                    return _error(500, f"stand-in Manager answered outside the spec: {violation}")
            return response

    def _answer(self, request: Request, path: str) -> Response:
        """The real Manager's order: its OpenAPI middleware authenticates workers (403)
        and validates the request (400), both with echo's ``{"message"}``; then the
        handler (``openapi_auth.go``, ``SwaggerValidator``)."""
        worker: Optional[Worker] = None
        if path.startswith(f"{API}/worker/") and path != f"{API}/worker/register-worker":
            try:
                worker = self._authenticated(request)
            except FarmError as exc:
                raise EchoError(exc.code, exc.message) from exc
        if self.spec is not None:
            refusal = self.spec.refusal(request)
            if refusal is not None:
                print(
                    f"stand-in Manager refused {request.method} {path}: {refusal}", file=sys.stderr
                )
                raise EchoError(400, refusal)
        return self._route(request.method, path, request, worker)

    def _failing_for(self, operation: str) -> None:
        status = self._failing.get(operation)
        if status is not None:
            raise _Injected(status, f"stand-in failure of {operation}")

    def _route(
        self, method: str, path: str, request: Request, worker: Optional[Worker]
    ) -> Response:
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
        if worker is not None:
            return self._worker_api(method, path, body, worker)
        if path.startswith(f"{API}/worker-mgt/"):
            self._failing_for("worker-mgt")
            return self._management(method, path, body)
        if path == f"{API}/jobs" and method == "GET":
            self._failing_for("jobs")
            return Response(200, {"jobs": [self._job(j) for j in self.farm.jobs.values()]})
        match = _JOB_PATH.fullmatch(path)
        if match and method == "GET":
            self._failing_for("jobs")
            if match.group(2) == "/blocklist":
                return Response(200, self.farm.job_blocklist(match.group(1), self.farm.workers))
            if match.group(2):
                tasks = self.farm.job_tasks(match.group(1), self.farm.workers)
                return Response(200, {"tasks": tasks})
            return Response(200, self._job(self.farm.job(match.group(1))))
        _not_found(method, path)

    def _job(self, job: Job) -> dict[str, Any]:
        """``Job``, its steps summed over its tasks (``UpdateJobStepsCompleted``)."""
        tasks = [t for t in self.farm.tasks.values() if t.job_id == job.id]
        return {
            **job.document(),
            "steps_completed": sum(t.steps_completed for t in tasks),
            "steps_total": sum(t.steps_total for t in tasks),
        }

    def _authenticated(self, request: Request) -> Worker:
        auth = request.headers.get("Authorization", "")
        try:
            decoded = base64.b64decode(auth[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if not auth.startswith("Basic ") or ":" not in decoded:
            raise FarmError(
                403, "security requirements failed: authorization failed: no auth header found"
            )
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
            steps = body.get("steps_completed") if isinstance(body, dict) else None
            if isinstance(steps, int) and not isinstance(steps, bool):
                farm.tasks[match.group(1)].complete_steps(steps)
            return Response(204)
        _not_found(method, path)

    def _schedule(self, worker: Worker) -> Response:
        self._failing_for("task")
        try:
            task = self.farm.schedule(worker)
        except StatusChangeRequested as exc:
            return Response(423, {"status_requested": exc.status})
        if task is None:
            return Response(204)
        job = self.farm.jobs[task.job_id]
        # ``AssignedTask`` (``workers.go``, ``ScheduleTask``), steps required since 3.8.
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
                "steps_completed": task.steps_completed,
                "steps_total": task.steps_total,
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
            _not_found(method, path)
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
        raise EchoError(405, "Method Not Allowed")  # echo's router


def _not_found(method: str, path: str) -> NoReturn:
    """Echo's router's 404 (the stand-in lacks some of the real Manager's paths: the
    message says so, for whoever reads it)."""
    raise EchoError(404, f"Not Found (the stand-in Manager has no {method} {path})")
