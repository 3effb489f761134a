"""What the stand-in Flamenco Manager knows: workers, tags, jobs and tasks, and the
rules the real Manager 3.x applies to them (``internal/manager/api_impl``: workers.go,
worker_mgt.go, worker_task_updates.go). Plain data and plain methods, no HTTP:
``standins.manager`` serves this over the real API. A refused operation raises
``FarmError`` with the HTTP status and message the real Manager answers.

Modelled: registration (a new worker every time, status ``""`` until it signs on),
secrets kept only as salted hashes, sign-on (``starting``, then the requested status,
else ``awake``), status requests that stay pending until acknowledged or, for
``offline``/``restart``, cleared at sign-off (sign-off remembers ``awake``/``asleep``
for the next sign-on), lazy requests, soft delete, tags, and a task queue: queued ->
active (assigned) -> completed/failed, active tasks requeued when their worker signs
off, stops being awake or is deleted. Not modelled: sleep schedules, timeouts,
blocklists, soft failures, job compilation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

WORKER_STATUSES = ("starting", "awake", "asleep", "error", "testing", "offline", "restart")
TASK_STATUSES = ("active", "canceled", "completed", "failed", "queued", "soft-failed", "paused")
# Statuses a worker signing off is sent back to at its next sign-on.
_REMEMBERED = ("awake", "asleep")
# Status requests that sign-off counts as acknowledged.
_CLEARED_AT_SIGN_OFF = ("offline", "restart")


class FarmError(Exception):
    """The Manager refuses: ``code`` is the HTTP status, ``message`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StatusChangeRequested(Exception):
    """A worker asking for a task must first go to ``status`` (HTTP 423)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def valid_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID, as the Manager checks ids in paths."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


@dataclass
class Worker:
    """One registered worker. Only a salted hash of its secret is kept."""

    id: str
    name: str
    platform: str
    supported_task_types: list[str]
    salt: bytes = field(repr=False)
    secret_hash: bytes = field(repr=False)
    status: str = ""  # a registered worker has no status until it signs on
    software: str = ""
    can_restart: bool = False
    status_requested: str = ""
    lazy: bool = False
    last_seen: Optional[float] = None
    deleted: bool = False
    tag_ids: list[str] = field(default_factory=list)

    def secret_matches(self, secret: str) -> bool:
        """Constant-time check of a secret against the stored hash."""
        return hmac.compare_digest(self.secret_hash, _hash(self.salt, secret))

    def request(self, status: str, lazy: bool) -> None:
        """Store a status change request (``""`` clears it)."""
        self.status_requested, self.lazy = status, lazy and bool(status)

    def summary(self) -> dict[str, Any]:
        """``WorkerSummary``: never the secret."""
        document: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "version": self.software,
            "can_restart": self.can_restart,
        }
        if self.last_seen is not None:
            document["last_seen"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_seen))
        if self.status_requested:
            document["status_change"] = {"status": self.status_requested, "is_lazy": self.lazy}
        return document


@dataclass
class Tag:
    """A worker tag: jobs with a tag go only to workers with that tag."""

    id: str
    name: str
    description: str = ""

    def document(self) -> dict[str, str]:
        """``WorkerTag``."""
        document = {"id": self.id, "name": self.name}
        if self.description:
            document["description"] = self.description
        return document


@dataclass
class Job:
    """A job: its tasks are handed out in priority order."""

    id: str
    name: str
    type: str = "simple-blender-render"
    priority: int = 50
    tag_id: Optional[str] = None  # None: any worker may run it


@dataclass
class Task:
    """One task of a job, as the Manager tracks it."""

    id: str
    job_id: str
    name: str
    type: str
    commands: list[dict[str, Any]]
    priority: int = 50
    status: str = "queued"
    worker_id: Optional[str] = None
    activity: str = ""
    log: str = ""


class Farm:
    """The Manager's database, with its rules. Not thread-safe: the caller locks."""

    def __init__(self) -> None:
        self.workers: dict[str, Worker] = {}
        self.tags: dict[str, Tag] = {}
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}  # in creation order

    # -- the worker API -------------------------------------------------------

    def register(self, body: Any) -> Worker:
        """``register-worker``: always a new worker (400 for an invalid body)."""
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("name", "platform", "secret")
        ):
            raise FarmError(400, "invalid format")
        types = body.get("supported_task_types")
        if not isinstance(types, list):
            raise FarmError(400, "invalid format")
        salt = os.urandom(16)
        worker = Worker(
            id=str(uuid.uuid4()),
            name=body["name"],
            platform=body["platform"],
            supported_task_types=[str(t) for t in types],
            salt=salt,
            secret_hash=_hash(salt, body["secret"]),
        )
        self.workers[worker.id] = worker
        return worker

    def authenticate(self, worker_id: str, secret: str) -> Worker:
        """The worker behind HTTP Basic credentials; 403 for unknown, deleted or a
        wrong secret (all alike, as the real Manager's bcrypt check)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.deleted or not worker.secret_matches(secret):
            raise FarmError(403, "security requirements failed: no such worker known")
        worker.last_seen = time.time()
        return worker

    def sign_on(self, worker: Worker, body: Any) -> str:
        """``sign-on``: the worker is ``starting``; returns the status it must go to."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise FarmError(400, "invalid format")
        worker.status = "starting"
        worker.name = body["name"]
        worker.software = str(body.get("software_version", ""))
        worker.can_restart = bool(body.get("can_restart"))
        worker.supported_task_types = [
            str(t).strip().lower() for t in body.get("supported_task_types") or []
        ]
        return worker.status_requested or "awake"

    def sign_off(self, worker: Worker) -> None:
        """``sign-off``: offline; its task is requeued."""
        previous = worker.status
        worker.status = "offline"
        if worker.status_requested in _CLEARED_AT_SIGN_OFF:
            worker.request("", False)
        if not worker.status_requested and previous in _REMEMBERED:
            worker.request(previous, False)
        self._requeue(worker)

    def state_changed(self, worker: Worker, body: Any) -> None:
        """``state-changed``: acknowledges a matching request."""
        status = body.get("status") if isinstance(body, dict) else None
        if status not in WORKER_STATUSES:
            raise FarmError(400, "invalid format")
        previous = worker.status
        worker.status = status
        if not worker.status_requested or worker.status_requested == status:
            worker.request("", False)
        if previous == "awake" and status != "awake":
            self._requeue(worker)

    def schedule(self, worker: Worker) -> Optional[Task]:
        """``task``: a task for this worker, or None. A pending status request (lazy
        or not) is 423, a worker that is not awake 409."""
        if worker.status_requested:
            raise StatusChangeRequested(worker.status_requested)
        if worker.status != "awake":
            raise FarmError(
                409,
                f'worker is in state "{worker.status}", requires state "awake" to execute tasks',
            )
        for task in self.tasks.values():
            if task.worker_id == worker.id and task.status == "active":
                return task
        candidates = [
            t for t in self.tasks.values() if t.status == "queued" and self._fits(worker, t)
        ]
        if not candidates:
            return None
        task = max(candidates, key=lambda t: (self.jobs[t.job_id].priority, t.priority))
        task.status, task.worker_id = "active", worker.id
        return task

    def task_update(self, worker: Worker, task_id: str, body: Any) -> None:
        """``task/{id}``: status, activity and log from the worker running it."""
        task = self._assigned(worker, task_id)
        if not isinstance(body, dict):
            raise FarmError(400, "invalid format")
        status = body.get("taskStatus")
        if status == "soft-failed" or (status is not None and status not in TASK_STATUSES):
            raise FarmError(400, f"task status {status} not allowed to be sent by Worker")
        if isinstance(body.get("activity"), str):
            task.activity = body["activity"]
        if isinstance(body.get("log"), str):
            task.log += body["log"]
        if status is not None:
            task.status = status

    def may_i_run(self, worker: Worker, task_id: str) -> dict[str, Any]:
        """``may-i-run``: a lazy status request lets the task finish."""
        if not valid_uuid(task_id):
            raise FarmError(400, "task ID not valid")
        answer: dict[str, Any] = {
            "mayKeepRunning": False,
            "reason": "",
            "statusChangeRequested": False,
        }
        task = self.tasks.get(task_id)
        if worker.status_requested and not worker.lazy:
            answer.update(reason="worker status change requested", statusChangeRequested=True)
        elif task is None:
            answer["reason"] = "Task not found"
        elif task.worker_id != worker.id:
            answer["reason"] = "task not assigned to this worker"
        elif task.status != "active":
            answer["reason"] = f'task is in non-runnable status "{task.status}"'
        else:
            answer["mayKeepRunning"] = True
        return answer

    # -- worker management (the web interface's API) --------------------------

    def live(self, worker_id: str) -> Worker:
        """A worker that is not deleted: 400 for a non-UUID id, 404 for no such one."""
        if not valid_uuid(worker_id):
            raise FarmError(400, "not a valid UUID")
        worker = self.workers.get(worker_id)
        if worker is None or worker.deleted:
            raise FarmError(404, f'worker "{worker_id}" not found')
        return worker

    def listing(self) -> list[dict[str, Any]]:
        """``WorkerList``: summaries of the workers not deleted."""
        return [w.summary() for w in self.workers.values() if not w.deleted]

    def details(self, worker_id: str) -> dict[str, Any]:
        """``Worker``: the summary plus platform, task types and tags."""
        worker = self.live(worker_id)
        document = worker.summary()
        document.update(
            ip_address="127.0.0.1",
            platform=worker.platform,
            supported_task_types=list(worker.supported_task_types),
        )
        if worker.tag_ids:
            document["tags"] = [self.tags[t].document() for t in worker.tag_ids]
        return document

    def delete(self, worker_id: str) -> None:
        """Soft delete: the entry disappears, its credentials stop working (403), its
        tasks are requeued."""
        worker = self.live(worker_id)
        self._requeue(worker)
        worker.deleted = True

    def request_status(self, worker_id: str, body: Any) -> None:
        """``setstatus``: 412 for ``restart`` to a worker that cannot restart; the
        worker's own status clears any pending request."""
        worker = self.live(worker_id)
        if (
            not isinstance(body, dict)
            or body.get("status") not in WORKER_STATUSES
            or not isinstance(body.get("is_lazy"), bool)
        ):
            raise FarmError(400, "invalid format")
        if body["status"] == "restart" and not worker.can_restart:
            raise FarmError(412, f'worker "{worker_id}" does not know how to restart')
        if body["status"] == worker.status:
            worker.request("", False)
        else:
            worker.request(body["status"], body["is_lazy"])

    def set_tags(self, worker_id: str, body: Any) -> None:
        """``settags``: the worker's tags become exactly these (an unknown tag id is
        refused with 404 here; what the real Manager does with one is unverified)."""
        worker = self.live(worker_id)
        ids = body.get("tag_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise FarmError(400, "invalid format")
        for tag_id in ids:
            if tag_id not in self.tags:
                raise FarmError(404, f'worker tag "{tag_id}" not found')
        worker.tag_ids = list(dict.fromkeys(ids))

    # -- helpers ----------------------------------------------------------------

    def add_task(self, job: Job, name: str, task_type: str, commands: list[dict[str, Any]]) -> Task:
        """Queue a task of ``job`` (the job is stored if it is new)."""
        self.jobs.setdefault(job.id, job)
        task = Task(str(uuid.uuid4()), job.id, name, task_type, commands)
        self.tasks[task.id] = task
        return task

    def _fits(self, worker: Worker, task: Task) -> bool:
        """Untagged jobs go to any worker; tagged jobs only to workers with the tag."""
        tag = self.jobs[task.job_id].tag_id
        return task.type in worker.supported_task_types and (tag is None or tag in worker.tag_ids)

    def _assigned(self, worker: Worker, task_id: str) -> Task:
        if not valid_uuid(task_id):
            raise FarmError(400, "task ID not valid")
        task = self.tasks.get(task_id)
        if task is None:
            raise FarmError(404, f"task {task_id} not found")
        if task.worker_id != worker.id:
            raise FarmError(409, f"task {task_id} is not assigned to you")
        return task

    def _requeue(self, worker: Worker) -> None:
        for task in self.tasks.values():
            if task.worker_id == worker.id and task.status == "active":
                task.status, task.worker_id = "queued", None
